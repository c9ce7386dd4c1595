"""What a worker loads on its way to ready (issue 21's lean start): each
module here costs every worker's start and is needed only later, or only by
some adapters."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from conftest import PYTHON_DIR

# Runs a real worker (the default: showcase adapter, sync server) up to its
# handshake, then reports the loaded modules and exits.
HELPER = textwrap.dedent(
    """
    import os, sys
    from snakepit_bridge import _process, server
    def handshake(self, host, port):
        os.write(self.handshake_fd, " ".join(sorted(sys.modules)).encode())
        os._exit(0)
    _process._Process.handshake = handshake
    server.main(["--adapter", "snakepit_bridge.examples.showcase.ShowcaseAdapter", "--port", "0",
                 "--worker-id", "w-startup", "--snakepit-run-id", "pytest-startup"])
    """
)

# Not on the start path of a native adapter on the sync server:
NOT_AT_START = {
    "dataclasses",  # _frozen's records instead
    "copy",
    "json",  # first call that decodes arguments
    "argparse",  # the host's command line is read without it
    "ctypes",  # _libc calls prctl and mallopt through _ctypes
    "google.protobuf",  # WorkerService is hand-coded (_wire)
    "snakepit_bridge.pb.snakepit_pb2",
    "snakepit_bridge.base_adapter",  # Snakepit's API, for Snakepit-style adapters only
    "snakepit_bridge._aio",  # the aio flavour
}


def test_worker_start_path_loads_only_what_it_needs() -> None:
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR, SNAKEPIT_LOG_LEVEL="WARNING")
    env.pop("SNAKEPIT_TOKEN", None)
    out = subprocess.run(
        [sys.executable, "-c", HELPER], stdin=subprocess.DEVNULL, capture_output=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    loaded = set(out.stdout.decode().split())
    assert "snakepit_bridge.examples.showcase" in loaded, "the helper did not reach the handshake"
    assert sorted(loaded & NOT_AT_START) == []
