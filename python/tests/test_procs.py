"""kill_descendants: kills exactly the processes a worker provably owns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import PYTHON_DIR, kill_group_if_alive, pid_gone, read_line, wait_for
from snakepit_bridge._procs import _parse_stat, find_descendants

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")

# Run in a helper process: kill_descendants acts on its caller, and the
# caller must never be the test runner itself.
HELPER = textwrap.dedent(
    """
    import json, os, subprocess, sys, time
    from snakepit_bridge._procs import kill_descendants
    py = sys.executable
    sleeper = [py, "-c", "import time; time.sleep(60)"]
    child = subprocess.Popen(sleeper)
    # A child that starts a grandchild and exits: the grandchild is orphaned
    # (reparented away) but stays in our process group.
    mid = subprocess.Popen([py, "-c",
        "import subprocess, sys; p = subprocess.Popen(sys.argv[1:]); print(p.pid, flush=True)"] + sleeper,
        stdout=subprocess.PIPE)
    orphan = int(mid.stdout.readline()); mid.wait()
    # A child that left our group (own session) but is still our descendant,
    # with a scrubbed environment.
    escaped = subprocess.Popen(sleeper, start_new_session=True, env={})
    print(json.dumps({"child": child.pid, "orphan": orphan, "escaped": escaped.pid,
                      "leader": os.getpgid(0) == os.getpid()}), flush=True)
    sys.stdin.readline()
    print(json.dumps(sorted(kill_descendants())), flush=True)
    sys.stdin.readline()
    """
)


def _kill_leftover_sleepers(*pids):
    """After a failed assertion: kill the test's sleepers, checking identity first."""
    for p in pids:
        if not p or pid_gone(p):
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                ours = b"time.sleep(60)" in f.read()
        except OSError:
            continue
        if ours:
            os.kill(p, 9)


def _spawn(cmd, **kw):
    return subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        bufsize=0,
        env=dict(os.environ, PYTHONPATH=PYTHON_DIR),
        **kw,
    )


def test_kills_tree_and_group_when_leader():
    helper = _spawn([sys.executable, "-c", HELPER], start_new_session=True)
    pids = {}
    try:
        buf = bytearray()
        pids = json.loads(read_line(helper.stdout.fileno(), 15, buf))
        assert pids["leader"] is True
        victims = [pids["child"], pids["orphan"], pids["escaped"]]
        assert not any(pid_gone(p) for p in victims)
        helper.stdin.write(b"go\n")
        killed = json.loads(read_line(helper.stdout.fileno(), 15, buf))
        assert set(victims) <= set(killed)
        for p in victims:
            wait_for(lambda p=p: pid_gone(p), timeout=3, what=f"pid {p} dead")
        assert helper.poll() is None  # it never kills itself
    finally:
        kill_group_if_alive(helper)
        _kill_leftover_sleepers(pids.get("escaped"), pids.get("orphan"), pids.get("child"))


def test_spares_group_members_when_not_leader():
    """Not the group leader: the group belongs to someone else and is left alone."""
    launcher = textwrap.dedent(
        """
        import subprocess, sys
        # Same process group as the launcher (which leads it), not a descendant of the helper.
        sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print(sibling.pid, flush=True)
        helper = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
        helper.wait()
        """
    )
    proc = _spawn([sys.executable, "-c", launcher, HELPER], start_new_session=True)
    pids = {}
    sibling = None
    try:
        buf = bytearray()
        sibling = int(read_line(proc.stdout.fileno(), 15, buf))
        pids = json.loads(read_line(proc.stdout.fileno(), 15, buf))
        assert pids["leader"] is False
        proc.stdin.write(b"go\n")
        killed = json.loads(read_line(proc.stdout.fileno(), 15, buf))
        assert sibling not in killed and proc.pid not in killed
        # Its own descendants still die; the orphan is no longer provably its own.
        assert {pids["child"], pids["escaped"]} <= set(killed)
        assert pids["orphan"] not in killed
        assert not pid_gone(sibling)
    finally:
        kill_group_if_alive(proc)
        _kill_leftover_sleepers(sibling, pids.get("orphan"), pids.get("escaped"), pids.get("child"))


def test_find_descendants_excludes_self_and_parent():
    found = find_descendants()
    assert os.getpid() not in found and os.getppid() not in found


@pytest.mark.parametrize(
    "line,expected",
    [
        ("123 (python3) S 1 123 123 0 -1", (123, 1, 123, "S")),
        ("77 (a b) c)) R 5 9 9 0", (77, 5, 9, "R")),
        ("garbage", None),
    ],
)
def test_parse_stat(line, expected):
    info = _parse_stat(line)
    assert (tuple(info) if info else None) == expected
