"""Per-call cost of the token check on grpcio's sync server (not a test).

    cd python && /usr/bin/python3 tests/bench_token_check.py

Times what grpc's sync server runs on its polling thread for every RPC
before the handler is submitted: the generic handler's ``service(details)``.
Rows: no token (the generated handler table alone); with a token as
create_server installs it (SyncTokenInterceptor through _serving._Intercepted);
and, for comparison, the same interceptor through grpc's own pipeline
(``grpc.server(interceptors=...)``, via grpc's private _interceptor module,
skipped when that is not there). Median and min of ROUNDS rounds, ns per call.
"""

from __future__ import annotations

import os
import statistics
import sys
import timeit
from typing import Any, Callable, Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from snakepit_bridge import BaseAdapter, tool  # noqa: E402
from snakepit_bridge._auth import SyncTokenInterceptor  # noqa: E402
from snakepit_bridge._serving import _Intercepted, _registered_handler  # noqa: E402
from snakepit_bridge.context import TOKEN_METADATA_KEY  # noqa: E402
from snakepit_bridge.server import WorkerServicer  # noqa: E402

TOKEN = "0123456789abcdef0123456789abcdef0123456789abcdef"
ROUNDS = 9
N = 200_000


class _Adapter(BaseAdapter):
    @tool
    def add(self, a: float, b: float = 2) -> float:
        return a + b


class _Details:
    method = "/snakepit.v1.WorkerService/ExecuteTool"
    invocation_metadata = (("user-agent", "grpc-go/1.70.0"), (TOKEN_METADATA_KEY, TOKEN))


def main() -> None:
    servicer = WorkerServicer(_Adapter())
    table = _registered_handler(servicer)
    details = _Details()
    rows: Dict[str, Callable[[], Any]] = {
        "no token": lambda: table.service(details),
        "token (create_server)": (lambda h: lambda: h.service(details))(
            _Intercepted(SyncTokenInterceptor(TOKEN), table)
        ),
    }
    try:
        from grpc import _interceptor

        pipeline = _interceptor.service_pipeline([SyncTokenInterceptor(TOKEN)])
        rows["token (grpc's interceptor pipeline)"] = lambda: pipeline.execute(table.service, details)
    except (ImportError, AttributeError):
        pass
    for name, fn in rows.items():
        assert fn().unary_unary == servicer.ExecuteTool, name
    times: Dict[str, List[float]] = {name: [] for name in rows}
    for _ in range(ROUNDS):  # interleaved, so load changes hit every row alike
        for name, fn in rows.items():
            times[name].append(timeit.timeit(fn, number=N) / N * 1e9)
    for name, t in times.items():
        print(f"{name:40s} median {statistics.median(t):6.0f} ns   min {min(t):6.0f} ns")
    servicer.close()


if __name__ == "__main__":
    main()
