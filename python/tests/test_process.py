"""_process's parent watch: a pidfd where the kernel has one, polling elsewhere."""

from __future__ import annotations

import os
import sys
import threading
from typing import List

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


def _watch(monkeypatch: pytest.MonkeyPatch, start: int, ppids: List[int]) -> List[str]:
    died: List[str] = []
    proc = _process._Process("w-test")
    monkeypatch.setattr(proc, "die_now", lambda reason, code=0: died.append(reason))
    seq = iter(ppids)
    monkeypatch.setattr(_process.os, "getppid", lambda: next(seq, ppids[-1]))
    monkeypatch.setattr(_process, "PPID_POLL_INTERVAL_S", 0.01)
    t = threading.Thread(target=proc.watch_parent, args=(start,), daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "the parent watch did not return"
    return died


def test_parent_watch_polls_without_a_pidfd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_process, "_parent_pidfd", lambda ppid: None)
    died = _watch(monkeypatch, 4242, [4242, 4242, 1])
    assert died == ["parent pid changed from 4242 to 1: host gone"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pipes stand in for a pidfd on Linux")
def test_parent_watch_rechecks_the_ppid_after_the_pidfd(monkeypatch: pytest.MonkeyPatch) -> None:
    # The pidfd fires (here: a readable pipe), then the ppid decides: the
    # exit message names the new parent, as the poll loop's does.
    r, w = os.pipe()
    os.write(w, b"x")
    monkeypatch.setattr(_process, "_parent_pidfd", lambda ppid: r)
    try:
        died = _watch(monkeypatch, 4242, [1])
    finally:
        os.close(r)
        os.close(w)
    assert died == ["parent pid changed from 4242 to 1: host gone"]
