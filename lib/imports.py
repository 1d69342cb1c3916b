"""The import closure of library modules: what code a stage, or a kept state, is made by.

:func:`closure` follows every ``lib`` import of a module (module- and function-level alike); ``lib.pipeline``
writes each stage's DVC deps from it, and :func:`code_digest` keys kept state by it (a resume folder, an
analysis's kept checkpoints, training's and pruning's resume), so that results of other code are never mixed
with new ones. Apart from ``lib.pipeline``'s stage declarations, so that declaring a stage changes no key.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path


def _root() -> Path:
    return Path(__file__).resolve().parent.parent


def module_file(module: str, root: Path | None = None) -> Path | None:
    """The file of a ``lib`` module (package ``__init__.py`` for a package); None outside ``lib``."""
    root = root or _root()
    if module != "lib" and not module.startswith("lib."):
        return None
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@lru_cache(maxsize=2048)  # keyed by the source text itself, so never stale: dvc.yaml's 13 closures parse each file once
def _imports(source: str, package: str) -> frozenset[str]:
    """Every ``lib`` module that ``source`` imports, anywhere (functions included), as dotted names.

    ``from lib.x import y`` counts ``lib.x`` and, when ``y`` is a submodule, ``lib.x.y``; relative imports
    are resolved against ``package``.
    """
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return frozenset(m for m in found if m == "lib" or m.startswith("lib."))


def module_imports(module: str, root: Path | None = None) -> set[str]:
    """The ``lib`` modules ``module`` imports directly (those that exist), with their parent packages."""
    path = module_file(module, root)
    package = module if path is not None and path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for name in _imports(path.read_text(), package):
        if module_file(name, root) is not None:
            parts = name.split(".")
            out |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return out - {module}


def closure(modules, root: Path | None = None) -> set[str]:
    """Every ``lib`` module that importing ``modules`` may run (parent packages included)."""
    todo, seen = list(modules), set()
    while todo:
        module = todo.pop()
        if module in seen or module_file(module, root) is None:
            continue
        seen.add(module)
        parts = module.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += sorted(module_imports(module, root))
    return seen


def code_digest(modules, root: Path | None = None) -> str:
    """SHA-256 of the library files that importing ``modules`` may run (their :func:`closure`), paths and bytes:
    the code key of kept state, so that a result made by other code is redone, never mixed with new ones."""
    root = root or _root()
    digest = hashlib.sha256()
    for path in sorted(module_file(m, root) for m in closure(modules, root)):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
