"""Tool spec derivation from signatures and docstrings."""

from __future__ import annotations

import json
import sys
import typing
from typing import Any, Dict, List, Optional, Union

import pytest

from snakepit_bridge import BaseAdapter, SessionContext, collect_tools, derive_spec, tool, type_name
from snakepit_bridge.adapter import ToolKind


def params(spec):
    return {p.name: p for p in spec.parameters}


class Typed(BaseAdapter):
    @tool
    def f(
        self,
        i: int,
        fl: float,
        s: str,
        b: bool,
        l: list,
        d: dict,
        by: bytes,
        a: Any,
        un,
        opt: Optional[int] = None,
        li: List[int] = [1, 2],  # noqa: B006 - a default to encode, never mutated
        di: Dict[str, int] = {"x": 1},  # noqa: B006
        union: Union[int, str] = 3,
        tup: typing.Tuple[int, ...] = (1,),
        pipe: "int | None" = 5,
        blob: bytes = b"\x00",
    ) -> None:
        """First line is the description.

        More text that is not.

        Args:
            i: an int.
            fl (float): a float.
        """


def test_types_required_and_defaults():
    tools = collect_tools(Typed())
    spec = tools["f"].spec
    p = params(spec)
    assert [x.name for x in spec.parameters][:3] == ["i", "fl", "s"]  # declaration order kept
    # The annotation as written (resolved): what a Go reader of App.Tools sees.
    types = {n: x.type for n, x in p.items()}
    if sys.version_info < (3, 10):  # `int | None` cannot be resolved: the hints stay strings
        types["pipe"] = "Optional[int]" if types["pipe"] == "int | None" else types["pipe"]
    assert types == {
        "i": "int", "fl": "float", "s": "str", "b": "bool", "l": "list", "d": "dict", "by": "bytes",
        "a": "any", "un": "any", "opt": "Optional[int]", "li": "list[int]", "di": "dict[str, int]",
        "union": "int | str", "tup": "tuple[int, ...]", "pipe": "Optional[int]", "blob": "bytes",
    }
    # The coarse JSON kind stays available.
    assert type_name(List[int]) == "list" and type_name(Optional[int]) == "int"
    assert spec.returns == "None" and spec.doc.startswith("First line is the description.\n\nMore text")
    assert all(p[n].required and p[n].default_json == b"" for n in ("i", "fl", "s", "b", "l", "d", "by", "a", "un"))
    assert not p["opt"].required and p["opt"].default_json == b"null"
    assert json.loads(p["li"].default_json) == [1, 2]
    assert json.loads(p["di"].default_json) == {"x": 1}
    assert json.loads(p["tup"].default_json) == [1]
    # A default with no JSON form: optional, but no default is advertised.
    assert not p["blob"].required and p["blob"].default_json == b""
    assert spec.description == "First line is the description."
    assert p["i"].description == "an int."
    assert p["fl"].description == "a float."
    assert not spec.supports_streaming and not spec.accepts_any_kwargs


def test_context_parameters_are_skipped():
    class A(BaseAdapter):
        @tool
        def annotated(self, x: int, session: SessionContext) -> None: ...

        @tool
        def by_name(self, ctx, y: str = "") -> None: ...

        @tool
        def by_name2(self, context) -> None: ...

        @tool
        def optional_ctx(self, c: Optional[SessionContext] = None) -> None: ...

        @tool
        def not_a_context(self, context: str) -> None: ...

    tools = collect_tools(A())
    assert [p.name for p in tools["annotated"].spec.parameters] == ["x"]
    assert tools["annotated"].context_param == "session"
    assert [p.name for p in tools["by_name"].spec.parameters] == ["y"]
    assert tools["by_name"].context_param == "ctx"
    assert tools["by_name2"].spec.parameters == () and tools["by_name2"].context_param == "context"
    assert tools["optional_ctx"].context_param == "c"
    # A parameter named "context" with a real type is an ordinary parameter.
    assert [p.name for p in tools["not_a_context"].spec.parameters] == ["context"]
    assert tools["not_a_context"].context_param is None


def test_kwargs_and_args():
    class A(BaseAdapter):
        @tool
        def kw(self, a: int, *args: int, **kwargs: Any) -> None: ...

    spec = collect_tools(A())["kw"].spec
    assert [p.name for p in spec.parameters] == ["a"]
    assert spec.accepts_any_kwargs


def test_decorator_forms_and_names():
    class A(BaseAdapter):
        @tool
        def bare(self) -> None:
            """Doc line."""

        @tool(description="explicit", name="renamed")
        def original(self) -> None:
            """Ignored doc."""

        @tool()
        def empty_parens(self) -> None: ...

        def not_a_tool(self) -> None: ...

    tools = collect_tools(A())
    assert set(tools) == {"bare", "renamed", "empty_parens"}
    assert tools["bare"].spec.description == "Doc line."
    assert tools["renamed"].spec.description == "explicit"
    assert tools["empty_parens"].spec.description == ""
    # The decorated function is still a plain method.
    assert A().bare() is None


