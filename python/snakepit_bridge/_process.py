"""Process plumbing of a worker: the command line and environment, the
handshake pipe and stdout, the exit paths, host-death watchers and signals.

Everything here is about the process, not about serving calls; the
contract it implements is described in server.py's docstring.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import stat
import sys
import threading
import time
import types
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence, Tuple, cast

if TYPE_CHECKING:
    import argparse

from . import _procs
from ._logging import log

HANDSHAKE_PREFIX = "SNAKEPIT_READY 1 tcp"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_ADAPTER = 3

DEFAULT_STOP_GRACE_S = 1.5
PPID_POLL_INTERVAL_S = 0.25


class _StartupFailed(Exception):
    """The server could not start (e.g. the port cannot be bound): exit 1."""


class _Process:
    """Process-wide state of the worker: the handshake fd and the exit paths."""

    def __init__(self, worker_id: str) -> None:
        self.worker_id = worker_id
        self.handshake_fd: Optional[int] = None
        self._exiting = threading.Lock()

    def redirect_stdout(self) -> None:
        # Keep a private copy of the handshake pipe (os.dup makes it
        # non-inheritable), then point fd 1 at stderr for everything else,
        # children included. The copy is never closed: the host may treat
        # EOF on stdout as the process ending.
        sys.stdout.flush()
        self.handshake_fd = os.dup(1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr

    # Set by server.main when the adapter runs fewer calls at once than the
    # host asked for (snakepit_thread_safe = False): the handshake tells the
    # host, which then sends no more.
    capacity: int = 0
    # Set by the sync server: the tool calls beyond its capacity it holds
    # in order for its next free thread (_threads.ServerThreads), which the
    # host may then send while its callers queue (worker.Info.Prefetch).
    prefetch: int = 0

    def handshake(self, host: str, port: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        extra = f" capacity={self.capacity}" if self.capacity > 0 else ""
        if self.prefetch > 0:
            extra += f" prefetch={self.prefetch}"
        line = f"{HANDSHAKE_PREFIX} {shown}:{port}{extra}\n".encode()
        fd = self.handshake_fd if self.handshake_fd is not None else 1
        while line:
            n = os.write(fd, line)
            line = line[n:]

    def claim_exit(self) -> None:
        """Become the one exit path, or wait for the other one to end the
        process. die_now (a watcher thread) and the main thread's orderly
        exit must never overlap: the main thread returning would end the
        process while die_now is between its SIGSTOP and SIGKILL rounds,
        leaving descendants stopped forever."""
        self._exiting.acquire()

    def die_now(self, reason: str, code: int = EXIT_OK) -> None:
        """Exit immediately from any thread, killing descendants first."""
        if not self._exiting.acquire(blocking=False):
            return  # another path is already exiting
        try:
            os.write(2, f"snakepit[{self.worker_id}]: {reason}; exiting now\n".encode())
        except OSError:
            pass
        try:
            _procs.kill_descendants()
        finally:
            os._exit(code)

    def _stdin_watchable(self) -> bool:
        try:
            st = os.fstat(0)
        except OSError:
            log.warning("no stdin: host death is detected by parent pid only")
            return False
        try:
            null = os.stat(os.devnull)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev:
                log.warning("stdin is %s: host death is detected by parent pid only", os.devnull)
                return False
        except OSError:
            pass
        return True

    def _stdin_ended(self, fd: int) -> bool:
        """Read (and drop) what stdin (fd, our copy of it) holds; True once
        it ended (die_now called)."""
        try:
            data = os.read(fd, 65536)
        except (InterruptedError, BlockingIOError):
            return False
        except OSError as e:
            self.die_now(f"stdin failed ({e}): host gone")
            return True
        if not data:
            self.die_now("stdin reached EOF: host gone")
            return True
        return False

    def watch_host(self, start_ppid: int, every: Optional[Tuple[float, Callable[[], None]]] = None) -> None:
        """Exit when the host is gone: stdin reaches EOF, or the parent pid
        is no longer ``start_ppid`` (the parent process ended: a worker
        reparented to another thread of the same process keeps its ppid).
        ``every`` = (seconds, fn) runs fn at once and then that long after
        each run ended (the orphan reaper's scan), from this same thread: a
        thread costs every worker's start ~0.5-1 ms of CPU, and a watcher
        that sleeps in poll() costs nothing while the host lives.

        The parent is watched through a pidfd where the kernel has one
        (readable once it exited; the kernel reparents us first), else its
        pid is polled every PPID_POLL_INTERVAL_S."""
        poller = select.poll()
        stdin = _own_stdin() if self._stdin_watchable() else None
        if stdin is not None:
            poller.register(stdin, select.POLLIN)
        pidfd = _parent_pidfd(start_ppid)
        if pidfd is not None:
            poller.register(pidfd, select.POLLIN)
        try:
            self._watch(poller, start_ppid, every, stdin, pidfd)
        except Exception:
            # Never a silent end of host-death detection (e.g. a tool closed
            # the pidfd under us): fall back to the plainest watch there is.
            log.exception("host watcher failed; watching the parent pid only from now on")
            self._watch_ppid(start_ppid)
        finally:  # die_now normally ends the process first (tests return)
            if stdin is not None:
                try:
                    os.close(stdin)
                except OSError:
                    pass

    def _watch_ppid(self, start_ppid: int) -> None:
        while os.getppid() == start_ppid:
            time.sleep(PPID_POLL_INTERVAL_S)
        self.die_now(f"parent pid changed from {start_ppid}: host gone")

    def _watch(
        self,
        poller: "select.poll",
        start_ppid: int,
        every: Optional[Tuple[float, Callable[[], None]]],
        stdin: Optional[int],
        pidfd: Optional[int],
    ) -> None:
        due = time.monotonic()
        while True:
            if every is not None and time.monotonic() >= due:
                every[1]()
                due = time.monotonic() + every[0]
            waits = [due - time.monotonic()] if every is not None else []
            if pidfd is None:
                waits.append(PPID_POLL_INTERVAL_S)
            timeout = max(min(waits), 0.0) * 1000 if waits else None
            for fd, _ in poller.poll(timeout):
                if fd == pidfd:
                    # Stays readable: the ppid decides from here on.
                    poller.unregister(fd)
                    os.close(fd)
                    pidfd = None
                elif fd == stdin and self._stdin_ended(stdin):
                    return
            if pidfd is None:
                ppid = os.getppid()
                if ppid != start_ppid:
                    self.die_now(f"parent pid changed from {start_ppid} to {ppid}: host gone")
                    return

    def start_host_watchers(self, every: Optional[Tuple[float, Callable[[], None]]] = None) -> None:
        """Start the watcher thread (see watch_host)."""
        threading.Thread(
            target=self.watch_host, args=(os.getppid(), every), name="snakepit-watch", daemon=True
        ).start()


def _own_stdin() -> Optional[int]:
    """A descriptor of our own for the host's stdin pipe, or None. fd 0
    itself is re-read at every poll(), and a tool may close it or point it
    elsewhere (dup2 of /dev/null, always at EOF: a false "host gone";
    a file or socket of the tool's, whose data the watcher would eat)."""
    try:
        return os.dup(0)  # not inherited across exec (PEP 446)
    except OSError:
        return None


def _parent_pidfd(start_ppid: int) -> Optional[int]:
    """A pidfd (Linux 5.3+) of our parent, readable once it exits; None
    where there is none (then the parent pid is polled, every
    PPID_POLL_INTERVAL_S)."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None or start_ppid <= 0:  # 0: a parent outside our pid namespace
        return None
    try:
        fd: int = pidfd_open(start_ppid)
    except OSError:  # an old kernel, or seccomp refused it
        return None
    if os.getppid() != start_ppid:
        # The parent died before the pidfd was made, and its pid may name
        # another process by now: the poll loop sees the change at once.
        os.close(fd)
        return None
    return fd


# The command line's options and their defaults (an int default: an int
# option). _parse_args reads the host's own well-formed command line without
# argparse (and gettext), which cost every worker's start; anything else
# (--help, an unknown or abbreviated option, a bad value) goes to argparse,
# so its messages and exit code 2 are unchanged.
_OPTIONS: Dict[str, Any] = {
    "adapter": None,
    "port": 0,
    "host": "127.0.0.1",
    "bridge_address": "",
    "worker_id": "",
    "snakepit_run_id": "",
    "max_workers": 0,
}


def _quick_args(argv: Sequence[str]) -> Optional[Dict[str, Any]]:
    """argv as argparse would read it, or None when only argparse may say."""
    values: Dict[str, Any] = dict(_OPTIONS)
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            return None
        name, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
                return None
            i += 1
            value = argv[i]
        key = name.replace("-", "_")
        if key not in _OPTIONS or name != key.replace("_", "-"):
            return None
        if isinstance(_OPTIONS[key], int):
            try:
                values[key] = int(value)
            except ValueError:
                return None
        else:
            values[key] = value
        i += 1
    if values["adapter"] is None:
        return None
    return values


def _parse_args(argv: Optional[Sequence[str]]) -> "argparse.Namespace":
    quick = _quick_args(sys.argv[1:] if argv is None else argv)
    if quick is not None:
        # Only attribute access is ever used on it.
        args = cast("argparse.Namespace", types.SimpleNamespace(**quick))
        error = _check_args(args)
        if not error:
            return args
    return _argparse_args(argv)


def _check_args(args: "argparse.Namespace") -> str:
    if args.host == "localhost":
        # The handshake must carry an address, not a name the host would
        # have to resolve (and might resolve to a different interface).
        args.host = "127.0.0.1"
    if args.host != "::1" and not args.host.startswith("127."):
        return f"--host must be a loopback address, got {args.host!r}"
    if not 0 <= args.port <= 65535:
        return f"--port out of range: {args.port}"
    return ""


def _argparse_args(argv: Optional[Sequence[str]]) -> "argparse.Namespace":
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m snakepit_bridge.server",
        description="A snakepit Python worker: serves one adapter's tools over gRPC.",
    )
    p.add_argument("--adapter", required=True, help="the adapter class, as module.Class")
    p.add_argument("--port", type=int, default=0, help="port to listen on (0: pick a free one)")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to bind (default 127.0.0.1)")
    p.add_argument("--bridge-address", default="", help="HOST:PORT of the host's bridge server")
    p.add_argument("--worker-id", default="", help="this worker's id")
    p.add_argument("--snakepit-run-id", default="", help="the host application's run id")
    p.add_argument(
        "--max-workers",
        type=int,
        default=0,
        help="threads for sync tools (default: $SNAKEPIT_WORKER_THREADS or 8)",
    )
    args = p.parse_args(argv)
    error = _check_args(args)
    if error:
        p.error(error)
    return args


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        v = float(raw)
    except ValueError:
        log.warning("ignoring %s=%r: not a number", name, raw)
        return default
    return max(v, 0.0)


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return max(int(raw), 1)
    except ValueError:
        log.warning("ignoring %s=%r: not an integer", name, raw)
        return default


def _fail(message: str, code: int) -> int:
    try:
        sys.stderr.write(message.rstrip("\n") + "\n")
        sys.stderr.flush()
    except OSError:
        pass
    return code


def _on_sighup(signum: int, frame: Any) -> None:
    log.debug("ignoring SIGHUP (orphaned process group)")


def _ignore_further_stop_signals(loop: asyncio.AbstractEventLoop) -> None:
    """Make later SIGTERM/SIGINT harmless once a stop is under way.

    A killed host delivers its parent-death SIGTERM once per exiting thread,
    so several arrive within milliseconds. asyncio restores the default
    action (terminate) when its loop closes; a second SIGTERM after that
    would kill the worker before it has killed its descendants. The host's
    SIGKILL after its grace period remains the backstop.
    """
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
        # Drop asyncio's record without calling remove_signal_handler, which
        # would first put the default action back (a window for the kill).
        handlers = getattr(loop, "_signal_handlers", None)
        if isinstance(handlers, dict):
            handlers.pop(sig, None)
        else:
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_IGN)


class _StopSignals:
    """SIGTERM/SIGINT as a stop request on ``loop`` (both server flavours).

    ``await wait()`` returns at the first one and makes later ones harmless
    (see _ignore_further_stop_signals); ``received`` names the signal.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()
        self.received = "stop"
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request, sig)

    def _request(self, sig: signal.Signals) -> None:
        if not self._event.is_set():
            self.received = sig.name
            self._event.set()

    async def wait(self) -> None:
        await self._event.wait()
        _ignore_further_stop_signals(self._loop)
