"""What ``lib.stage`` may replace, and how it publishes: OUT_DIR's safety, the marker of a folder it wrote, the
``.partial`` folder a run writes into (resumed only by the same notebook, parameters and code) and its
publication in OUT_DIR's place."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from lib import settings
from lib.params import ParameterError

MARKER = ".stage.json"  # written into every output lib.stage publishes (and into its .partial)


def notice(message: str) -> None:
    print(f"lib.stage: {message}", file=sys.stderr, flush=True)


def parameters_hash(notebook: str | Path, parameters: dict) -> str:
    """Identity of a run: the notebook's name and its parameters (``out_dir`` left out)."""
    values = {k: v for k, v in parameters.items() if k != "out_dir"}
    text = json.dumps([Path(notebook).name, values], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def read_marker(folder: Path) -> dict | None:
    """The marker of a folder lib.stage wrote (None if there is none or it is unreadable)."""
    try:
        marker = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def code_key(notebook: str | Path) -> str:
    """The code a run of ``notebook`` runs: its twin's text and every library file it imports (the closure,
    :func:`lib.imports.code_digest`). Kept state made by other code is never resumed into a new run."""
    from lib.imports import code_digest
    from lib.pipeline import notebook_code, notebook_imports

    text = notebook_code(notebook) + code_digest(notebook_imports(notebook))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def write_marker(folder: Path, notebook: Path, parameters: dict, digest: str, code: str | None = None) -> None:
    from lib import storage

    storage.save_json(Path(folder) / MARKER, {"notebook": Path(notebook).name, "parameters_hash": digest,
                                         "code": code or code_key(notebook),
                                         "parameters": {k: v for k, v in parameters.items() if k != "out_dir"}})


def _holds_files(folder: Path) -> bool:
    """Whether ``folder`` holds anything but (nested) empty folders; stops at the first file."""
    for _, _, files in os.walk(folder):
        if files:
            return True
    return False


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []


def input_paths(parameters: dict, root: Path) -> list[tuple[str, Path]]:
    """(parameter, resolved path) of every string among the parameter values (recursively) that names an
    existing file or folder, relative to the project root (the notebook's working directory) or absolute."""
    found = []
    for name, value in parameters.items():
        if name == "out_dir":
            continue
        for text in _strings(value):
            if not text.strip() or len(text) > 4096 or "\n" in text or "\x00" in text:
                continue
            path = Path(text).expanduser()
            for candidate in ((path,) if path.is_absolute() else (root / path, Path.cwd() / path)):
                try:
                    if candidate.exists():
                        found.append((f"{name}={text}", candidate.resolve()))
                except OSError:
                    pass
    return found


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_out_dir(out_dir: str | Path, notebook: str | Path, parameters: dict, root: Path) -> str:
    """Refuse an OUT_DIR whose replacement could destroy something lib.stage did not create (see the module
    docstring); returns how it may be replaced: "new" (absent or empty), "marked" (our earlier output) or
    "unmarked" (files without a marker, only accepted under ``dvc repro``: moved aside, never deleted)."""
    out = Path(out_dir).resolve()
    root = Path(root).resolve()
    hint = "Give the stage a folder of its own (e.g. data/<stage>/<name>)."
    if _inside(root, out):
        raise ParameterError(f"OUT_DIR {out_dir} is the project root or a folder above it ({root}); "
                             f"publishing there would replace the whole checkout. {hint}")
    if _inside(Path.cwd().resolve(), out) or _inside(Path.home().resolve(), out):
        raise ParameterError(f"OUT_DIR {out_dir} holds the working directory or the home folder. {hint}")
    if (out / ".git").exists():
        raise ParameterError(f"OUT_DIR {out_dir} holds a .git repository; lib.stage never replaces it. {hint}")
    inputs = [("notebook", Path(notebook).resolve())] + input_paths(parameters, root)
    clashes = [f"{name} ({path})" for name, path in inputs if _inside(path, out)]
    if clashes:
        raise ParameterError(f"OUT_DIR {out_dir} is or holds an input of the stage: {', '.join(clashes)}; "
                             f"publishing would replace it. {hint}")
    _check_writable(out, out_dir)
    if not out.exists():
        return "new"
    if not out.is_dir():
        raise ParameterError(f"OUT_DIR {out_dir} is a file, not a folder; lib.stage does not replace it. {hint}")
    marker = read_marker(out)
    if marker is not None:
        if marker.get("notebook") != Path(notebook).name:
            raise ParameterError(f"OUT_DIR {out_dir} holds the output of {marker.get('notebook')}, not of "
                                 f"{Path(notebook).name}; lib.stage does not replace it. {hint}")
        return "marked"
    if not _holds_files(out):
        return "new"
    nested = next((str(p.parent) for p in out.rglob(MARKER)), None)
    if nested:
        raise ParameterError(f"OUT_DIR {out_dir} holds other stage outputs (e.g. {nested}); lib.stage does not "
                             f"replace them. {hint}")
    if settings.under_dvc():  # outputs DVC restored (dvc checkout/pull hold no marker), or from before markers
        return "unmarked"
    raise ParameterError(f"OUT_DIR {out_dir} already holds files that lib.stage did not publish (no {MARKER}); "
                         "it replaces only its own outputs. Move or delete that folder yourself if it is an old "
                         f"output, or choose another OUT_DIR.")


def _check_writable(out: Path, out_dir) -> None:
    """The folder that will hold OUT_DIR, its ``.partial`` and its lock must be writable (or creatable)."""
    folder = out.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ParameterError(f"OUT_DIR {out_dir}: {folder} is a file, not a folder; choose another OUT_DIR")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ParameterError(f"OUT_DIR {out_dir}: {folder} is not writable by this user; make it writable "
                             "(chmod u+w) or choose another OUT_DIR")


def _aside(path: Path, suffix: str) -> Path:
    """A free name ``<path><suffix>`` (``-2``, ``-3`` ... appended if taken)."""
    target, n = Path(f"{path}{suffix}"), 2
    while target.exists():
        target, n = Path(f"{path}{suffix}-{n}"), n + 1
    return target


def prepare_partial(partial: Path, notebook: Path, parameters: dict, digest: str) -> None:
    """Make ``partial`` the working folder of this run: resume one of the same notebook, parameters and code
    (:func:`code_key`), move any other aside to ``<partial>.stale-<its hash>`` (never deleted), then write this
    run's marker."""
    code = code_key(notebook)
    if partial.exists():
        marker = read_marker(partial) or {}
        same_run = marker.get("notebook") == Path(notebook).name and marker.get("parameters_hash") == digest
        if same_run and marker.get("code") == code:
            notice(f"resuming from {partial} (left by an interrupted run with the same parameters and code)")
        elif partial.is_dir() and not _holds_files(partial):
            pass
        else:
            why = ("was made by other code (the notebook or a library file it runs changed since)" if same_run
                   else "was left by a run with other parameters (or another notebook)")
            target = _aside(partial, f".stale-{marker.get('parameters_hash') or 'unmarked'}")
            os.replace(partial, target)
            notice(f"{partial} {why}: moved it aside to {target} and starting empty; delete that folder once you "
                   "no longer need it")
    partial.mkdir(parents=True, exist_ok=True)
    write_marker(partial, notebook, parameters, digest, code)


def publish(partial: Path, out_dir: Path, how: str) -> None:
    """Put ``partial`` in the place of ``out_dir``: the previous output (ours) is renamed away first, so a reader
    finds either the old or the new output, never a mixture; an unmarked one (dvc repro) is kept aside."""
    if how == "new" and out_dir.exists() and not _holds_files(out_dir):
        shutil.rmtree(out_dir)  # nothing but empty folders
    if how in ("marked", "unmarked") and out_dir.exists():
        old = _aside(out_dir, ".replaced" if how == "unmarked" else ".old")
        os.replace(out_dir, old)
        os.replace(partial, out_dir)
        if how == "marked":
            shutil.rmtree(old)
        else:
            notice(f"{out_dir} held files without a {MARKER} (an output from before markers); kept them in {old}")
        return
    os.replace(partial, out_dir)
