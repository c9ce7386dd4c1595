"""Adapters for the Go<->Python contract tests (test/integration/contract_test.go)."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
from typing import Any, Dict, List, Optional

from snakepit_bridge import BaseAdapter, InvalidArgs, tool


class Mode(enum.Enum):
    FAST = "fast"
    SLOW = "slow"


@dataclasses.dataclass
class Cfg:
    name: str
    sizes: List[int]
    mode: Mode = Mode.FAST


class ContractAdapter(BaseAdapter):
    @tool
    def scale(self, xs: List[int], factor: float = 1.0) -> List[float]:
        """Multiply each x by factor.

        Args:
            xs: the numbers.
            factor: the multiplier.
        """
        return [x * factor for x in xs]

    @tool
    def configure(self, cfg: Cfg, note: Optional[str] = None) -> Dict[str, Any]:
        return {"name": cfg.name, "total": sum(cfg.sizes), "mode": cfg.mode, "note": note}

    @tool
    def sorted_only(self, xs: List[int]) -> List[int]:
        if xs != sorted(xs):
            raise InvalidArgs("xs", "must be sorted ascending", expected="sorted list[int]")
        return xs

    @tool
    async def async_scale(self, xs: List[int]) -> List[int]:
        return xs

    @tool
    def array(self, n: int, dtype: str = "float32") -> Any:
        import numpy as np

        return np.arange(n, dtype=dtype)

    @tool
    def array_bytes(self, n: int) -> bytes:
        """The same array as raw bytes, as a tool would send it by hand."""
        import numpy as np

        return np.arange(n, dtype=np.float32).tobytes()

    @tool
    def matrix(self) -> Any:
        import numpy as np

        return np.arange(6, dtype=np.int64).reshape(2, 3)

    @tool
    def numpy_mix(self) -> Any:
        import numpy as np

        return {"mean": np.float32(1.5), "n": np.int64(3), "row": np.arange(3)}

    @tool
    def blob(self, n: int) -> bytes:
        return b"\x00" * n

    @tool
    def stamps(self) -> Dict[str, Any]:
        return {
            "when": datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc),
            "price": decimal.Decimal("9.99"),
            "tags": {"b", "a"},
            "mode": Mode.SLOW,
            "cfg": Cfg("c", [1]),
        }


class NoTools(BaseAdapter):
    def helper(self) -> int:
        return 1


class NotAnAdapter:
    def run(self) -> int:
        return 1
