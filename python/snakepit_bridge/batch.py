"""Dynamic batching: a tool that takes many calls in one invocation.

::

    from snakepit_bridge import BaseAdapter, Batch, tool

    class Model(BaseAdapter):
        @tool(batch=Batch(max_size=32, max_wait_ms=2))
        def score(self, text: list[str], weight: list[float]) -> list[float]:
            return [len(t) * w for t, w in zip(text, weight)]

Callers call a batch tool like any other tool, with ONE call's arguments
(``{"text": "hi", "weight": 2.0}``). The host (Go) gathers the calls that
arrive while the workers are busy with earlier batches of the tool, up to
``max_size`` of them or for at most ``max_wait_ms`` after the first, and sends
them to one worker as one request (a call that finds the tool idle goes at
once, alone: a lone caller never waits ``max_wait_ms``). The function then
receives **each parameter as a list with one entry per call**, in the same
order for every parameter (``text=["hi", "yo"], weight=[2.0, 1.0]``), and
returns a list (any sized sequence, a numpy array too) of the same length:
entry *i* is call *i*'s result.

Why columns (each parameter a list) rather than a list of per-call dicts:

* the batched computation wants columns anyway (``np.stack(x)``, a model's
  batch input, a single SQL ``IN``), and zipping columns is one call away;
* the signature stays an ordinary typed signature whose annotations are the
  honest runtime types (``list[str]``), so mypy checks the tool's body;
* the host still learns each parameter's per-call type: the annotation
  without its outer ``list[...]`` (``str``). That per-call type is what the
  worker checks each call's argument against (:mod:`.argcheck`), one call at
  a time, before the tool runs: a call that does not fit fails alone with
  ``InvalidArgs`` and is left out of the lists.

Rules:

* Every public parameter is annotated ``list[T]`` (``List[T]``,
  ``Sequence[T]``) or not at all; ``@tool`` raises TypeError otherwise. The
  return annotation, if any, is ``list[R]`` too. No ``**kwargs``, no
  streaming.
* A default is the per-call value a call that omits the argument gets in
  its entry (``weight: list[float] = 1.0  # type: ignore[assignment]``).
* Per-call failure: put an exception instance in the returned list at that
  call's position (``ValueError("empty text")``, or
  ``InvalidArgs("text", "must not be empty")`` to report bad input); only
  that call fails, with that error. An exception *raised* by the function
  fails every call of the batch.
* A parameter annotated ``SessionContext`` (or named ``ctx``) receives the
  batch's context: it is cancelled when every caller in the batch has gone.
  ``ctx.batch_calls`` holds each call's own context (its request id and
  metadata, e.g. its trace context), in the order of the lists.
* A single call (one sent without batching: a call with a session, a
  host that does not batch) reaches the function as a batch of one.
* A batch takes one of the worker's slots however many calls it carries.
"""

from __future__ import annotations

import collections.abc
import inspect
import math
import re
import typing
from typing import Any, List, Sequence

from ._frozen import Frozen

__all__ = ["Batch"]

_MAX_SIZE = 1 << 16
_MAX_WAIT_MS = 60_000.0


class Batch(Frozen):
    """How the host batches a tool's calls: at most ``max_size`` calls per
    request, and the first call of a batch waits at most ``max_wait_ms``
    milliseconds for more while the tool is busy (0: a batch is what
    arrived while the previous batches ran).

    Anchors: Ray Serve's ``@serve.batch(max_batch_size,
    batch_wait_timeout_s)`` and Triton's dynamic batcher
    (``max_queue_delay_microseconds``). A larger ``max_wait_ms`` fills
    batches better under light load at the cost of that much latency.
    """

    _fields = ("max_size", "max_wait_ms")
    max_size: int
    max_wait_ms: float

    def __init__(self, max_size: int = 32, max_wait_ms: float = 2.0) -> None:
        n, w = max_size, max_wait_ms
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"Batch(max_size=...) must be an int, got {type(n).__name__}")
        if not 2 <= n <= _MAX_SIZE:
            raise ValueError(f"Batch(max_size={n}) must be between 2 and {_MAX_SIZE}; drop batch= for one call at a time")
        if isinstance(w, bool) or not isinstance(w, (int, float)):
            raise TypeError(f"Batch(max_wait_ms=...) must be a number of milliseconds, got {type(w).__name__}")
        if not (0 <= w <= _MAX_WAIT_MS) or math.isnan(w):
            raise ValueError(f"Batch(max_wait_ms={w}) must be between 0 and {_MAX_WAIT_MS:g}")
        self._set(max_size=n, max_wait_ms=w)


#: Compiled on first use (re caches it): compiling costs every worker's start.
_LIST_STR_RE = r"(?:typing\.)?(?:list|List|Sequence|(?:collections\.abc\.)?Sequence)\[(.*)\]"
_LIST_ORIGINS = (list, collections.abc.Sequence, collections.abc.MutableSequence)


def item_annotation(ann: Any, where: str) -> Any:
    """The per-call type of a batch tool's parameter (or return) annotated
    ``ann``: ``T`` for ``list[T]``; unannotated stays unannotated."""
    if ann is inspect.Parameter.empty:
        return ann
    if isinstance(ann, str):  # an annotation typing could not resolve
        m = re.fullmatch(_LIST_STR_RE, ann.strip())
        if m:
            return m.group(1).strip() or inspect.Parameter.empty
    if typing.get_origin(ann) in _LIST_ORIGINS:
        args = typing.get_args(ann)
        return args[0] if args else inspect.Parameter.empty
    if ann in (list, List, Sequence):
        return inspect.Parameter.empty
    raise TypeError(
        f"{where} of a batch tool must be annotated list[T] (T: the type of one call's value), "
        f"got {ann!r}: the tool receives one list entry per call"
    )

