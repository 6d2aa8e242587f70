"""JSON Schema derived from TypedDicts, so a wire shape is written once: as the type its builders return.

Supported: ``str``, ``int``, ``float``, ``bool``, ``None``, ``Literal``, ``list[T]``, unions (``T | None``), nested
TypedDicts (closed objects: ``additionalProperties: false``; ``NotRequired`` keys are optional), and
``Annotated[T, Keywords(...)]`` for keywords a type cannot say (``pattern``, ``minItems``, ``description``).
``Annotated[T, Component("Name")]`` stands for a component built elsewhere (its ``$ref``).
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import (
    Annotated,
    Any,
    Literal,
    NotRequired,
    Required,
    Union,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
)

COMPONENTS = "#/components/schemas/"


class Keywords(dict[str, Any]):
    """Extra JSON Schema keywords of an ``Annotated`` type."""

    def __init__(self, **keywords: Any) -> None:
        super().__init__(keywords)


class Component(str):
    """A named component the type refers to, built by other code (e.g. one that depends on the task table)."""


def component_schemas(named: tuple[type, ...]) -> dict[str, Any]:
    """A JSON Schema per TypedDict of ``named``, under its class name; they refer to each other by ``$ref``."""
    return {cls.__name__: _object_schema(cls, named) for cls in named}


def schema_of(annotation: Any, named: tuple[type, ...] = ()) -> dict[str, Any]:
    """The JSON Schema of a type; TypedDicts in ``named`` become ``$ref``s to their components."""
    origin = get_origin(annotation)
    if origin is Annotated:
        base, *extras = get_args(annotation)
        for extra in extras:
            if isinstance(extra, Component):
                return {"$ref": COMPONENTS + extra}
        schema = schema_of(base, named)
        for extra in extras:
            if isinstance(extra, Keywords):
                schema = {**schema, **extra}
        return schema
    if is_typeddict(annotation):
        return {"$ref": COMPONENTS + annotation.__name__} if annotation in named else _object_schema(annotation, named)
    if origin is Literal:
        values = get_args(annotation)
        return {"const": values[0]} if len(values) == 1 else {"enum": list(values)}
    if origin in (Union, types.UnionType):
        return {"anyOf": [schema_of(member, named) for member in get_args(annotation)]}
    if origin is list:
        (item,) = get_args(annotation)
        return {"type": "array", "items": schema_of(item, named)}
    if annotation in _SCALARS:
        return {"type": _SCALARS[annotation]}
    raise TypeError(f"no JSON Schema for {annotation!r}")


_SCALARS: Mapping[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    None: "null",
    type(None): "null",
}


def _object_schema(cls: type, named: tuple[type, ...]) -> dict[str, Any]:
    hints = get_type_hints(cls, include_extras=True)
    schema: dict[str, Any] = {}
    if cls.__doc__:
        schema["description"] = " ".join(cls.__doc__.split())
    required = [name for name, hint in hints.items() if _is_required(cls, name, hint)]
    schema["type"] = "object"
    if required:
        schema["required"] = required
    schema["properties"] = {name: schema_of(_required_stripped(hint), named) for name, hint in hints.items()}
    schema["additionalProperties"] = False
    return schema


def _is_required(cls: type, name: str, hint: Any) -> bool:
    """With postponed annotations, Python 3.11 counts a ``NotRequired`` key in ``__required_keys__``; the hint
    itself still says it."""
    if get_origin(hint) is NotRequired:
        return False
    if get_origin(hint) is Required:
        return True
    return name in cls.__required_keys__  # type: ignore[attr-defined]


def _required_stripped(hint: Any) -> Any:
    return get_args(hint)[0] if get_origin(hint) in (NotRequired, Required) else hint
