"""The worker continues the host's trace when opentelemetry-api is
importable and does nothing otherwise (snakepit_bridge._otel)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PKG_ROOT = str(Path(__file__).resolve().parents[1])
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

# A stand-in for the few opentelemetry-api names _otel uses, recording what
# it is asked to do; the real package is tested below when installed.
FAKE_OTEL = {
    "opentelemetry/__init__.py": "",
    "opentelemetry/context/__init__.py": textwrap.dedent(
        """
        import contextvars
        class Context(dict):
            pass
        _cur = contextvars.ContextVar("fake_otel", default=Context())
        def attach(ctx):
            return _cur.set(ctx)
        def get_current():
            return _cur.get()
        """
    ),
    "opentelemetry/trace/__init__.py": "",
    "opentelemetry/trace/propagation/__init__.py": "",
    "opentelemetry/trace/propagation/tracecontext.py": textwrap.dedent(
        """
        class TraceContextTextMapPropagator:
            def extract(self, carrier, context=None):
                out = type(context)(context)
                if "traceparent" in carrier:
                    out["traceparent"] = carrier["traceparent"]
                return out
        """
    ),
}

PROBE = textwrap.dedent(
    f"""
    import threading
    from snakepit_bridge import _otel
    from snakepit_bridge.context import SessionContext, _enter
    print("available", _otel.available())
    if _otel.available():
        from opentelemetry import context
        _enter(SessionContext(metadata={{"traceparent": "{TRACEPARENT}"}}))
        print("traced", dict(context.get_current()).get("traceparent", ""))
        # The next, untraced call on the same thread must not inherit it.
        _enter(SessionContext(metadata={{}}))
        print("untraced", dict(context.get_current()).get("traceparent", ""))
    else:
        _enter(SessionContext(metadata={{"traceparent": "{TRACEPARENT}"}}))
        print("no-op ok")
    """
)


def _probe(extra_path: str = "") -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PKG_ROOT, extra_path) if p)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_without_opentelemetry_nothing_happens() -> None:
    try:
        import opentelemetry  # noqa: F401

        pytest.skip("opentelemetry is installed here")
    except ImportError:
        pass
    out = _probe()
    assert "available False" in out and "no-op ok" in out


def test_with_opentelemetry_the_call_continues_the_hosts_trace(tmp_path: Path) -> None:
    for rel, text in FAKE_OTEL.items():
        f = tmp_path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    out = _probe(str(tmp_path))
    assert "available True" in out
    assert f"traced {TRACEPARENT}" in out
    assert "untraced \n" in out or out.rstrip().endswith("untraced")


def test_real_opentelemetry_span_is_a_child_of_the_host_span() -> None:
    trace = pytest.importorskip("opentelemetry.trace")
    from snakepit_bridge import _otel
    from snakepit_bridge.context import SessionContext, _enter

    assert _otel.available()
    _enter(SessionContext(metadata={"traceparent": TRACEPARENT}))
    parent = trace.get_current_span().get_span_context()
    assert format(parent.trace_id, "032x") == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert format(parent.span_id, "016x") == "00f067aa0ba902b7"
