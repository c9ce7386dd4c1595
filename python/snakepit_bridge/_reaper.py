"""The worker as a child subreaper (Linux): descendants cannot leave its tree.

Contract:

* :func:`start` marks this process a child subreaper
  (``prctl(PR_SET_CHILD_SUBREAPER, 1)``). A descendant whose parent dies is
  then reparented to this worker instead of to init — also after ``setsid``
  and a double fork — so ``_procs.kill_descendants`` still finds it through
  the parent chain when the worker stops, even if it scrubbed its
  environment. Elsewhere (not Linux, or prctl refused) it does nothing and
  returns False.
* Adopted orphans must be reaped by us or they stay zombies until the worker
  exits. We never call ``waitpid(-1)``/``os.wait()``: that would steal the
  exit status of children that ``subprocess``, ``multiprocessing`` or a
  tool's ``os.fork`` wait for by pid (their ``wait()`` would then see
  ECHILD and, in subprocess's case, report status 0). Instead a scan —
  run by the worker's host-watcher thread (:func:`become`), or by a
  thread of its own (:func:`start`) — snapshots this worker's descendants
  (pid and parent, walked through ``/proc/<pid>/task/*/children``; the
  whole process table where the kernel lacks those files; nothing at all
  when ``waitid(WNOWAIT)`` says there is no child) every
  ``REAP_INTERVAL_S`` and reaps,
  by pid and with WNOHANG, only children it can prove were adopted: a
  process that is our child now, and started before the previous snapshot
  (with a margin), where it had another parent — or, in walk mode, was
  absent. Our own children are ours from their first instant, so this
  never takes one of them. Absence proves it in walk mode, from the last
  snapshot in which our own ``children`` files were read whole (not one
  during which one of our threads came or went, which could move its
  children between those files): a descendant's can be missed (its
  parent exits between our reading its parent's and its own), and such
  an orphan would otherwise never be seen with another parent again.
* Limit: a descendant orphaned within one interval of its birth (a daemon
  that double-forks at once) is not proven adopted and is not reaped by
  us; after it exits it stays a zombie — holding only a pid slot — until
  the worker ends, when its new parent (init or the host) reaps it. It is
  still killed by the worker's stop (parent chain) and by the host at the
  end of the worker's lifetime (run id and process tag).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Callable, Dict, List, Optional, Set, Tuple

from . import _libc, _procs

__all__ = ["start", "become", "REAP_INTERVAL_S"]

log = logging.getLogger("snakepit_bridge.reaper")

PR_SET_CHILD_SUBREAPER = 36
REAP_INTERVAL_S = 2.0
# A child counts as adopted only if it started this much before the
# previous scan: covers the scan itself and clock rounding.
_MARGIN_S = 0.5


def _set_subreaper() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        prctl = _libc.symbol("prctl")
        if prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_CHILD_SUBREAPER) failed: %s", os.strerror(_libc.errno()))
            return False
    except (OSError, AttributeError) as e:
        log.warning("cannot become a child subreaper: %s", e)
        return False
    return True


_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# /proc/<pid>/stat's starttime counts clock ticks on the boot-time clock
# (what /proc/uptime shows; both shifted alike in a time namespace).
_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)


def _now_ticks() -> Optional[float]:
    """Now, in the clock ticks since boot of /proc/<pid>/stat's starttime."""
    if _BOOTTIME is not None:
        return time.clock_gettime(_BOOTTIME) * _HZ
    try:
        return float(_read("/proc/uptime").split()[0]) * _HZ
    except (OSError, ValueError, IndexError):
        return None


