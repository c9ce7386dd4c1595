"""Batch tools for the integration tests of dynamic batching."""

from __future__ import annotations

import os
import time
from typing import Any, List

from snakepit_bridge import Batch, BaseAdapter, InvalidArgs, SessionContext, tool


class BatchTestAdapter(BaseAdapter):
    # While a batch runs, the next calls wait until 4 have joined (the
    # tests send exactly that many), for at most 1 s.
    @tool(batch=Batch(max_size=4, max_wait_ms=1000))
    def work(self, id: list[str], ms: list[int], ctx: SessionContext) -> list[Any]:
        """Each call: its id, the batch size, the pid and its own request id;
        "bad" ids fail alone, "die" ends the process. Sleeps max(ms)."""
        if "die" in id:
            os._exit(3)
        deadline = time.monotonic() + max(ms) / 1000.0
        while time.monotonic() < deadline and not ctx.cancelled:
            time.sleep(0.005)
        out: List[Any] = []
        for i, c in zip(id, ctx.batch_calls):
            if i.startswith("bad"):
                out.append(InvalidArgs("id", "bad id " + i))
            else:
                out.append({"id": i, "size": len(id), "pid": os.getpid(), "request_id": c.request_id,
                            "traceparent": c.metadata.get("traceparent", "")})
        return out
