"""Field validators shared by `appliance.config` and `appliance.agent_config`.

Problem lines read `<dotted.path>: <value> <what is allowed>`: `fail` raises one, `show` writes a
value as a problem line shows it, `between`/`rule`/`length`/`matches`/`url_with` are reusable
checks, `Num`/`Int`/`Bool`/`Text` the strict scalar types, and `problem_line` turns a pydantic
error into such a line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import NoneType, UnionType
from typing import Annotated, Any, NoReturn, Union, get_args, get_origin

from pydantic import AfterValidator, AllowInfNan, BaseModel, PlainValidator, Strict
from pydantic_core import ErrorDetails, PydanticCustomError


def show(value: object) -> str:
    """A config value as a problem line shows it: short, YAML-like, one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else f"{value[:37]!r}... ({len(value)} characters)"
    return str(value)


def fail(message: str) -> NoReturn:
    """Reject a value; `message` becomes the problem line after the dotted path."""
    raise PydanticCustomError("appliance", "{msg}", {"msg": message})


def threads_or_auto(hi: int) -> PlainValidator:
    """A thread count in 1–hi, or the word `auto` (chosen from the usable CPUs at start)."""

    def check(v: object) -> int | str:
        if v == "auto":
            return "auto"
        if isinstance(v, bool) or not isinstance(v, int):
            fail(f"{show(v)} is neither a thread count (1–{hi}) nor 'auto'")
        if 1 <= v <= hi:
            return v
        fail(f"{show(v)} is outside 1–{hi}")

    return PlainValidator(check)


def int_or_auto(lo: int, hi: int) -> PlainValidator:
    """A whole number in lo–hi, or the word `auto` (the device chooses at start)."""

    def check(v: object) -> int | str:
        if v == "auto":
            return "auto"
        if isinstance(v, bool) or not isinstance(v, int):
            fail(f"{show(v)} is neither a whole number ({lo}–{hi}) nor 'auto'")
        if lo <= v <= hi:
            return v
        fail(f"{show(v)} is outside {lo}–{hi}")

    return PlainValidator(check)


def between(
    lo: float,
    hi: float | None = None,
    unit: str = "",
    *,
    off: float | None = None,
    off_means: str = "off",
    exclusive: bool = False,
) -> AfterValidator:
    """A number in lo–hi (or > / >= lo when hi is None); `off` is a sentinel accepted as well."""
    unit_text = f" {unit}" if unit else ""
    off_text = f" ({off} = {off_means})" if off is not None else ""

    def check(v: float) -> float:
        if off is not None and v == off:
            return v
        if hi is None:
            if v > lo or (v == lo and not exclusive):
                return v
            fail(f"{show(v)} is not {'more than' if exclusive else 'at least'} {lo}{unit_text}{off_text}")
        if lo < v < hi or (not exclusive and v in (lo, hi)):
            return v
        fail(f"{show(v)} is outside {lo}–{hi}{unit_text}{' (exclusive)' if exclusive else ''}{off_text}")

    return AfterValidator(check)


def rule(ok: Callable[[Any], bool], problem: str) -> AfterValidator:
    """Reject a value for which `ok` is false with the line `<value> <problem>`."""

    def check(v: Any) -> Any:
        if not ok(v):
            fail(f"{show(v)} {problem}")
        return v

    return AfterValidator(check)


def length(lo: int, hi: int) -> AfterValidator:
    return rule(lambda v: lo <= len(v) <= hi, f"is outside {lo}–{hi} characters")


def matches(pattern: str, allowed: str) -> AfterValidator:
    return rule(lambda v: re.fullmatch(pattern, v) is not None, f"is not allowed ({allowed})")


def url_with(*schemes: str) -> AfterValidator:
    def ok(v: str) -> bool:
        scheme, sep, rest = v.partition("://")
        return scheme in schemes and bool(sep and rest)

    return rule(ok, f"is not a {' or '.join(s + '://' for s in schemes)} URL")


Num = Annotated[float, Strict(), AllowInfNan(False)]
Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Text = Annotated[str, length(1, 10_000)]


_TYPE_PROBLEMS = {
    "float_type": "is not a number",
    "finite_number": "is not a finite number",
    "int_type": "is not an integer",
    "bool_type": "is not true or false",
    "string_type": "is not a string",
    "list_type": "is not a list",
    "dict_type": "is not a mapping",
    "model_type": "is not a mapping",
    "model_attributes_type": "is not a mapping",
}


def _unwrap(tp: Any) -> Any:
    while True:
        if get_origin(tp) is Annotated:
            tp = get_args(tp)[0]
        elif (
            get_origin(tp) in (Union, UnionType)
            and len(args := [a for a in get_args(tp) if a is not NoneType]) == 1
        ):
            tp = args[0]
        else:
            return tp


def _allowed_keys(root: type[BaseModel], loc: tuple[int | str, ...]) -> list[str]:
    """The field names of the model found at `loc` under `root`."""
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            info = tp.model_fields.get(str(part))
            tp = info.annotation if info else None
        else:  # list[X] or dict[str, X]
            tp = get_args(tp)[-1] if get_args(tp) else None
    tp = _unwrap(tp)
    return list(tp.model_fields) if isinstance(tp, type) and issubclass(tp, BaseModel) else []


def problem_line(root: type[BaseModel], section: str, error: ErrorDetails) -> str:
    """One pydantic error as `<dotted.path>: <value> <what is allowed>`."""
    loc = error["loc"]
    path = section + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
    kind, value = error["type"], error.get("input")
    if kind == "appliance":
        return f"{path}: {error['msg']}"
    if kind == "extra_forbidden":
        return f"{path}: unknown key (allowed: {', '.join(_allowed_keys(root, loc[:-1]))})"
    if kind == "missing":
        return f"{path}: required"
    if kind in ("literal_error", "enum"):
        return f"{path}: {show(value)} is not one of {(error.get('ctx') or {}).get('expected')}"
    if kind in _TYPE_PROBLEMS:
        return f"{path}: {show(value)} {_TYPE_PROBLEMS[kind]}"
    return f"{path}: {show(value)} is not allowed ({error['msg']})"
