"""Typed parameter blocks: a params.yaml mapping turned into a frozen dataclass, unknown names refused."""
from __future__ import annotations

import dataclasses
from typing import TypeVar

T = TypeVar("T")


def dataclass_from_params(cls: type[T], params: dict | None, kind: str, tuple_fields: tuple[str, ...] = ()) -> T:
    """``cls(**params)``, with a clear error naming any unknown ``kind`` parameter. ``tuple_fields``: the
    fields kept as tuples (YAML gives lists, the frozen dataclasses want hashable values; None gives ())."""
    params = dict(params or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(params) - known
    if unknown:
        raise ValueError(f"unknown {kind} parameter(s) {sorted(unknown)}; known: {sorted(known)}")
    for key in tuple_fields:
        if key in params:
            params[key] = tuple(params[key] or ())
    return cls(**params)
