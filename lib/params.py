"""Parameters: sections of a params file, ``--set`` values, and typed blocks (a params.yaml mapping turned
into a frozen dataclass, unknown names refused)."""
from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import TypeVar

import yaml

T = TypeVar("T")


class ParameterError(ValueError):
    """A stage parameter is unknown, missing or out of range; the message says how to fix it."""


def load_params(sections: list[str], params_file: str | Path = "params.yaml") -> dict:
    """Merge the dotted ``sections`` of a params file (later sections override earlier ones)."""
    params = yaml.safe_load(Path(params_file).read_text()) or {}
    merged = {}
    for dotted in sections:
        node = params
        for key in dotted.split("."):
            if not isinstance(node, dict) or key not in node:
                raise ParameterError(f"section {dotted!r} is not in {params_file}; add it or fix the stage's --params")
            node = node[key]
        if not isinstance(node, dict):
            raise ParameterError(f"section {dotted!r} of {params_file} must be a mapping of notebook parameters")
        merged.update(node)
    return merged


def parse_sets(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ParameterError(f"--set expects KEY=VALUE, got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out


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


def keys_of(callable_, skip=()) -> set:
    """The keyword names ``callable_`` takes (options of a method class's ``__init__``, say), less ``skip``."""
    return set(inspect.signature(callable_).parameters) - set(skip)


def check_options(options: dict | None, known: set, what: str) -> None:
    """Refuse option names that ``what`` does not take, naming them and the known ones."""
    unknown = sorted(set(options or {}) - set(known))
    if unknown:
        raise ValueError(f"{what} has no option(s) {unknown}; known: {sorted(known)}")
