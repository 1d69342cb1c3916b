"""Parameters: sections of a params file and ``--set`` values (YAML errors as one line naming the file), and
typed parameter blocks: a params.yaml mapping turned into a frozen dataclass, unknown names refused, every
value checked against its field's annotation (an error names the parameter, the type expected and the value)."""
from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


# Names that one word per concept replaced (a plan, a pruner, an attribution, a discovery algorithm were all
# `method`): an old name is still refused, but the error names its replacement. No alias reads the old name.
RENAMED = {"method": ("pruner", "plan_name", "plan"), "methods": ("plans", "attributions", "algorithms")}


def renamed_hint(unknown, known) -> str:
    """`` (methods: renamed to plans)`` for each name of ``unknown`` whose replacement is in ``known``, ``(n_image:
    did you mean n_images?)`` for a near miss of a known name (a typo); else ""."""
    import difflib

    hints = []
    for name in unknown:
        new = next((n for n in RENAMED.get(name, ()) if n in known), None)
        if new is not None:
            hints.append(f"{name}: renamed to {new}")
        elif close := difflib.get_close_matches(name, list(known), n=1, cutoff=0.8):
            hints.append(f"{name}: did you mean {close[0]}?")
    return f" ({'; '.join(hints)})" if hints else ""


class ParameterTypeError(TypeError, ValueError):
    """A parameter's value is not of its declared type (a ValueError too, so existing handlers catch it)."""


def _describe(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin in (tuple, list) or annotation in (tuple, list):
        if not args:
            return "a list"
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {_describe(args[0])}"
        return f"a list of {len(args)} values ({', '.join(_describe(a) for a in args)})"
    if origin is dict or annotation is dict:
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))