def test_streaming_detection_and_kinds():
    class A(BaseAdapter):
        @tool
        def sync(self) -> int: return 1

        @tool
        async def coro(self) -> int: return 1

        @tool
        def gen(self):
            yield 1

        @tool
        async def agen(self):
            yield 1

        @tool(supports_streaming=True)
        def flagged(self) -> list: return [1]

    tools = collect_tools(A())
    kinds = {n: (t.kind, t.spec.supports_streaming) for n, t in tools.items()}
    assert kinds == {
        "sync": (ToolKind.SYNC, False),
        "coro": (ToolKind.ASYNC, False),
        "gen": (ToolKind.SYNC_GEN, True),
        "agen": (ToolKind.ASYNC_GEN, True),
        "flagged": (ToolKind.SYNC_ITER, True),
    }


def test_inheritance_override_and_duplicates():
    class Base(BaseAdapter):
        @tool
        def a(self) -> str: return "base"

        @tool
        def b(self) -> str: return "base"

    class Child(Base):
        @tool(description="child a")
        def a(self) -> str: return "child"

    tools = collect_tools(Child())
    assert set(tools) == {"a", "b"}
    assert tools["a"].func() == "child"
    assert tools["a"].spec.description == "child a"

    class Dup(BaseAdapter):
        @tool(name="x")
        def one(self) -> None: ...

        @tool(name="x")
        def two(self) -> None: ...

    with pytest.raises(ValueError, match="two tools named 'x'"):
        collect_tools(Dup())


def test_plain_class_adapter_and_derive_spec_on_function():
    class Plain:
        @tool
        def hi(self, who: str = "you") -> str:
            return "hi " + who

    assert collect_tools(Plain())["hi"].func() == "hi you"

    @tool
    def free(self, n: int) -> int:
        return n

    spec, ctx_param = derive_spec(free)
    assert [p.name for p in spec.parameters] == ["n"] and ctx_param is None


@pytest.mark.parametrize(
    "ann,expected",
    [
        (int, "int"), (bool, "bool"), (float, "float"), (str, "str"), (bytes, "bytes"),
        (bytearray, "bytes"), (list, "list"), (tuple, "list"), (set, "list"), (dict, "dict"),
        (List[str], "list"), (Dict[str, Any], "dict"), (typing.Mapping[str, int], "dict"),
        (typing.Sequence[int], "list"), (Optional[str], "str"), (Union[int, float], "any"),
        (Any, "any"), (object, "any"), ("Optional[int]", "int"), ("List[int]", "list"),
        ("int | None", "int"), ("SomethingElse", "any"), (list[int], "list"), (dict[str, int], "dict"),
    ],
)
def test_type_name(ann, expected):
    assert type_name(ann) == expected


def test_type_name_subclasses():
    import enum

    class Color(enum.IntEnum):
        RED = 1

    class Flag(int):
        pass

    assert type_name(Color) == "int"
    assert type_name(bool) == "bool"
    assert type_name(Flag) == "int"


def test_declared_limits_and_their_validation():
    class A(BaseAdapter):
        @tool(max_concurrency=3, timeout=2)
        def limited(self) -> None: ...

        @tool
        def free(self) -> None: ...

    tools = collect_tools(A())
    assert (tools["limited"].spec.max_concurrency, tools["limited"].spec.timeout) == (3, 2.0)
    assert (tools["free"].spec.max_concurrency, tools["free"].spec.timeout) == (0, 0.0)
    for kwargs, exc in [
        ({"max_concurrency": 0}, ValueError),
        ({"max_concurrency": -1}, ValueError),
        ({"max_concurrency": 2**31}, ValueError),
        ({"max_concurrency": 1.5}, TypeError),
        ({"max_concurrency": True}, TypeError),
        ({"timeout": 0}, ValueError),
        ({"timeout": float("nan")}, ValueError),
        ({"timeout": float("inf")}, ValueError),
        ({"timeout": "5"}, TypeError),
    ]:
        with pytest.raises(exc):
            tool(**kwargs)(lambda self: None)


def test_traceparent_parsing():
    from snakepit_bridge.context import _parse_traceparent

    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert _parse_traceparent(good) == ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
    for bad in ["", "garbage", good.upper(), "01" + good[2:], good + "-x",
                "00-" + "0" * 32 + "-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01"]:
        assert _parse_traceparent(bad) == ("", ""), bad


@pytest.mark.parametrize(
    "value",
    [None, True, False, 0, -7, 2**70, 0.0, -0.0, 1.5, 1e16, 1e-7, 60.0, float("nan"), float("inf"), "", "plain",
     "with \"quote\"", "back\\slash", "tab\t", "é", "x" * 300, [1, "a"], {"k": None}, (1, 2), b"raw", object(), "\ud800"],
)
def test_default_json_is_json_dumps(value) -> None:
    # The common defaults are written without importing json (adapter._default_json).
    import json

    from snakepit_bridge.adapter import _default_json

    try:
        want = json.dumps(value, allow_nan=False, separators=(",", ":")).encode()
    except (TypeError, ValueError):
        want = b""
    assert _default_json(value) == want


def test_default_json_of_an_int_too_long_for_str_is_empty() -> None:
    # json.dumps refuses it (sys.get_int_max_str_digits): the default has no
    # JSON form, which must not stop the worker from describing its tools.
    from snakepit_bridge.adapter import _default_json

    assert _default_json(10**5000) == b""
