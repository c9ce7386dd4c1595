"""_libc: prctl and mallopt without the ctypes package, as ctypes would call them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from conftest import PYTHON_DIR

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

# In a helper: becoming a subreaper changes the caller for good.
HELPER = textwrap.dedent(
    """
    import ctypes, errno, sys
    from snakepit_bridge import _libc
    impl = sys.argv[1]
    if impl == "package":
        _libc._impl = _libc._package()
    else:
        del sys.modules["ctypes"]  # imported above for the check only
        _libc._impl = _libc._core()
        assert "ctypes" not in sys.modules
    prctl = _libc.symbol("prctl")
    assert prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    assert prctl(99999, 0, 0, 0, 0) == -1 and _libc.errno() == errno.EINVAL
    try:
        _libc.symbol("snakepit_no_such_symbol")
    except AttributeError:
        pass
    else:
        raise AssertionError("a missing symbol was found")
    assert _libc.symbol("mallopt")(-1, 1 << 25) == 1  # M_TRIM_THRESHOLD
    # What ctypes itself sees: this process is a subreaper now.
    import ctypes
    v = ctypes.c_int()
    assert ctypes.CDLL(None).prctl(37, ctypes.byref(v), 0, 0, 0) == 0 and v.value == 1
    print("ok")
    """
)


@pytest.mark.parametrize("impl", ["core", "package"])
def test_calls_like_ctypes(impl: str) -> None:
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR)
    out = subprocess.run([sys.executable, "-c", HELPER, impl], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
