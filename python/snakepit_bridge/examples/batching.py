"""BatchingAdapter: tools that take many calls at once (dynamic batching).

The host gathers concurrent calls of a batch tool into one request (up to
``max_size`` calls, waiting at most ``max_wait_ms`` for a batch to fill), and
the tool's function gets each parameter as a list with one entry per call.
It returns one result per call, in order. From Go, a batch tool is called
like any other::

    v, err := snakepit.Decode[float64](app.Execute(ctx, "double", map[string]any{"x": 2.5}))

See :mod:`snakepit_bridge.batch` for the rules, and README "Dynamic
batching" for the host side.
"""

from __future__ import annotations

from typing import Any, List

from snakepit_bridge import Batch, BaseAdapter, InvalidArgs, tool

_np: Any
try:  # numpy is optional: matvec fails with a clear error without it
    import numpy as _np
except ImportError:  # pragma: no cover - depends on the environment
    _np = None

#: The matrix of matvec: fixed per process, as a model's weights would be.
MATRIX_SIZE = 256


class BatchingAdapter(BaseAdapter):
    """A trivial batch tool, its unbatched twin, per-call errors and (with
    numpy) a matrix-vector product that gets cheaper per call in batches."""

    def setup(self) -> None:
        if _np is not None:
            rng = _np.random.default_rng(7)
            self._m = rng.standard_normal((MATRIX_SIZE, MATRIX_SIZE))

    @tool(batch=Batch(max_size=32, max_wait_ms=2))
    def double(self, x: list[float]) -> list[float]:
        """Twice x (a batch tool: one call of the function serves many calls)."""
        return [v * 2 for v in x]

    @tool
    def double_one(self, x: float) -> float:
        """Twice x, one call at a time (double's unbatched twin, for comparison)."""
        return x * 2

    @tool(batch=Batch(max_size=16, max_wait_ms=2))
    def sqrt(self, x: list[float]) -> list[Any]:
        """The square root of x; a negative x fails only its own call."""
        out: List[Any] = []
        for v in x:
            if v < 0:
                out.append(InvalidArgs("x", "must not be negative", expected="float >= 0", got=repr(v)))
            else:
                out.append(v ** 0.5)
        return out

    @tool(batch=Batch(max_size=64, max_wait_ms=2))
    def matvec(self, v: list[list[float]]) -> list[Any]:
        """The fixed MATRIX_SIZE x MATRIX_SIZE matrix times each vector v
        (numpy: one matrix-matrix product per batch)."""
        if _np is None:
            raise RuntimeError("matvec needs numpy in the worker's Python")
        good = [i for i, row in enumerate(v) if len(row) == MATRIX_SIZE]
        out: List[Any] = [InvalidArgs("v", f"must have {MATRIX_SIZE} numbers, got {len(row)}") for row in v]
        if good:
            prod = _np.asarray([v[i] for i in good]) @ self._m.T
            for k, i in enumerate(good):
                out[i] = prod[k]
        return out

    @tool
    def matvec_one(self, v: list[float]) -> Any:
        """matvec for one vector, unbatched (for comparison)."""
        if _np is None:
            raise RuntimeError("matvec_one needs numpy in the worker's Python")
        if len(v) != MATRIX_SIZE:
            raise InvalidArgs("v", f"must have {MATRIX_SIZE} numbers")
        return self._m @ _np.asarray(v)
