"""Finding and killing the processes a worker started.

Contract: :func:`kill_descendants` SIGKILLs every process that is provably
this worker's own, and nothing else:

* every process whose parent chain leads to this process (children,
  grandchildren, ...), wherever they moved their process group or session;
* every other member of this process's group, but ONLY when this process is
  the group leader (the host spawns workers with setpgid). When it is not,
  the group belongs to someone else (a shell, a test runner) and is left
  alone.

Descendants that were spawned from a tool inherit ``SNAKEPIT_RUN_ID``, but
the environment is not used as a filter here: the parent chain already
proves ownership, and a child started with a scrubbed environment must not
escape. A descendant that both left the group and lost its parent (a
double-forked daemon) can no longer be proven ours from inside the worker;
the host's cleanup finds those by run id.

The tree is first frozen with SIGSTOP and re-scanned until it stops
growing, so a process cannot fork a new child between the scan and the kill.
Linux reads ``/proc``; elsewhere ``ps`` is used.
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Dict, List, NamedTuple, Optional, Set

__all__ = ["ProcInfo", "process_table", "find_descendants", "kill_descendants"]


class ProcInfo(NamedTuple):
    pid: int
    ppid: int
    pgrp: int
    state: str


def _parse_stat(text: str) -> Optional[ProcInfo]:
    # comm (field 2) may contain spaces and parentheses: split at the LAST ')'.
    try:
        pid_part, rest = text.split(" (", 1)
        fields = rest.rsplit(")", 1)[1].split()
        return ProcInfo(int(pid_part), int(fields[1]), int(fields[2]), fields[0])
    except (ValueError, IndexError):
        return None


def process_table() -> Dict[int, ProcInfo]:
    """A snapshot of every visible process: pid -> (pid, ppid, pgrp, state)."""
    if os.path.isdir("/proc/self"):
        table: Dict[int, ProcInfo] = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "r", encoding="utf-8", errors="replace") as f:
                    info = _parse_stat(f.read())
            except OSError:  # exited while we looked
                continue
            if info is not None:
                table[info.pid] = info
        return table
    return _ps_table()


def _ps_table() -> Dict[int, ProcInfo]:
    try:
        out = subprocess.run(
            ["ps", "-A", "-o", "pid=,ppid=,pgid=,stat="],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    table: Dict[int, ProcInfo] = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0].isdigit():
            info = ProcInfo(int(parts[0]), int(parts[1]), int(parts[2]), parts[3][:1])
            table[info.pid] = info
    return table


def find_descendants(table: Optional[Dict[int, ProcInfo]] = None, root: Optional[int] = None) -> Set[int]:
    """The pids this process may kill (see the module contract); never includes itself."""
    if table is None:
        table = process_table()
    me = os.getpid()
    root = me if root is None else root
    children: Dict[int, List[int]] = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info.pid)
    found: Set[int] = set()
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in found and child != me:
                found.add(child)
                stack.append(child)
    if root == me:
        pgrp = os.getpgid(0)
        if pgrp == me:  # we lead the group, so every member is ours
            found.update(p.pid for p in table.values() if p.pgrp == pgrp and p.pid != me)
    found.discard(me)
    return {pid for pid in found if table.get(pid) is None or table[pid].state != "Z"}


def kill_descendants() -> List[int]:
    """SIGKILL every process this worker owns (see the module contract).

    Returns the pids that were signalled. Safe to call from any thread and
    from a signal-free, loop-free exit path: it only reads /proc and sends
    signals.
    """
    frozen: Set[int] = set()
    for _ in range(16):
        new = find_descendants() - frozen
        if not new:
            break
        for pid in new:
            try:
                os.kill(pid, signal.SIGSTOP)
            except (ProcessLookupError, PermissionError):
                pass
        frozen |= new
    killed: List[int] = []
    for pid in sorted(frozen):
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except (ProcessLookupError, PermissionError):
            pass
    return killed
