"""The worker process: ``python -m snakepit_bridge.server``.

Contract with the host (its Go side: the grpcworker package doc):

    python -m snakepit_bridge.server --adapter module.Class --port 0 \\
        --bridge-address HOST:PORT --worker-id ID --snakepit-run-id RUNID \\
        [--host 127.0.0.1] [--max-workers N]

* Serves ``snakepit.v1.WorkerService`` on loopback only, in one of two
  flavours (``server_flavour``; both keep this whole contract):

  - "sync", the default: grpcio's sync server. Every RPC runs in a thread
    of the server's pool (one is started whenever none is idle, so Ping is
    answered even when every tool slot is taken); a sync tool runs right on
    its RPC's thread, an async tool on the event loop of the main thread
    while its RPC's thread waits for it.
  - "aio", for adapters whose tools are all async (``_aio.py``): grpc.aio,
    async tools run in their RPC's own task on the main thread's loop, sync
    tools hop into a thread pool.
* Startup order: watch for host death, import the adapter, create its ONE
  instance, run ``setup()``, start the server, then print exactly one line
  on stdout and flush it::

      SNAKEPIT_READY 1 tcp 127.0.0.1:<port>

  Nothing else is ever written to the original stdout: file descriptor 1 is
  pointed at stderr before any user code runs, so stray prints (also from
  child processes and C extensions) land in the host's log instead of
  corrupting the handshake pipe.
* Auth: when ``SNAKEPIT_TOKEN`` is set, every RPC must carry it in the
  ``x-snakepit-token`` metadata entry, or fails with UNAUTHENTICATED (one
  check, installed as a server interceptor in both flavours: _auth.py). The
  token is removed from ``os.environ`` after it is read, so processes the
  tools spawn do not inherit it.
* SIGTERM/SIGINT: stop accepting calls, give in-flight calls
  ``SNAKEPIT_STOP_GRACE_S`` seconds (default 1.5), cancel the rest, call the
  adapter's ``teardown()``, kill descendants, exit 0. Threads a tool left
  busy (a sync tool ignoring cancellation, ``asyncio.to_thread`` work in
  either flavour) are never waited for: teardown runs and the process exits
  regardless.
* Host death: stdin reaching EOF, or the parent pid changing, kills the
  descendants and exits 0 at once from a watcher thread, without waiting
  for the server (a tool may be blocking it).
* Exit codes: 0 clean stop or host gone; 1 other startup/runtime failure
  (e.g. the port cannot be bound); 2 bad command line; 3 the adapter cannot
  be imported, instantiated or set up.

Environment read:
  SNAKEPIT_TOKEN            the run's token (see Auth)
  SNAKEPIT_RUN_ID           fallback for --snakepit-run-id; set from the flag
                            when missing, so every descendant carries it
  SNAKEPIT_WORKER_ID        fallback for --worker-id
  SNAKEPIT_WORKER_THREADS   sync tool calls run at once (default 8; --max-workers,
                            which the host sets to the worker's capacity, wins);
                            a call whose caller gave up keeps its slot until
                            its tool returns and is reported in Ping (see
                            _threads.py). Async tools are not limited here
                            (the host's capacity is)
  SNAKEPIT_SERVER           "sync" or "aio": the server flavour (default: the
                            adapter class's ``snakepit_server`` attribute if
                            set, else "aio" when every tool is async, else "sync")
  SNAKEPIT_STOP_GRACE_S     grace for in-flight calls on SIGTERM (default 1.5);
                            the host sets it from its StopGrace, strictly
                            less so teardown fits before its SIGKILL
                            (grpcworker.PythonStopGrace)
  SNAKEPIT_MALLOC_TUNE=0    keep glibc malloc's dynamic thresholds (by default the
                            worker fixes them so results of a few MiB do not
                            page-fault on every call, keeping up to 32 MiB of
                            free heap per malloc arena; see _malloc.py). Also
                            left alone when the environment sets MALLOC_* or
                            GLIBC_TUNABLES
  SNAKEPIT_LOG_LEVEL        stderr log level (default INFO); a line logged
                            during a call shows its request_id= (and
                            trace_id=/span_id= when traced)
  SNAKEPIT_TEST_IGNORE_HOST_DEATH=1
                            TEST-ONLY: disables both host-death watchers so a
                            test can create a leftover worker on purpose.
                            Never set it in production.

A stdin that is /dev/null (a worker started by hand in the background) is
not watched, with a warning; the parent-pid watcher still runs.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
import traceback
from typing import Any, Dict, NoReturn, Optional, Sequence

from . import _procs, _reaper
from ._logging import log, setup_logging
from ._malloc import tune_malloc
from ._process import (
    DEFAULT_STOP_GRACE_S,
    EXIT_ADAPTER,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    HANDSHAKE_PREFIX,
    PPID_POLL_INTERVAL_S,
    _env_float,
    _env_int,
    _fail,
    _on_sighup,
    _parse_args,
    _Process,
    _StartupFailed,
)
from ._serving import _run_loop, _serve, create_server, server_flavour
from ._sync import WorkerServicer
from ._threads import DEFAULT_THREADS, CallSlots, ToolThreads
from ._compat import compat_tools, snakepit_style
from .adapter import BaseAdapter, collect_tools
from .context import HostClient

# Where each concern lives (this module is the worker's entry point and its
# startup order; the names above stay importable from here):
#   _process.py      command line, environment, handshake, exit paths,
#                    host-death watchers, signals
#   _logging.py      the "snakepit_bridge" logger namespace and stderr format
#   _serving.py      flavour choice; the grpcio sync server's setup and run
#   _auth.py         the token check, one interceptor per server flavour
#   _sync.py         WorkerService on grpcio's sync server
#   _loop_bridge.py  the sync server's bridge to the async tools' event loop
#   _aio.py          WorkerService on grpc.aio, and its serving
#   _servicer.py     what both servicers share

__all__ = [
    "WorkerServicer",
    "create_server",
    "server_flavour",
    "load_adapter_class",
    "AdapterLoadError",
    "main",
    "HANDSHAKE_PREFIX",
    "EXIT_OK",
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "EXIT_ADAPTER",
    "DEFAULT_THREADS",
    "DEFAULT_STOP_GRACE_S",
    "PPID_POLL_INTERVAL_S",
]


class AdapterLoadError(Exception):
    pass


def _no_tools(cls: type) -> str:
    """Why an adapter without tools cannot serve, and what to add: a worker
    that starts with nothing to call would only fail every call later."""
    if not issubclass(cls, BaseAdapter):
        return (
            f"{cls.__module__}.{cls.__qualname__} is not an adapter: it is no subclass of "
            "snakepit_bridge.BaseAdapter and has no @tool methods; point Config.Adapter at "
            "your adapter class, or decorate its tool methods with @snakepit_bridge.tool"
        )
    return (
        f"adapter {cls.__module__}.{cls.__qualname__} defines no tools: decorate the methods "
        "the host should call with @snakepit_bridge.tool"
    )


def foreign_bridge() -> str:
    """Why the Python path is unusable, or "": it holds another
    snakepit_bridge package that is not this one (Snakepit's own, from its
    priv/python). This package comes first on the path, so the other one
    would be silently shadowed — its adapters never loaded, or ours run in
    their place. Another copy of THIS package (e.g. pip-installed) is fine:
    it is only shadowed by an identical API."""
    here = os.path.dirname(os.path.realpath(__file__))
    for entry in sys.path:
        candidate = os.path.join(entry or os.getcwd(), "snakepit_bridge")
        if not os.path.isfile(os.path.join(candidate, "__init__.py")):
            continue
        real = os.path.realpath(candidate)
        if real == here or os.path.isfile(os.path.join(real, "_servicer.py")):
            continue
        return (
            f"the Python path holds another snakepit_bridge package, at {real} (Snakepit's own Python "
            "package, from its priv/python?). snakepit provides its own snakepit_bridge, including Snakepit's "
            "adapter API (base_adapter, session_context, base_adapter_threaded, ...), and puts it first on the "
            "path, so the other one would be silently shadowed. Remove that directory from Config.PythonPath / "
            "PYTHONPATH, copy your adapter modules into a package of your own (e.g. myapp/), and set "
            "Config.Adapter to that package's class (e.g. myapp.my_adapter.MyAdapter); see docs/MIGRATING.md"
        )
    return ""


def _missing_module_hint(spec: str, e: ModuleNotFoundError) -> str:
    if spec.startswith("snakepit_bridge.adapters.") or (e.name or "").startswith("snakepit_bridge.adapters"):
        return (
            "\n  hint: snakepit_bridge.adapters.* are the paths of the adapters Snakepit (the Elixir project) "
            "ships; snakepit does not ship them. Copy the adapter (e.g. Snakepit's "
            "priv/python/snakepit_bridge/adapters/showcase/ directory) into a package of your own, e.g. "
            "myapp/showcase/, and set Config.Adapter to myapp.showcase.ShowcaseAdapter (its imports of "
            "snakepit_bridge.* work unchanged). snakepit's own demo adapter is "
            "snakepit_bridge.examples.showcase.ShowcaseAdapter"
        )
    return f"\n  hint: is the module on PYTHONPATH? sys.path = {sys.path}"


def load_adapter_class(spec: str) -> type:
    """Import ``module.Class`` (or ``module:Class``) and return the class."""
    if ":" in spec:
        module_name, _, attr_path = spec.partition(":")
    else:
        module_name, _, attr_path = spec.rpartition(".")
    if not module_name or not attr_path:
        raise AdapterLoadError(f"expected 'module.Class', got {spec!r}")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, type):
        raise AdapterLoadError(f"{spec!r} is a {type(obj).__name__}, not a class")
    return obj


def main(argv: Optional[Sequence[str]] = None) -> NoReturn:
    """Run a worker until it is stopped; never returns.

    Every exit goes through ``os._exit`` once the command line is parsed:
    a thread left behind by a tool or by the adapter's import (non-daemon,
    or stuck in a sync tool that ignores cancellation) must not keep a
    stopped worker alive.
    """
    code = _run(argv)
    logging.shutdown()
    try:
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(code)


def _run(argv: Optional[Sequence[str]]) -> int:
    args = _parse_args(argv)
    tune_malloc()  # before the adapter allocates anything
    worker_id = args.worker_id or os.environ.get("SNAKEPIT_WORKER_ID", "") or f"pid{os.getpid()}"
    proc = _Process(worker_id)
    proc.redirect_stdout()
    setup_logging(worker_id)

    token = os.environ.pop("SNAKEPIT_TOKEN", "")
    run_id = args.snakepit_run_id or os.environ.get("SNAKEPIT_RUN_ID", "")
    if run_id and os.environ.get("SNAKEPIT_RUN_ID") != run_id:
        if os.environ.get("SNAKEPIT_RUN_ID"):
            log.warning("SNAKEPIT_RUN_ID in the environment differs from --snakepit-run-id; using the flag")
        # Descendants must carry the run id so the host can find them.
        os.environ["SNAKEPIT_RUN_ID"] = run_id

    # Until the server runs, a stop request exits at once: nothing is
    # in flight yet, and setup() may take long.
    def early_stop(signum: int, frame: Any) -> None:
        proc.die_now(f"received {signal.Signals(signum).name} during startup")

    signal.signal(signal.SIGTERM, early_stop)
    signal.signal(signal.SIGINT, early_stop)
    # When the host dies, this worker's process group becomes orphaned; if
    # kill_descendants() has frozen a group member (SIGSTOP) and another
    # member exits, the kernel sends SIGHUP + SIGCONT to the whole group —
    # this worker included — which would end it between its freeze and kill
    # rounds and leave the rest stopped forever. A Python-level handler (not
    # SIG_IGN, which children would inherit across exec) keeps it alive.
    signal.signal(signal.SIGHUP, _on_sighup)
    reaper = _reaper.become()  # orphaned descendants stay ours (see _reaper)

    if os.environ.get("SNAKEPIT_TEST_IGNORE_HOST_DEATH") == "1":
        log.warning("SNAKEPIT_TEST_IGNORE_HOST_DEATH=1: host-death detection is OFF (test-only setting)")
        if reaper is not None:
            threading.Thread(target=reaper.loop, name="snakepit-orphan-reaper", daemon=True).start()
    else:
        # One thread watches the host and runs the reaper's scans.
        proc.start_host_watchers(None if reaper is None else (_reaper.REAP_INTERVAL_S, reaper.scan_safely))

    # SystemExit too: an adapter module calling sys.exit() is a load failure.
    try:
        foreign = foreign_bridge()
        if foreign:
            raise AdapterLoadError(foreign)
        adapter_cls = load_adapter_class(args.adapter)
        adapter = adapter_cls()
        why = snakepit_style(adapter_cls)
        if why:
            # Snakepit's model: the instance above only proves the class
            # can be made and lists the tools; every call makes its own.
            tools = compat_tools(adapter_cls, adapter)
            log.info(
                "adapter %s is Snakepit-style (%s): a new instance per call (set_session_context, initialize, "
                "execute_tool, cleanup); %s",
                args.adapter,
                why,
                "calls run concurrently up to the capacity" if getattr(adapter_cls, "__thread_safe__", False) is True
                else "one call at a time (set __thread_safe__ = True to run more)",
            )
        else:
            tools = collect_tools(adapter)  # before setup(): a bad tool set fails fast
        if not tools:
            raise AdapterLoadError(_no_tools(adapter_cls))
        flavour = server_flavour(tools, getattr(adapter, "snakepit_server", "") or "")
    except (Exception, SystemExit) as e:
        msg = f"snakepit: cannot load adapter {args.adapter!r}: {type(e).__name__}: {e}"
        if isinstance(e, ModuleNotFoundError):
            msg += _missing_module_hint(args.adapter, e)
        _procs.kill_descendants()
        return _fail(msg, EXIT_ADAPTER)
    try:
        setattr(adapter, "worker_id", worker_id)
        setattr(adapter, "run_id", run_id)
    except AttributeError:  # __slots__ or properties: the context carries them anyway
        pass
    try:
        setup = getattr(adapter, "setup", None)
        if callable(setup):
            setup()
    except (Exception, SystemExit) as e:
        tb = "".join(traceback.format_exception(type(e), e, e.__traceback__, limit=-3))
        _procs.kill_descendants()
        return _fail(
            f"snakepit: adapter {args.adapter!r} failed in setup(): {type(e).__name__}: {e}\n{tb}", EXIT_ADAPTER
        )

    threads = args.max_workers if args.max_workers > 0 else _env_int("SNAKEPIT_WORKER_THREADS", DEFAULT_THREADS)
    serial = getattr(adapter, "snakepit_thread_safe", True) is False
    if why and getattr(adapter_cls, "__thread_safe__", False) is not True:
        serial = True  # Snakepit's rule: not declared thread-safe, one call at a time
    if serial:
        # The adapter's tools must run one at a time (shared state without
        # locks, a library that is not thread-safe): one call at a time here,
        # and the handshake tells the host so that it queues the rest.
        threads = proc.capacity = 1
    host_client = HostClient(args.bridge_address, token, worker_id)
    grace = _env_float("SNAKEPIT_STOP_GRACE_S", DEFAULT_STOP_GRACE_S)
    executor: Optional[ToolThreads] = None
    common: Dict[str, Any] = dict(
        adapter_name=args.adapter, worker_id=worker_id, run_id=run_id, host=host_client, tools=tools
    )

    code = EXIT_OK
    try:
        if flavour == "aio":
            # Imported here: a sync worker (the default) never loads grpc.aio's servicer.
            from ._aio import AioWorkerServicer, serve_aio

            executor = ToolThreads(threads)
            aio_servicer = AioWorkerServicer(adapter, executor=executor, **common)
            # Not asyncio.run: it ends by waiting for the default
            # executor's threads (asyncio.to_thread, run_in_executor), which
            # a tool may keep busy for any time; teardown() would never run
            # and the host would have to SIGKILL. _run_loop does not wait.
            _run_loop(serve_aio(proc, aio_servicer, args, token, grace))
        else:
            servicer = WorkerServicer(adapter, slots=CallSlots(threads), **common)
            _serve(proc, servicer, args, token, grace)
    except _StartupFailed as e:
        code = _fail(f"snakepit: worker {worker_id} failed to start: {e}", EXIT_FAILURE)
    except BaseException:
        log.exception("worker crashed")
        code = EXIT_FAILURE
    else:
        try:
            teardown = getattr(adapter, "teardown", None)
            if callable(teardown):
                teardown()
        except Exception:
            log.exception("adapter teardown failed")
    # Nothing may wait from here on: a sync tool that ignores cancellation
    # would hold its pool thread forever.
    if executor is not None:
        executor.shutdown(wait=False, cancel_futures=True)
    host_client.close()
    proc.claim_exit()
    killed = _procs.kill_descendants()
    if killed:
        log.info("killed %d leftover descendant(s): %s", len(killed), killed)
    log.info("worker stopped (exit %d)", code)
    return code


if __name__ == "__main__":
    main()
