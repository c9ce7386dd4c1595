"""_process's host watcher: stdin and the parent (a pidfd where the kernel
has one, polling elsewhere) in one thread, which also runs the reaper."""

from __future__ import annotations

import os
import sys
import threading
from typing import Callable, List, Optional, Tuple

import pytest

from snakepit_bridge import _process


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="no os.pidfd_open")
def test_parent_pidfd_only_for_our_parent() -> None:
    fd = _process._parent_pidfd(os.getppid())
    if fd is None:
        pytest.skip("pidfd_open refused here (old kernel or seccomp)")
    os.close(fd)
    # A live process that is not our parent: the ppid check refuses it.
    assert _process._parent_pidfd(os.getpid()) is None
    assert _process._parent_pidfd(0) is None


def _watch(
    monkeypatch: pytest.MonkeyPatch,
    start: int,
    ppids: Callable[[], int],
    every: Optional[Tuple[float, Callable[[], None]]] = None,
) -> List[str]:
    died: List[str] = []
    proc = _process._Process("w-test")
    monkeypatch.setattr(proc, "die_now", lambda reason, code=0: died.append(reason))
    monkeypatch.setattr(proc, "_stdin_watchable", lambda: False)  # the test runner's stdin is not ours
    monkeypatch.setattr(_process.os, "getppid", ppids)
    monkeypatch.setattr(_process, "PPID_POLL_INTERVAL_S", 0.01)
    t = threading.Thread(target=proc.watch_host, args=(start, every), daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "the host watcher did not return"
    return died


def test_watch_polls_the_ppid_without_a_pidfd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_process, "_parent_pidfd", lambda ppid: None)
    seq = iter([4242, 4242, 4242])
    died = _watch(monkeypatch, 4242, lambda: next(seq, 1))
    assert died == ["parent pid changed from 4242 to 1: host gone"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a pipe stands in for the pidfd")
def test_watch_rechecks_the_ppid_when_the_pidfd_fires(monkeypatch: pytest.MonkeyPatch) -> None:
    # The pidfd fires (here: a readable pipe): the ppid decides, and the
    # message names the new parent, as the poll loop's does.
    r, w = os.pipe()
    os.write(w, b"x")
    monkeypatch.setattr(_process, "_parent_pidfd", lambda ppid: r)
    try:
        died = _watch(monkeypatch, 4242, lambda: 1)
    finally:
        os.close(w)
    assert died == ["parent pid changed from 4242 to 1: host gone"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a pipe stands in for the pidfd")
def test_watch_runs_the_periodic_job_while_the_parent_lives(monkeypatch: pytest.MonkeyPatch) -> None:
    # A pidfd that never fires (the parent lives): the thread wakes only for
    # the periodic job (the reaper's scan), at once and then every interval.
    r, w = os.pipe()
    monkeypatch.setattr(_process, "_parent_pidfd", lambda ppid: r)
    ran: List[int] = []
    ppid = [4242]

    def job() -> None:
        ran.append(len(ran))
        if len(ran) == 3:
            ppid[0] = 1
            os.write(w, b"x")  # the parent exits

    try:
        died = _watch(monkeypatch, 4242, lambda: ppid[0], every=(0.01, job))
    finally:
        os.close(w)
    assert ran == [0, 1, 2]
    assert died == ["parent pid changed from 4242 to 1: host gone"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="dup2 onto fd 0")
def test_watch_ignores_a_tool_redirecting_fd0(monkeypatch: pytest.MonkeyPatch) -> None:
    # A tool points fd 0 at /dev/null (always at EOF): the host still
    # lives, so the worker must too, until the host's pipe really ends.
    saved = os.dup(0)
    r, w = os.pipe()
    os.dup2(r, 0)
    os.close(r)
    died: List[int] = []
    ran: List[int] = []
    proc = _process._Process("w-test")
    monkeypatch.setattr(proc, "die_now", lambda reason, code=0: died.append(len(ran)))
    monkeypatch.setattr(_process, "_parent_pidfd", lambda ppid: None)
    monkeypatch.setattr(_process.os, "getppid", lambda: 4242)
    monkeypatch.setattr(_process, "PPID_POLL_INTERVAL_S", 0.01)

    def job() -> None:
        ran.append(len(ran))
        if len(ran) == 1:
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.close(null)
        elif len(ran) == 5:
            os.close(w)  # the host is gone

    try:
        t = threading.Thread(target=proc.watch_host, args=(4242, (0.01, job)), daemon=True)
        t.start()
        t.join(30)
    finally:
        os.dup2(saved, 0)
        os.close(saved)
    assert not t.is_alive(), "the host watcher did not return"
    assert died == [5], "died after %s scans (the host's pipe ended after 5)" % died


def test_a_failing_watcher_falls_back_to_the_ppid(monkeypatch: pytest.MonkeyPatch) -> None:
    # Anything the watch loop did not expect (here the periodic job raising,
    # which scan_safely normally prevents) must not end host-death
    # detection silently: the thread keeps watching the parent pid.
    monkeypatch.setattr(_process, "_parent_pidfd", lambda ppid: None)

    def boom() -> None:
        raise RuntimeError("unexpected")

    seq = iter([4242, 4242, 4242])
    died = _watch(monkeypatch, 4242, lambda: next(seq, 1), every=(0.01, boom))
    assert died == ["parent pid changed from 4242: host gone"]
