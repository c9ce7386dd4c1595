"""_reaper: the worker adopts orphaned descendants and reaps only those."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import PYTHON_DIR, pid_gone, read_line, wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

# Runs in a helper: a subreaper changes its caller for good.
HELPER = textwrap.dedent(
    """
    import json, os, subprocess, sys, time
    from snakepit_bridge import _reaper
    _reaper.REAP_INTERVAL_S = 0.2
    _reaper._MARGIN_S = 0.1
    ok = _reaper.start()
    py = sys.executable
    # A child that starts a setsid grandchild and exits a moment later,
    # orphaning it (long enough for the reaper to see who its parent was).
    mid = subprocess.Popen([py, "-c",
        "import subprocess, sys, time; p = subprocess.Popen(sys.argv[1:], start_new_session=True); print(p.pid, flush=True); time.sleep(1)",
        py, "-c", "import time; time.sleep(60)"], stdout=subprocess.PIPE)
    orphan = int(mid.stdout.readline()); mid.wait()
    # Our own child, which exits with a status subprocess must still see.
    own = subprocess.Popen([py, "-c", "import sys, time; time.sleep(1.5); sys.exit(7)"])
    print(json.dumps({"subreaper": ok, "orphan": orphan, "me": os.getpid()}), flush=True)
    sys.stdin.readline()
    print(json.dumps({"own_status": own.wait()}), flush=True)
    sys.stdin.readline()
    """
)


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return ""


def test_orphan_is_adopted_and_reaped_without_stealing_own_children() -> None:
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR)
    helper = subprocess.Popen([sys.executable, "-c", HELPER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    try:
        info = json.loads(read_line(helper.stdout.fileno(), 10))
        assert info["subreaper"] is True
        orphan = info["orphan"]
        assert _ppid(orphan) == info["me"], "the orphan was not reparented to the subreaper"
        # Kill it: the helper, its parent now, must reap it (no zombie left).
        os.kill(orphan, 9)
        wait_for(lambda: _state(orphan) == "", timeout=10, what="the adopted orphan to be reaped")
        helper.stdin.write(b"\n")
        helper.stdin.flush()
        done = json.loads(read_line(helper.stdout.fileno(), 10))
        assert done["own_status"] == 7, "the reaper stole the exit status of the helper's own child"
    finally:
        if helper.poll() is None:
            helper.kill()
        helper.wait()
        for p in (locals().get("orphan"),):
            if p and not pid_gone(p):
                os.kill(p, 9)


def test_descendant_walk_matches_the_process_table() -> None:
    # The reaper walks /proc/<pid>/task/*/children instead of reading every
    # process on the machine; it must see the same subtree as the full table.
    from snakepit_bridge import _procs, _reaper

    if not _reaper._has_children_files():
        pytest.skip("this kernel has no /proc/<pid>/task/<tid>/children")
    child = subprocess.Popen([sys.executable, "-c", "import subprocess,sys; p=subprocess.Popen(['sleep','30']); print(p.pid, flush=True); sys.stdin.read()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    grandchild = None
    try:
        grandchild = int(read_line(child.stdout.fileno(), 10))
        walked = _reaper._descendants(os.getpid())
        assert walked.get(child.pid) == os.getpid() and walked.get(grandchild) == child.pid
        # Every descendant of ours in the full table, not only the walked
        # pids: a descendant the walk missed must fail this.
        full = {p.pid: p.ppid for p in _procs.process_table().values()}
        subtree, todo = {}, [os.getpid()]
        while todo:
            parent = todo.pop()
            for pid, ppid in full.items():
                if ppid == parent and pid not in subtree:
                    subtree[pid] = ppid
                    todo.append(pid)
        assert subtree == walked
    finally:
        child.stdin.close()
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        if grandchild is not None and not pid_gone(grandchild):
            os.kill(grandchild, 9)


class _FakeProc:
    """Synthetic /proc for _Reaper.scan: snapshots, start times, waitpid."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, me: int) -> None:
        from snakepit_bridge import _reaper

        self.me = me
        self.snapshots: list = []
        self.ticks = 0.0
        self.start: dict = {}
        self.reaped: list = []
        monkeypatch.setattr(_reaper, "_descendants", lambda pid: self.snapshots.pop(0))
        # Snapshots listed in ``partial`` (by number) see our threads change
        # while they are read: absence there proves nothing.
        self.partial: set = set()
        self.reads = 0
        monkeypatch.setattr(_reaper, "_tids", self.tids)
        monkeypatch.setattr(_reaper, "_now_ticks", lambda: self.ticks)
        # The synthetic snapshots decide what the scan sees, not this
        # process's real children.
        monkeypatch.setattr(_reaper, "_childless", lambda: False)
        monkeypatch.setattr(_reaper, "_start_ticks", lambda pid: self.start.get(pid))
        monkeypatch.setattr(_reaper.os, "waitpid", self.waitpid)

    def tids(self, pid: int) -> frozenset:
        self.reads += 1
        scan = (self.reads - 1) // 2
        return frozenset({str(self.reads)}) if scan in self.partial else frozenset({"1"})

    def waitpid(self, pid: int, flags: int):  # type: ignore[no-untyped-def]
        self.reaped.append(pid)
        return 0, 0  # still running: stays adopted


