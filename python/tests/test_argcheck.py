"""The argument checker: each supported hint, nested paths, conversion,
opt-out, and its per-call cost."""

from __future__ import annotations

import dataclasses
import enum
import time
from typing import Any, Dict, FrozenSet, List, Literal, Optional, Sequence, Set, Tuple, TypedDict, Union

import pytest

from snakepit_bridge import BaseAdapter, InvalidArgs, collect_tools, tool
from snakepit_bridge.argcheck import compile_checker, type_str
from snakepit_bridge.codec import error_from_exception


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass
class Inner:
    name: str
    size: int = 1


@dataclasses.dataclass
class Cfg:
    name: str
    inner: Inner
    tags: List[str] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        if self.name == "bad":
            raise ValueError("name must not be 'bad'")


class Point(TypedDict):
    x: float
    y: float


def check(ann: Any, value: Any) -> Any:
    """Run the compiled check of one parameter `v: ann`; the value the tool gets."""
    c = compile_checker([("v", ann)])
    assert c is not None
    kw = {"v": value}
    c(kw)
    return kw["v"]


def bad(ann: Any, value: Any) -> InvalidArgs:
    with pytest.raises(InvalidArgs) as ei:
        check(ann, value)
    return ei.value


@pytest.mark.parametrize(
    "ann, ok, wrong",
    [
        (int, [0, -5, 2**70], [1.0, "1", True, None, [1]]),
        (float, [1.5, 2, -0.0], ["1.5", True, None]),
        (str, ["", "x"], [1, None, b"x"]),
        (bool, [True, False], [0, 1, "true", None]),
        (bytes, [b"", b"x"], ["eA==", [1]]),
        (type(None), [None], [0, ""]),
        (None, [None], [0]),
        (Optional[int], [None, 3], ["3", 1.5]),
        (Union[int, str], [1, "a"], [1.5, None]),
        (List[int], [[], [1, 2]], [[1, "2"], "12", {"a": 1}]),
        (list, [[], [1, "x"]], [{}, "x"]),
        (Dict[str, int], [{}, {"a": 1}], [{"a": "1"}, [1]]),
        (dict, [{"a": [1]}], [[1]]),
        (Literal["a", "b"], ["a", "b"], ["c", 1]),
        (Literal[1, 2], [1, 2], [True, 1.0, "1"]),
    ],
)
def test_each_type(ann, ok, wrong):
    for v in ok:
        assert check(ann, v) == v
    for v in wrong:
        e = bad(ann, v)
        assert e.path.startswith("v") and e.expected and e.got


def test_unannotated_and_any_are_not_checked():
    assert compile_checker([("a", Any)]) is None
    import inspect

    assert compile_checker([("a", inspect.Parameter.empty), ("b", "SomeForwardRef")]) is None

    class Custom:
        pass

    assert compile_checker([("c", Custom)]) is None


def test_messages_say_path_expected_and_got():
    e = bad(List[int], [1, 2, "x"])
    assert (e.path, e.expected, e.got) == ("v[2]", "int", "str 'x'")
    assert str(e) == "argument 'v[2]': expected int, got str 'x'"
    e = bad(Dict[str, List[int]], {"k": [1, None]})
    assert e.path == "v['k'][1]" and e.got == "None"
    e = bad(Literal["a", "b"], "c")
    assert "one of 'a', 'b'" in str(e)
    e = bad(int, True)
    assert e.got == "bool True" and e.expected == "int"


def test_tuple_and_sets_convert():
    assert check(Tuple[int, ...], [1, 2]) == (1, 2)
    assert check(Tuple[int, str], [1, "a"]) == (1, "a")
    assert bad(Tuple[int, str], [1]).reason.endswith("got 1 items")
    assert bad(Tuple[int, str], [1, 2]).path == "v[1]"
    assert check(Set[int], [1, 2, 1]) == {1, 2}
    assert check(FrozenSet[str], ["a"]) == frozenset({"a"})
    assert check(Sequence[float], [1, 2.5]) == [1, 2.5]


def test_enum():
    assert check(Color, "red") is Color.RED
    assert check(Level, 2) is Level.HIGH
    e = bad(Color, "green")
    assert "one of 'red', 'blue'" in str(e)
    assert bad(Level, True).got == "bool True"
    assert check(List[Color], ["blue"]) == [Color.BLUE]


def test_dataclass_nested_paths_and_conversion():
    v = check(Cfg, {"name": "n", "inner": {"name": "i"}, "tags": ["a"]})
    assert v == Cfg("n", Inner("i", 1), ["a"])
    e = bad(Cfg, {"name": 1, "inner": {"name": "i"}})
    assert (e.path, e.expected) == ("v.name", "str")
    e = bad(Cfg, {"name": "n", "inner": {"name": "i", "size": "big"}})
    assert e.path == "v.inner.size"
    e = bad(Cfg, {"name": "n"})
    assert (e.path, e.got) == ("v.inner", "missing")
    e = bad(Cfg, {"name": "n", "inner": {"name": "i"}, "colour": 1})
    assert e.path == "v.colour" and "has: name, inner, tags" in str(e)
    e = bad(Cfg, {"name": "bad", "inner": {"name": "i"}})  # __post_init__ refuses
    assert e.path == "v" and "must not be 'bad'" in str(e)
    e = bad(Cfg, [1])
    assert "a JSON object" in str(e)


