"""Results as tools produce them: the JSON forms of non-JSON types, and
numpy arrays as typed binary."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import time
import uuid
from typing import Any, List

import pytest

from snakepit_bridge.codec import ResultEncodingError, encode_result, item_chunk


def js(value: Any) -> Any:
    p = encode_result("t", value)
    assert p.WhichOneof("value") == "json", p
    return json.loads(p.json)


class Color(enum.Enum):
    RED = "red"


class Num(enum.IntEnum):
    ONE = 1


@dataclasses.dataclass
class Point:
    x: float
    tags: List[str]
    when: datetime.date


def test_json_forms():
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    tz = datetime.timezone(datetime.timedelta(hours=2))
    value = {
        "dt": datetime.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=tz),
        "d": datetime.date(2024, 5, 6),
        "t": datetime.time(7, 8, 9),
        "dec": decimal.Decimal("1.10"),
        "u": u,
        "e": Color.RED,
        "ie": Num.ONE,
        "s": {3, 1, 2},
        "fs": frozenset(["b", "a"]),
        "mixed": {1, "a"},
        "tup": (1, (2, 3)),
        "dc": Point(1.5, ["a"], datetime.date(2020, 1, 2)),
        "blob": b"\x00\xff",
    }
    out = js(value)
    assert out["dt"] == "2024-05-06T07:08:09.123000+02:00"
    assert out["d"] == "2024-05-06" and out["t"] == "07:08:09"
    assert out["dec"] == "1.10" and out["u"] == str(u)
    assert out["e"] == "red" and out["ie"] == 1
    assert out["s"] == [1, 2, 3] and out["fs"] == ["a", "b"]
    assert sorted(out["mixed"], key=str) == [1, "a"]
    assert out["tup"] == [1, [2, 3]]
    assert out["dc"] == {"x": 1.5, "tags": ["a"], "when": "2020-01-02"}
    assert out["blob"] == "AP8="
    # At top level too.
    assert js(Point(1, [], datetime.date(2020, 1, 1)))["x"] == 1
    assert js(Color.RED) == "red" and js({2, 1}) == [1, 2] and js(decimal.Decimal("2")) == "2"


def test_plain_results_keep_the_fast_path():
    """A plain result never reaches the default hook (cost pinned loosely:
    the figure is in docs/BENCHMARKS.md)."""
    value = {"a": 1, "b": [1.5, "x", None, True]}
    n = 50_000
    t0 = time.perf_counter()
    for _ in range(n):
        encode_result("t", value)
    per = (time.perf_counter() - t0) / n
    print(f"\nRESULT: plain dict {per * 1e9:.0f} ns/call")
    assert per < 20e-6


def test_pydantic_models():
    pydantic = pytest.importorskip("pydantic")

    class M(pydantic.BaseModel):
        name: str
        when: datetime.date

    assert js({"m": M(name="n", when=datetime.date(2021, 3, 4))}) == {"m": {"name": "n", "when": "2021-03-04"}}


def test_unsendable_says_what_to_return():
    with pytest.raises(ResultEncodingError) as ei:
        encode_result("t", {"x": object()})
    assert "contains a value of type 'object'" in str(ei.value) and "dict of its fields" in str(ei.value)


def test_numpy_scalars_and_arrays():
    np = pytest.importorskip("numpy")
    assert js({"f": np.float32(1.5), "i": np.int64(7), "b": np.bool_(True), "f64": np.float64(2.5)}) == {
        "f": 1.5, "i": 7, "b": True, "f64": 2.5,
    }
    assert js({"a": np.arange(4).reshape(2, 2)}) == {"a": [[0, 1], [2, 3]]}
    with pytest.raises(ResultEncodingError, match="NaN"):
        encode_result("t", {"x": np.float32("nan")})

    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    p = encode_result("t", a)
    assert p.WhichOneof("value") == "binary" and p.dtype == "float32" and list(p.shape) == [2, 3]
    assert np.frombuffer(p.binary, dtype="<f4").tolist() == [0, 1, 2, 3, 4, 5]
    # Fortran order and big-endian still arrive as C order, little-endian.
    f = np.asfortranarray(np.arange(6, dtype=">i4").reshape(2, 3))
    p = encode_result("t", f)
    assert p.dtype == "int32" and np.frombuffer(p.binary, dtype="<i4").tolist() == [0, 1, 2, 3, 4, 5]
    # A dtype the host does not decode goes as JSON.
    assert js(np.array(["a", "b"])) == ["a", "b"]
    # A streamed array has no header: JSON.
    c = item_chunk("t", 1, np.arange(3))
    assert c.data.WhichOneof("value") == "json" and json.loads(c.data.json) == [0, 1, 2]
