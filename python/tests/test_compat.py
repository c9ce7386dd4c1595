"""Snakepit-style adapters (snakepit_bridge._compat) on both server flavours,
in process. The adapters are the ones the Go integration tests run
(test/integration/testdata/py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from snakepit_bridge._compat import compat_tools, snakepit_style
from snakepit_bridge.adapter import ANY_TOOL, collect_tools
from snakepit_bridge.pb import snakepit_pb2 as pb

HERE = os.path.dirname(os.path.abspath(__file__))
TESTDATA = os.path.join(HERE, "..", "..", "test", "integration", "testdata", "py")
sys.path.insert(0, TESTDATA)

import snakepit_style as sp  # noqa: E402
import snakepit_threaded as spt  # noqa: E402
from sample_adapter import SampleAdapter  # noqa: E402


def serve(make_server, cls, **kw):
    return make_server(cls(), tools=compat_tools(cls, cls()), **kw)


def value(resp):
    assert not resp.HasField("error"), resp.error
    which = resp.result.WhichOneof("value")
    return json.loads(resp.result.json) if which == "json" else bytes(resp.result.binary)


def items(chunks):
    assert chunks[-1].is_final and not chunks[-1].HasField("error"), chunks[-1]
    return [json.loads(c.data.json) for c in chunks[:-1]]


def test_detection():
    assert snakepit_style(sp.LifecycleAdapter)
    assert snakepit_style(sp.ReadmeAdapter)  # native BaseAdapter + initialize()
    assert snakepit_style(sp.AsyncTemplateAdapter)  # plain class with execute_tool
    assert snakepit_style(spt.ThreadedAdapter)
    assert snakepit_style(SampleAdapter) == ""


def test_tool_list():
    tools = compat_tools(sp.LifecycleAdapter, sp.LifecycleAdapter())
    assert {"add", "whoami", "countdown", ANY_TOOL} <= set(tools)
    assert tools["add"].spec.description == "Add two numbers"
    assert [p.name for p in tools["add"].spec.parameters] == ["a", "b"]
    assert tools["countdown"].spec.supports_streaming
    readme = compat_tools(sp.ReadmeAdapter, sp.ReadmeAdapter())
    assert set(readme) == {"predict", "batch_process"}  # no execute_tool: no catch-all


def test_per_request_lifecycle(make_server):
    s = serve(make_server, sp.LifecycleAdapter)
    sid = f"s1-{s.flavour}"
    first = value(s.execute("whoami", b"{}", session_id=sid, request_id="r-1"))
    second = value(s.execute("whoami", b"{}", session_id=sid, request_id="r-2"))
    assert first["initialized"] and first["session_id"] == sid and first["correlation_id"] == "r-1"
    assert second["instance"] != first["instance"]
    ev = value(s.execute("events", b"{}", session_id=sid))
    once = ["set_session_context", "initialize", "execute_tool:whoami", "cleanup"]
    assert ev[:8] == once * 2
    assert ev[8:] == ["set_session_context", "initialize", "execute_tool:events"]


def test_dispatch_and_errors(make_server):
    s = serve(make_server, sp.LifecycleAdapter)
    assert value(s.execute("add", b'{"a": 1, "b": 2.5}')) == 3.5
    assert value(s.execute("undeclared_echo", b'{"x": 1}')) == {"echo": {"x": 1}}
    sid = f"s-err-{s.flavour}"
    r = s.execute("boom", b"{}", session_id=sid)
    assert r.error.type == "ValueError" and "boom" in r.error.message
    ev = value(s.execute("events", b"{}", session_id=sid))
    assert ev[:4] == ["set_session_context", "initialize", "execute_tool:boom", "cleanup"]


def test_streams_either_way(make_server):
    s = serve(make_server, sp.LifecycleAdapter)
    assert items(s.stream("countdown", b'{"n": 3}')) == [{"n": 3}, {"n": 2}, {"n": 1}]
    sid = f"s-st-{s.flavour}"
    got = items(s.stream("stream_count", b'{"n": 2}', session_id=sid))
    assert got == [{"i": 0, "session": sid}, {"i": 1, "session": sid}]
    assert items(s.stream("add", b'{"a": 1, "b": 1}')) == [2]  # a value: one chunk
    r = s.execute("countdown", b'{"n": 1}')
    assert r.error.type == "StreamingToolCalledUnary"
    ev = value(s.execute("events", b"{}", session_id=sid))
    assert ev[:4] == ["set_session_context", "initialize", "execute_tool:stream_count", "cleanup"]


def test_graceful_results_and_binary(make_server):
    s = serve(make_server, sp.LifecycleAdapter)
    got = value(s.execute("weird", b"{}"))
    assert got["opaque"] == {"__ffi_unserializable__": True, "__type__": "snakepit_style.Opaque"}
    assert got["point"] == {"x": 1, "y": 2} and got["ok"] is True
    got = value(s.execute("binary_len", b"{}", binary_args={"data": b"\x07abc"}))
    assert got == {"len": 4, "type": "bytes", "first": 7}


def test_readme_adapter(make_server):
    s = serve(make_server, sp.ReadmeAdapter)
    assert value(s.execute("predict", b'{"input_data": {"text": "hi"}}')) == {"prediction": "HI", "confidence": 0.95}
    assert [i["result"] for i in items(s.stream("batch_process", b'{"items": ["a", "b"]}'))] == ["A", "B"]
    r = s.execute("predict", b'{"wrong": 1}')
    assert r.error.type == "InvalidArgs"


def test_async_template_shape(make_server):
    s = serve(make_server, sp.AsyncTemplateAdapter)
    before = sp.AsyncTemplateAdapter.cleaned[0]
    got = value(s.execute("hello", b'{"name": "go"}'))
    assert got["hello"] == "go" and got["initialized"]
    assert sp.AsyncTemplateAdapter.cleaned[0] == before + 1
    assert items(s.stream("ticks", b'{"n": 2}')) == [{"tick": 0}, {"tick": 1}]
    assert s.execute("nope", b"{}").error.type == "NotImplementedError"


def test_serial_unless_thread_safe(make_server):
    s = serve(make_server, spt.SerialAdapter, threads=4)
    import concurrent.futures as cf

    with cf.ThreadPoolExecutor(3) as ex:
        outs = list(ex.map(lambda _: value(s.execute("overlap", b'{"want": 2, "timeout_ms": 200}')), range(3)))
    assert max(o["max"] for o in outs) == 1


def test_foreign_bridge_refused(tmp_path):
    fake = tmp_path / "snakepit_bridge"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "base_adapter.py").write_text("")
    env = dict(os.environ, SNAKEPIT_TEST_IGNORE_HOST_DEATH="1", PYTHONPATH=os.pathsep.join([os.path.join(HERE, ".."), str(tmp_path)]))
    t0 = time.monotonic()
    p = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.pop(0) if sys.path[0]=='' else None; "
         "from snakepit_bridge.server import main; main()", "--adapter", "x.Y", "--port", "0"],
        env=env, stdin=subprocess.PIPE, capture_output=True, timeout=60,
    )
    assert p.returncode == 3, p.stderr
    assert b"another snakepit_bridge" in p.stderr and str(tmp_path).encode() in p.stderr
    assert time.monotonic() - t0 < 60


def test_snakepit_adapters_path_hint(tmp_path):
    env = dict(os.environ, SNAKEPIT_TEST_IGNORE_HOST_DEATH="1", PYTHONPATH=os.path.join(HERE, ".."))
    p = subprocess.run(
        [sys.executable, "-c", "from snakepit_bridge.server import main; main()",
         "--adapter", "snakepit_bridge.adapters.showcase.ShowcaseAdapter", "--port", "0"],
        env=env, stdin=subprocess.PIPE, capture_output=True, timeout=60, cwd=str(tmp_path),
    )
    assert p.returncode == 3, p.stderr
    assert b"snakepit_bridge.examples.showcase.ShowcaseAdapter" in p.stderr


def test_snakepit_module_names_import():
    import snakepit_bridge
    from snakepit_bridge import heartbeat, logging_config, serialization, session_context, zero_copy  # noqa: F401
    from snakepit_bridge.base_adapter_threaded import ThreadSafeAdapter, thread_safe_method  # noqa: F401

    assert snakepit_bridge.ThreadSafeAdapter is ThreadSafeAdapter
    assert heartbeat.HeartbeatClient(None, "s").start() is False
    assert serialization.graceful_dumps({"o": object()}).startswith('{"o": {"__ffi_unserializable__": true')
    assert logging_config.get_logger("snakepit_bridge.x").name == "snakepit.bridge.x"
    assert collect_tools(SampleAdapter())  # native adapters unaffected
