"""_malloc.tune_malloc: when it applies, and that it stops a call-sized
pattern of multi-MiB buffers from page-faulting (a fresh interpreter per
case: malloc's thresholds are process-wide)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import PYTHON_DIR

# What a 4 MiB result does in a worker thread: three buffers of its size at
# once, freed, again; the minor faults per round are printed.
_PATTERN = r"""
import resource, sys, threading
sys.path.insert(0, sys.argv[1])
from snakepit_bridge._malloc import tune_malloc
tuned = tune_malloc()
out = []
def rounds():
    for i in range(12):
        if i == 2:
            out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
        a = bytearray(4 << 20)
        b = bytes(a)
        c = b"".join([b, b"x"])
        del a, b, c
    out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
t = threading.Thread(target=rounds)  # a thread's own arena, as in the worker
t.start(); t.join()
print(tuned, (out[1] - out[0]) // 10)
"""


def run_pattern(**env: str) -> tuple:
    clean = {k: v for k, v in os.environ.items() if not (k.startswith("MALLOC_") or k == "GLIBC_TUNABLES")}
    clean.pop("SNAKEPIT_MALLOC_TUNE", None)
    clean.update(env)
    out = subprocess.run(
        [sys.executable, "-c", _PATTERN, PYTHON_DIR], env=clean, capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_tuned_heap_does_not_fault_per_round() -> None:
    tuned, faults = run_pattern()
    if not tuned:
        pytest.skip("not glibc")
    assert faults < 100, f"{faults} minor faults per round with the thresholds set"
    untuned, before = run_pattern(SNAKEPIT_MALLOC_TUNE="0")
    assert not untuned
    # glibc's dynamic thresholds trim the heap every round: about one fault
    # per 4 KiB page of the buffers (~2,000); the check only needs many.
    assert before > 10 * max(faults, 10), f"untuned {before} vs tuned {faults} faults per round"


def test_environment_settings_are_left_alone() -> None:
    assert run_pattern(MALLOC_ARENA_MAX_="2")[0] is False
    assert run_pattern(MALLOC_ARENA_MAX="2")[0] is False
    assert run_pattern(GLIBC_TUNABLES="glibc.malloc.trim_threshold=1")[0] is False
    assert run_pattern(SNAKEPIT_MALLOC_TUNE="0")[0] is False