def test_typeddict():
    assert check(Point, {"x": 1, "y": 2.5}) == {"x": 1, "y": 2.5}
    assert bad(Point, {"x": 1}).path == "v.y"
    assert bad(Point, {"x": 1, "y": "2"}).path == "v.y"


def test_pydantic_models():
    pydantic = pytest.importorskip("pydantic")

    class Model(pydantic.BaseModel):
        name: str
        sizes: List[int] = []

    v = check(Model, {"name": "m", "sizes": [1, 2]})
    assert isinstance(v, Model) and v.sizes == [1, 2]
    e = bad(Model, {"sizes": [1]})
    assert e.path == "v.name"
    e = bad(Model, {"name": "m", "sizes": [1, "x"]})
    assert e.path == "v.sizes[1]"


def test_union_prefers_the_member_that_fits():
    @dataclasses.dataclass
    class A:
        a: int

    assert check(Union[int, A], 3) == 3
    assert check(Union[int, A], {"a": 1}) == A(1)
    e = bad(Union[int, A], "x")
    assert e.path == "v" and e.expected == "int | A"


def test_type_str():
    assert type_str(List[int]) == "list[int]"
    assert type_str(Optional[Dict[str, Cfg]]) == "Optional[dict[str, Cfg]]"
    assert type_str(Literal["a"]) == "Literal['a']"
    assert type_str(Tuple[int, ...]) == "tuple[int, ...]"
    assert type_str(Any) == "any"


# -- through the tool machinery ------------------------------------------------


class Tools(BaseAdapter):
    @tool
    def three(self, a: int, b: float, c: str) -> float:
        return a + b

    @tool
    def cfg(self, cfg: Cfg, xs: List[int] = [], **extra: Any) -> str:  # noqa: B006
        return f"{cfg.name}:{cfg.inner.size}:{sorted(extra)}"

    @tool(check_args=False)
    def unchecked(self, a: int) -> Any:
        return a

    @tool
    def sorted_only(self, xs: List[int]) -> List[int]:
        if xs != sorted(xs):
            raise InvalidArgs("xs", "must be sorted", expected="sorted list[int]")
        return xs


def run(tools: Dict[str, Any], name: str, **kw: Any) -> Any:
    info = tools[name]
    info.fits_kwargs(kw)
    if info.check is not None:
        info.check(kw)
    return info.func(**kw)


def test_tools_check_and_convert():
    tools = collect_tools(Tools())
    assert run(tools, "three", a=1, b=2, c="x") == 3
    with pytest.raises(InvalidArgs) as ei:
        run(tools, "three", a=1, b="2", c="x")
    assert ei.value.path == "b"
    assert run(tools, "cfg", cfg={"name": "n", "inner": {"name": "i", "size": 4}}, other=1) == "n:4:['other']"
    with pytest.raises(InvalidArgs) as ei:
        run(tools, "cfg", cfg={"name": "n", "inner": {"name": 5}})
    assert ei.value.path == "cfg.inner.name"
    # check_args=False: types pass through; missing arguments are still refused.
    assert tools["unchecked"].check is None and run(tools, "unchecked", a="x") == "x"
    with pytest.raises(InvalidArgs) as ei:
        run(tools, "unchecked")
    assert ei.value.got == "missing"
    with pytest.raises(InvalidArgs) as ei:
        run(tools, "three", a=1, b=2, c="x", d=4)
    assert ei.value.path == "d" and "takes: a, b, c" in str(ei.value)


def test_tool_raising_invalid_args_keeps_its_kind():
    tools = collect_tools(Tools())
    with pytest.raises(InvalidArgs) as ei:
        run(tools, "sorted_only", xs=[2, 1])
    te = error_from_exception(ei.value)
    assert (te.kind, te.type, te.arg_path, te.expected) == ("invalid_args", "InvalidArgs", "xs", "sorted list[int]")
    assert "must be sorted" in te.message and "raise InvalidArgs" in te.traceback


def test_check_cost_three_scalars():
    """The per-call cost of checking a three-scalar signature (figure in
    docs/BENCHMARKS.md); the bound here is loose for a shared machine."""
    c = compile_checker([("a", int), ("b", float), ("c", str)])
    assert c is not None
    kw = {"a": 1, "b": 2.5, "c": "x"}
    n = 200_000
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            c(kw)
        best = min(best, (time.perf_counter() - t0) / n)
    print(f"\nARGCHECK: three scalars {best * 1e9:.0f} ns/call")
    assert best < 10e-6