def fits(value, annotation) -> bool:
    """Whether ``value`` (as YAML gives it) fits ``annotation``; unknown annotations accept anything."""
    if annotation is Any or annotation is typing.Any:
        return True
    if annotation is type(None):
        return value is None
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:  # an integer is a number too (YAML's 1 for 1.0)
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if annotation in (tuple, list) or origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        if not args:
            return True
        if len(args) == 2 and args[1] is Ellipsis or origin is list:
            return all(fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(fits(v, a) for v, a in zip(value, args))
    if annotation is dict or origin is dict:
        return isinstance(value, dict)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def type_error(kind: str, name: str, expected: str, value) -> ParameterTypeError:
    hint = quoted_number_hint(value) if expected in ("an integer", "a number") else ""
    return ParameterTypeError(f"{kind} parameter {name!r} must be {expected}, got {value!r} "
                              f"({type(value).__name__}){hint}")


def check_fields(obj, kind: str) -> None:
    """Check every field of the dataclass instance ``obj`` against its annotation (call in ``__post_init__``,
    before the value checks, so that ``epochs: "three"`` is a clear error rather than a TypeError in a comparison)."""
    cls = type(obj)
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 -- an annotation that cannot be resolved is not checked
        hints = {}
    for f in dataclasses.fields(cls):
        if f.name in hints:
            value = getattr(obj, f.name)
            if not fits(value, hints[f.name]):
                raise type_error(kind, f.name, _describe(hints[f.name]), value)


def dataclass_from_params(cls: type[T], params: dict | None, kind: str, tuple_fields: tuple[str, ...] = ()) -> T:
    """``cls(**params)``, with a clear error naming any unknown ``kind`` parameter or any value of the wrong type.
    ``tuple_fields``: the fields kept as tuples (YAML gives lists, the frozen dataclasses want hashable values;
    None gives ())."""
    if params is not None and not isinstance(params, dict):
        raise ParameterTypeError(f"the {kind} parameters must be a mapping of names to values, got {params!r}")
    params = dict(params or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(params) - known
    if unknown:
        raise ValueError(f"unknown {kind} parameter(s) {sorted(unknown)}{renamed_hint(sorted(unknown), known)}; "
                         f"known: {sorted(known)}")
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001
        hints = {}
    for key, value in params.items():
        annotation = hints.get(key)
        if key in tuple_fields and value is None:
            continue
        if annotation is not None and not fits(value, annotation):
            raise type_error(kind, key, _describe(annotation), value)
    for key in tuple_fields:
        if key in params:
            params[key] = tuple(params[key] or ())
    return cls(**params)


def quoted_number_hint(value) -> str:
    """The fix for a number that YAML read as text (``"0.05"``, ``1e-3``); empty for any other value."""
    if not isinstance(value, str):
        return ""
    try:
        float(value)
    except ValueError:
        return ""
    return " (quoted in YAML? write the number without quotes; YAML reads 1e-3 as text, write 1.0e-3)"


class ParameterError(ValueError):
    """A stage parameter is unknown, missing or out of range; the message says how to fix it."""


def parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` whose syntax errors are one line naming ``where``, the line and the column."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        place = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark else where
        problem = " ".join(str(p) for p in (error.context, error.problem) if p)
        raise ParameterError(f"{place}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as error:
        raise ParameterError(f"{where}: YAML error: {error}") from None


def read_yaml(path: str | Path, what: str = "file") -> Any:
    """A YAML file's content; a missing file or a syntax error is a ParameterError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ParameterError(f"{what} {path} does not exist" + (" (or is a folder)" if path.exists() else ""))
    return parse_yaml(path.read_text(), str(path))


def load_params(sections: list[str], params_file: str | Path = "params.yaml") -> dict:
    """Merge the dotted ``sections`` of a params file (later sections override earlier ones). A section that is a
    single value, not a mapping (the top-level ``seeds``), is the notebook parameter of its last key's name."""
    params = read_yaml(params_file, "params file") or {}
    if not isinstance(params, dict):
        raise ParameterError(f"{params_file} must be a mapping of sections, got {type(params).__name__}")
    merged = {}
    for dotted in sections:
        node = params
        for key in dotted.split("."):
            if not isinstance(node, dict) or key not in node:
                raise ParameterError(f"section {dotted!r} is not in {params_file}; add it or fix the stage's --params")
            node = node[key]
        merged.update(node if isinstance(node, dict) else {dotted.split(".")[-1]: node})
    return merged


def parse_sets(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ParameterError(f"--set expects KEY=VALUE, got {pair!r}")
        out[key] = parse_yaml(value, f"--set {key}")
    return out


def keys_of(callable_, skip=()) -> set:
    """The keyword names ``callable_`` takes (options of an attribution class's ``__init__``, say), less ``skip``."""
    return set(inspect.signature(callable_).parameters) - set(skip)


def check_options(options: dict | None, known: set, what: str) -> None:
    """Refuse option names that ``what`` does not take, naming them and the known ones."""
    unknown = sorted(set(options or {}) - set(known))
    if unknown:
        raise ValueError(f"{what} has no option(s) {unknown}; known: {sorted(known)}")


def check_at_least(parameters: dict, least: dict[str, int]) -> None:
    """Each named parameter (absent or None: not checked) is a number of at least its bound, so that a value
    that would only fail after compute (``gallery_size: 0``, ``n_split: 0``) is refused first."""
    for name, bound in least.items():
        value = parameters.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < bound:
            raise ParameterError(f"parameter {name} must be at least {bound}, got {value!r}; set it to {bound} "
                                 "or more")


# ----------------------------------------------------------------------------- a value against its default's type
_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
               list: "a list", dict: "a mapping"}


def _expected_type(default) -> type | None:
    for kind in (bool, int, float, str):  # bool before int: True is an int to Python, not to a user
        if isinstance(default, kind):
            return kind
    if isinstance(default, (list, tuple)):
        return list
    if isinstance(default, dict):
        return dict
    return None


def _type_errors(name: str, default, value) -> list[str]:
    """Where ``value`` does not have the type of ``default``: None defaults accept anything, an integer is a
    number, a mapping's keys that the default has are checked recursively (the rest is the stage's business),
    a list's items against the default's items when those are all of one plain type."""
    kind = _expected_type(default)
    if kind is None:
        return []
    if not fits(value, kind):
        hint = quoted_number_hint(value) if kind in (int, float) else ""
        return [f"{name} must be {_TYPE_NAMES[kind]} like its default {default!r}, got {value!r} "
                f"({type(value).__name__}){hint}"]
    errors = []
    if kind is dict:
        for key in value:
            if key in default:
                errors += _type_errors(f"{name}.{key}", default[key], value[key])
    elif kind is list and default:
        kinds = {_expected_type(d) for d in default}
        if len(kinds) == 1 and next(iter(kinds)) in (bool, int, float, str):
            for i, item in enumerate(value):
                errors += _type_errors(f"{name}[{i}]", default[0], item)
    return errors


def kinds_errors(name: str, value, default, kinds: tuple | None = None) -> list[str]:
    """Where ``value`` is not of the types a notebook's ``parameters`` cell declares for ``name`` (``kinds``:
    ``(int, None)`` for ``int | None``), or, undeclared, of its ``default``'s type (:func:`_type_errors`)."""
    if kinds is None:
        return _type_errors(name, default, value)
    if value is None and None in kinds:
        return []
    if not any(k is not None and fits(value, k) for k in kinds):
        names = " or ".join("null" if k is None else _TYPE_NAMES[k] for k in kinds)
        return [f"{name} must be {names}, got {value!r} ({type(value).__name__})"]
    if _expected_type(default) is not None and fits(value, _expected_type(default)):
        return _type_errors(name, default, value)  # its items, as the default's
    return []