def test_walk_adopts_an_orphan_its_snapshot_missed() -> None:
    # A child C exits between our reading our own children file and C's:
    # C's child G is in neither snapshot C's nor ours. At the next scan G is
    # our child, absent from the previous snapshot, and it started before
    # it: our own children file is read whole, so G was not ours then — it
    # was adopted and must be reaped (else it stays a zombie for good).
    from snakepit_bridge import _reaper

    me, c, g, own = 100, 200, 300, 400
    r = _reaper._Reaper()
    r.me, r.walk = me, True
    hz = os.sysconf("SC_CLK_TCK")
    start = {g: 0.0, c: 0.0, own: 5.0 * hz}  # own: born after the first scan
    snaps = [(1.0 * hz, {c: me}), (5.0 * hz, {g: me, own: me}), (9.0 * hz, {g: me, own: me})]
    with pytest.MonkeyPatch.context() as mp:
        fake = _FakeProc(mp, me)
        fake.start = start
        for ticks, table in snaps:
            fake.ticks = ticks
            fake.snapshots.append(table)
            r.scan()
    assert g in r.adopted and g in fake.reaped, "the orphan the walk missed was never adopted"
    assert own not in r.adopted and own not in fake.reaped, "our own child was taken for an adopted one"


def test_adoption_decision() -> None:
    from snakepit_bridge import _reaper

    me, limit = 1, 100
    starts = {10: 50, 11: 150, 12: 50, 13: 50, 14: None}
    decide = lambda prev, absent_proves: _reaper._newly_adopted(  # noqa: E731
        {10, 11, 12, 13, 14}, prev, me, limit, starts.get, absent_proves)
    prev = {12: me, 13: 7, 14: 7}
    # 13: another parent before, started before it -> adopted. 12: ours
    # before -> never. 14: start unknown -> not proven. 11: born after the
    # previous snapshot -> not proven. 10: absent before, started before
    # it -> adopted only when absence is proof (walk mode, read whole).
    assert decide(prev, True) == {10, 13}
    assert decide(prev, False) == {13}


def test_walk_adopts_a_missed_orphan_after_a_partial_snapshot() -> None:
    # As above, but the snapshot that missed G was also taken while one of
    # our threads came or went (not whole): the next scan cannot use G's
    # absence there, and after it G is our child in every snapshot. The
    # last whole snapshot, where G had another parent, still proves it.
    from snakepit_bridge import _reaper

    me, c, g = 100, 200, 300
    r = _reaper._Reaper()
    r.me, r.walk = me, True
    hz = os.sysconf("SC_CLK_TCK")
    snaps = [(1.0 * hz, {c: me, g: c}), (3.0 * hz, {}), (5.0 * hz, {g: me}), (7.0 * hz, {g: me})]
    with pytest.MonkeyPatch.context() as mp:
        fake = _FakeProc(mp, me)
        fake.start = {c: 0.0, g: 0.0}
        fake.partial = {1}
        for ticks, table in snaps:
            fake.ticks = ticks
            fake.snapshots.append(table)
            r.scan()
    assert g in r.adopted and g in fake.reaped, "the orphan missed by a partial snapshot was never adopted"


CHILDLESS = textwrap.dedent(
    """
    import json, os, subprocess, sys, time
    from snakepit_bridge import _reaper
    seen = [_reaper._childless()]
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(5)"])
    seen.append(_reaper._childless())
    # Exited but not waited for: still a child (a zombie), and its status
    # must stay with subprocess (WNOWAIT).
    deadline = time.monotonic() + 20
    while open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the child did not exit"
        time.sleep(0.01)
    seen.append(_reaper._childless())
    status = child.wait()
    seen.append(_reaper._childless())
    print(json.dumps({"seen": seen, "status": status}), flush=True)
    """
)


def test_childless_check_takes_no_exit_status() -> None:
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR)
    out = subprocess.run([sys.executable, "-c", CHILDLESS], capture_output=True, env=env, timeout=30, check=True)
    got = json.loads(out.stdout)
    # No child, a running child, an exited child not yet waited for, none.
    assert got["seen"] == [True, False, False, True]
    assert got["status"] == 5, "the childless check took the child's exit status"


def test_now_ticks_is_the_clock_of_process_start_times() -> None:
    from snakepit_bridge import _reaper

    hz = os.sysconf("SC_CLK_TCK")
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0]) * hz
    now = _reaper._now_ticks()
    assert now is not None
    # /proc/uptime shows hundredths of a second; allow for a loaded machine.
    assert abs(now - uptime) < 2 * hz
    started = _reaper._start_ticks(os.getpid())
    assert started is not None and started <= now
    # A child's start time lies between the clock's readings around its fork
    # (start times are whole ticks, truncated).
    before = _reaper._now_ticks()
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    after = _reaper._now_ticks()
    try:
        born = _reaper._start_ticks(child.pid)
        assert before is not None and after is not None and born is not None
        assert before - 1 <= born <= after + 1
    finally:
        child.stdin.close()
        child.wait(10)
