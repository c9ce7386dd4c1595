"""The frozen records that replaced the start path's dataclasses (_frozen.py):
the behaviour their users saw from @dataclass(frozen=True) stays."""

from __future__ import annotations

import inspect

import pytest

from snakepit_bridge import Batch, ToolParam, ToolSpec, collect_tools
from snakepit_bridge._frozen import FrozenInstanceError
from snakepit_bridge.adapter import ToolInfo, _ToolOptions
from sample_adapter import SampleAdapter


def test_construction_repr_eq_hash() -> None:
    p = ToolParam("x", "int", True)
    assert p == ToolParam(name="x", type="int", required=True, default_json=b"", description="")
    assert p != ToolParam("x", "int", False) and p != ("x", "int", True)
    assert hash(p) == hash(ToolParam("x", "int", True)) and len({p, ToolParam("x", "int", True)}) == 1
    assert repr(p) == "ToolParam(name='x', type='int', required=True, default_json=b'', description='')"
    s = ToolSpec("t", "d", (p,), False)
    assert (s.accepts_any_kwargs, s.max_concurrency, s.timeout, s.returns, s.batch_max_wait_ms) == (False, 0, 0.0, "", 0.0)
    assert s == ToolSpec("t", "d", (p,), False) and s.to_dict()["parameters"][0]["name"] == "x"
    assert Batch() == Batch(32, 2.0) and repr(Batch(4, 1)) == "Batch(max_size=4, max_wait_ms=1)"
    assert _ToolOptions("n", "", False).check_args is True


def test_assignment_is_refused_as_dataclasses_did() -> None:
    b = Batch()
    with pytest.raises(FrozenInstanceError):
        b.max_size = 3  # type: ignore[misc]
    with pytest.raises(AttributeError):  # FrozenInstanceError is one, like dataclasses'
        del b.max_wait_ms
    assert b.max_size == 32


def test_tool_info_derives_its_call_check_and_compares_on_five_fields() -> None:
    info = next(iter(collect_tools(SampleAdapter()).values()))
    assert isinstance(info, ToolInfo) and info.batch_defaults == {}
    assert info.param_names == {n for n, p in info.signature.parameters.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
    again = ToolInfo(info.spec, info.func, info.kind, info.context_param, info.signature)
    assert again == info and again.check is None  # check, batch and the derived fields are not compared
    assert "spec=" in repr(info) and "check=" not in repr(info)


def test_dataclasses_frozen_error_still_catches_it() -> None:
    # Code written against the dataclasses these were catches
    # dataclasses.FrozenInstanceError; the dataclasses module is imported
    # only when the error is raised, never at a worker's start.
    import dataclasses

    b = Batch()
    with pytest.raises(dataclasses.FrozenInstanceError) as e:
        b.max_size = 3  # type: ignore[misc]
    assert isinstance(e.value, FrozenInstanceError) and isinstance(e.value, AttributeError)
    with pytest.raises(dataclasses.FrozenInstanceError):
        del ToolParam("x", "int", True).name


def test_replace_as_dataclasses_replace() -> None:
    p = ToolParam("x", "int", True, b"", "d")
    q = p.replace(required=False, default_json=b"1")
    assert q == ToolParam("x", "int", False, b"1", "d") and p.required is True
    assert Batch(4, 1.0).replace(max_wait_ms=3) == Batch(4, 3)
    with pytest.raises(ValueError):  # the constructor's validation still runs
        Batch().replace(max_size=0)
    with pytest.raises(TypeError):
        p.replace(nope=1)
    info = next(iter(collect_tools(SampleAdapter()).values()))
    assert info.replace(spec=info.spec.replace(timeout=2.0)).spec.timeout == 2.0


def test_start_path_does_not_import_dataclasses() -> None:
    import os
    import subprocess
    import sys

    from conftest import PYTHON_DIR

    code = "import sys, snakepit_bridge.server, snakepit_bridge.adapter, snakepit_bridge.batch; print('dataclasses' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env, timeout=60).stdout
    assert out.strip() == "False"