def _read(path: str) -> bytes:
    """A /proc file's content. os.open and os.read, not open(): a buffered
    file object costs six more system calls (fstat, ioctl, lseeks) per file,
    and the reaper reads one per thread of the worker every interval."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks: List[bytes] = []
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def _start_ticks(pid: int) -> Optional[float]:
    try:
        return int(_read(f"/proc/{pid}/stat").rsplit(b")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _children(pid: int) -> Set[int]:
    """pid's children, from each of its threads' ``children`` file."""
    kids: Set[int] = set()
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:  # exited
        return kids
    for tid in tids:
        try:
            kids.update(int(x) for x in _read(f"/proc/{pid}/task/{tid}/children").split())
        except (OSError, ValueError):  # the thread or process exited
            continue
    return kids


_WALL = 0x40000000  # Linux's __WALL: every kind of child (os has no name for it)


def _childless() -> bool:
    """True when this process has no child at all, in one system call:
    ``waitid(P_ALL, WNOHANG | WNOWAIT)`` fails with ECHILD then. WNOWAIT
    leaves an exited child waitable, so nobody's exit status is taken; the
    kernel checks every thread's children at once, so a True is a whole
    snapshot (no descendants either: they hang below children)."""
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT | _WALL)
    except ChildProcessError:
        return True
    except OSError:  # not supported here: walk as before
        return False
    return False


def _descendants(me: int) -> Dict[int, int]:
    """pid -> ppid of every descendant of ``me``. An orphan is reparented to
    its nearest subreaper ancestor, so only a descendant can become ours:
    walking them finds what a scan of the whole table would, for a few
    reads instead of one per process on the machine (~3 ms a scan with
    150 processes, every interval, in every worker)."""
    table: Dict[int, int] = {}
    todo = [me]
    while todo:
        parent = todo.pop()
        for kid in _children(parent):
            if kid not in table and kid != me:
                table[kid] = parent
                todo.append(kid)
    return table


def _tids(pid: int) -> Optional[frozenset]:
    try:
        return frozenset(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return None


def _newly_adopted(
    children: Set[int],
    prev: Dict[int, int],
    me: int,
    limit: float,
    start_ticks: Callable[[int], Optional[float]],
    absent_proves: bool,
) -> Set[int]:
    """Which of ``children`` were proven adopted since the ``prev`` snapshot,
    taken at ``limit`` (minus the margin): started before it, and then had
    another parent — or were absent, when ``absent_proves`` (walk mode,
    our own children read whole: a child of ours then would be there)."""
    out: Set[int] = set()
    for pid in children:
        before = prev.get(pid)
        if before == me or (before is None and not absent_proves):
            continue
        start = start_ticks(pid)
        # Started before the previous snapshot: the entry seen there under
        # this pid (or its absence) was this very process, not ours then.
        if start is not None and start < limit:
            out.add(pid)
    return out


def _has_children_files() -> bool:
    return os.path.exists(f"/proc/{os.getpid()}/task/{threading.get_native_id()}/children")


class _Reaper:
    def __init__(self) -> None:
        self.me = os.getpid()
        self.walk = _has_children_files()
        self.prev: Dict[int, int] = {}  # pid -> ppid at the previous snapshot
        self.prev_ticks: Optional[float] = None
        # The last snapshot that holds every child we had then (walk mode):
        # absence from it proves not-ours-then even when later snapshots
        # were partial or showed the process as ours already.
        self.whole: Optional[Tuple[Dict[int, int], float]] = None
        self.adopted: Set[int] = set()

    def scan(self) -> None:
        now = _now_ticks()
        whole = False
        if self.walk and _childless():
            # The idle worker's case (most scans): nothing to walk, and the
            # empty table is what the walk would have found, read whole.
            table: Dict[int, int] = {}
            whole = True
        elif self.walk:
            tids = _tids(self.me)
            table = _descendants(self.me)
            whole = tids is not None and tids == _tids(self.me)
        else:
            table = {p.pid: p.ppid for p in _procs.process_table().values()}
        children = {pid for pid, ppid in table.items() if ppid == self.me}
        margin = _MARGIN_S * _HZ
        if self.prev_ticks is not None:
            self.adopted |= _newly_adopted(
                children - self.adopted, self.prev, self.me, self.prev_ticks - margin, _start_ticks, False
            )
        if self.whole is not None:
            w_table, w_ticks = self.whole
            self.adopted |= _newly_adopted(
                children - self.adopted, w_table, self.me, w_ticks - margin, _start_ticks, True
            )
        for pid in list(self.adopted):
            if pid not in children:
                self.adopted.discard(pid)
                continue
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                self.adopted.discard(pid)
                continue
            if done:
                self.adopted.discard(pid)
                log.debug("reaped adopted orphan %d", pid)
        self.prev = table
        self.prev_ticks = now
        if whole and now is not None:
            self.whole = (table, now)

    def scan_safely(self) -> None:
        try:
            self.scan()
        except Exception:  # never let the reaper die on a /proc race
            log.exception("orphan reaper scan failed")

    def loop(self) -> None:
        while True:
            self.scan_safely()
            time.sleep(REAP_INTERVAL_S)


def become() -> Optional[_Reaper]:
    """Become a child subreaper; returns the reaper whose ``scan_safely``
    must then run every REAP_INTERVAL_S (the worker runs it from its host
    watcher's thread), or None when this process is no subreaper."""
    if not _set_subreaper():
        return None
    return _Reaper()


def start() -> bool:
    """Become a child subreaper and start reaping adopted orphans in a
    thread of their own.

    Returns whether this process is now a subreaper.
    """
    reaper = become()
    if reaper is None:
        return False
    threading.Thread(target=reaper.loop, name="snakepit-orphan-reaper", daemon=True).start()
    return True
