"""Run a notebook as a pipeline stage: parameters from ``params.yaml`` (or a preset), validated first.

    python -m lib.stage NOTEBOOK OUT_DIR [--params SECTION ...] [--set KEY=VALUE ...] [--summary PATH]
    python -m lib.stage --preset presets/NAME.yaml

``--params train.cnn models.cnn`` merges those sections of ``params.yaml`` (later ones win) into
the notebook's parameters; ``--set`` adds single values (parsed as YAML). A preset file names its
notebook, its output directory and its parameters. Before a kernel starts, every name is checked
against the notebook's ``parameters`` cell: an unknown name is an error, not a silent no-op.

What runs is the notebook's jupytext twin (``notebooks/NN_*.py``, paired by ``jupytext.toml``; the file DVC
depends on): read into a notebook, written as ``OUT_DIR.partial/NN_*.ipynb`` and executed there by papermill
(kernel ``python3``: this environment). Outputs and metadata JupyterLab saves into the ``.ipynb`` change nothing.

The notebook writes into ``OUT_DIR.partial``; only when it has run to the end is that directory
renamed to ``OUT_DIR``, so a failed, refused or interrupted run never changes the previous output (under
``dvc repro`` too: every output in dvc.yaml is ``persist: true``, so DVC leaves it in place), and a rerun
resumes from what the partial directory holds (e.g. finished pruning rounds) when it was made by the same
notebook, parameters and code (:func:`code_key`: the twin and every library file it imports); else that folder
is set aside. One run at a time writes into an OUT_DIR: it holds ``OUT_DIR.running`` locked
(:class:`lib.storage.FolderLock`), and a second run is refused naming the first one's process. SIGTERM stops a
run as Ctrl-C does (kernel stopped, lock released, nothing published), and a run started by ``dvc repro`` stops
when dvc dies, so a killed ``dvc repro`` leaves no orphan writing into the folder its rerun resumes.
See docs/faults.md.

Nothing a user types can destroy data: lib.stage only ever replaces a folder it published itself (holding
its marker ``.stage.json``: the notebook and a hash of the parameters). It refuses an OUT_DIR that is the
project root or above it, holds ``.git``, equals or contains an input of the stage (any parameter value
naming an existing path), or holds files without the marker. A ``.partial`` is resumed only by a run of
the same notebook and parameters; another one is moved aside (``OUT_DIR.partial.stale-<hash>``), never
deleted. Parameter values are checked against the types of the notebook's defaults, and by ``validate``,
before the notebook's first cell runs (the kernel starts meanwhile, so that its imports overlap the checks',
and is stopped when one fails); notices the library prints inside the notebook (resuming, ignoring a state of
another run) are relayed to the terminal.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import hashlib
import json
import os
import re
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from lib.params import (ParameterError, fits, load_params, parse_sets, parse_yaml,  # noqa: F401  (this CLI's API)
                        quoted_number_hint, read_yaml, renamed_hint)
from lib.pipeline import stage_for_notebook
from lib.project import enter_project, project_root  # noqa: F401  (enter_project: this module's API before lib.project)
from lib.storage import BusyError, CheckpointError

PARAMETERS_TAG = "parameters"
MARKER = ".stage.json"  # written into every output lib.stage publishes (and into its .partial)


def notebook_parameters(notebook: str | Path) -> dict:
    """Names and default values of the notebook's cell tagged ``parameters``."""
    return _parameters_cell(notebook)[0]


def notebook_annotations(notebook: str | Path) -> dict:
    """The types a parameter declares in the ``parameters`` cell (``source: str | dict = "..."``): name -> the
    accepted types (str, int, float, bool, list, dict, None). Parameters without one take their default's."""
    return _parameters_cell(notebook)[1]


_ANNOTATION_NAMES = {"str": str, "int": int, "float": float, "bool": bool, "list": list, "tuple": list,
                     "dict": dict, "None": None}


def _annotation_kinds(node) -> tuple | None:
    """The types of an annotation, in the order written (``int | None``: (int, None))."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        left, right = _annotation_kinds(node.left), _annotation_kinds(node.right)
        return None if left is None or right is None else tuple(dict.fromkeys(left + right))
    if isinstance(node, ast.Subscript):  # list[str]: the outer type
        return _annotation_kinds(node.value)
    if isinstance(node, ast.Constant) and node.value is None:
        return (None,)
    if isinstance(node, ast.Name) and node.id in _ANNOTATION_NAMES:
        return (_ANNOTATION_NAMES[node.id],)
    return None  # anything else (Any, a class): not checked


KERNELSPEC = {"display_name": "Python (pruning-beyond-accuracy)", "language": "python",
              "name": "pruning-beyond-accuracy"}  # `make kernel` registers it; lib.stage runs "python3" (this env)


def read_notebook(notebook: str | Path):
    """The notebook that runs: its jupytext twin ``NN_*.py`` (what DVC depends on) read into a notebook when
    it exists, else the ``.ipynb`` itself; outputs-free, with the project's kernelspec."""
    import nbformat

    from lib.pipeline import twin

    path = twin(notebook)
    if path.is_file() and Path(notebook).suffix == ".ipynb":
        import jupytext

        nb = jupytext.read(path, fmt="py:percent")
    else:
        nb = nbformat.read(str(notebook), as_version=4)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata.setdefault("language_info", {"name": "python"})
    nb.metadata.pop("jupytext", None)
    return nb


def twin_differs(notebook: str | Path) -> bool:
    """Whether the ``.ipynb``'s cells (code, markdown, tags) differ from its twin's: one was edited outside a
    jupytext-paired JupyterLab (``jupytext --sync notebooks/*.ipynb`` brings them together again)."""
    import nbformat

    from lib.pipeline import twin

    if Path(notebook).suffix != ".ipynb" or not twin(notebook).is_file() or not Path(notebook).is_file():
        return False

    def cells(nb):
        return [(c.cell_type, c.source.strip(), list(c.get("metadata", {}).get("tags", []))) for c in nb.cells]

    return cells(nbformat.read(str(notebook), as_version=4)) != cells(read_notebook(notebook))


def _parameters_cell(notebook: str | Path) -> tuple[dict, dict]:
    nb = read_notebook(notebook)
    cells = [c for c in nb.cells if PARAMETERS_TAG in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ParameterError(f"{notebook} must have exactly one cell tagged '{PARAMETERS_TAG}', found {len(cells)}")
    values, annotations = {}, {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    values[target.id] = ast.literal_eval(node.value)
                    kinds = _annotation_kinds(node.annotation) if isinstance(node, ast.AnnAssign) else None
                    if kinds is not None:
                        annotations[target.id] = kinds
    return values, annotations


def check_parameters(notebook: str | Path, parameters: dict, known: dict | None = None) -> None:
    """Every name is a parameter of the notebook, every value of the type of its default (see
    :func:`check_parameter_types`); raises ParameterError naming the fix."""
    known = notebook_parameters(notebook) if known is None else known
    unknown = sorted(set(parameters) - set(known))
    if unknown:
        raise ParameterError(
            f"{notebook} has no parameter(s) {unknown}{renamed_hint(unknown, known)}; its parameters are {sorted(known)}. "
            "Fix the name in params.yaml / the preset, or add it to the notebook's parameters cell."
        )
    check_parameter_types(notebook, parameters, known)


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




def check_parameter_types(notebook: str | Path, parameters: dict, known: dict | None = None) -> None:
    """Each value against the type the ``parameters`` cell declares (``n_images: int | None = 100``) or else the
    type of its default: an integer default wants an integer (``epochs: 1.5`` is refused), a number accepts an
    integer, a None default anything."""
    known = notebook_parameters(notebook) if known is None else known
    annotations = notebook_annotations(notebook)
    errors = []
    for name, value in parameters.items():
        if name not in known or name == "out_dir":
            continue
        kinds = annotations.get(name)
        if kinds is None:
            errors += _type_errors(name, known[name], value)
        elif value is None and None in kinds:
            continue
        elif not any(k is not None and fits(value, k) for k in kinds):
            names = " or ".join("null" if k is None else _TYPE_NAMES[k] for k in kinds)
            errors.append(f"{name} must be {names}, got {value!r} ({type(value).__name__})")
        elif _expected_type(known[name]) is not None and fits(value, _expected_type(known[name])):
            errors += _type_errors(name, known[name], value)  # its items, as the default's
    if errors:
        raise ParameterError(f"{Path(notebook).name}: parameter {'; '.join(errors)}")


# ----------------------------------------------------------------------------- what may be replaced
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
    :func:`lib.pipeline.code_digest`). Kept state made by other code is never resumed into a new run."""
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
    if os.environ.get("DVC_STAGE"):  # outputs DVC restored (dvc checkout/pull hold no marker), or from before markers
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


def _children_cpu() -> float:
    """User + system seconds of this process's finished children (the notebook kernels)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def notice(message: str) -> None:
    print(f"lib.stage: {message}", file=sys.stderr, flush=True)


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class _NoticeRelay:
    """A stream papermill writes the kernel's stdout/stderr into: lines of library notices
    (``lib.storage.NOTICE_PREFIX``) and of headless progress bars (``lib.storage.PROGRESS_PREFIX``: epochs, pruning
    steps, checkpoints ..., at most every ``LIB_PROGRESS_INTERVAL`` seconds) go to this process's stderr,
    labelled with the notebook; everything else is dropped."""

    def __init__(self, label: str = ""):
        self.buffer = ""
        self.label = f"{label}: " if label else ""

    def write(self, text: str) -> None:
        from lib.storage import NOTICE_PREFIX, PROGRESS_PREFIX

        self.buffer += text
        *lines, self.buffer = self.buffer.replace("\r", "\n").split("\n")
        for line in lines:
            if line.startswith(NOTICE_PREFIX):
                print(f"lib.stage: {line[len(NOTICE_PREFIX):]}", file=sys.stderr, flush=True)
            elif line.startswith(PROGRESS_PREFIX):
                # nested bars move the cursor up when they close: an escape code, no news
                shown = _ANSI_ESCAPE.sub("", line[len(PROGRESS_PREFIX):]).strip()
                if shown:
                    print(f"lib.stage: {self.label}{shown}", file=sys.stderr, flush=True)
        self.buffer = self.buffer[-10_000:]

    def flush(self) -> None:
        pass


class _headless_kernel:
    """Within it, kernels started by this process see ``lib.storage.HEADLESS_ENV``: their bars are plain lines."""

    def __enter__(self):
        from lib.storage import HEADLESS_ENV

        self.name, self.old = HEADLESS_ENV, os.environ.get(HEADLESS_ENV)
        os.environ[HEADLESS_ENV] = "1"

    def __exit__(self, *exc):
        if self.old is None:
            os.environ.pop(self.name, None)
        else:
            os.environ[self.name] = self.old


def run_notebook(notebook: str | Path, out_dir: str | Path, parameters: dict, progress: bool = True,
                 validate: Callable[[dict], None] | None = None) -> Path:
    """Execute ``notebook`` with ``parameters`` (plus ``out_dir``) and publish ``out_dir`` atomically.

    Before any cell runs: names and types against the notebook's parameters cell, the safety of OUT_DIR
    (:func:`check_out_dir`), and ``validate`` (the stage's own check, :func:`stage_check`: called with the
    notebook's defaults updated by ``parameters``, ``out_dir`` the partial folder; it raises
    ParameterError/ValueError/FileNotFoundError with a message naming the fix). The kernel starts meanwhile
    (:func:`start_kernel`); nothing is written before the checks pass.
    """
    import nbformat

    notebook, out_dir = Path(notebook), Path(out_dir)
    if not notebook.is_file():
        raise ParameterError(f"notebook {notebook} does not exist")
    root = project_root(notebook.parent)
    partial_text = str(out_dir) + ".partial"
    if not out_dir.is_absolute() and Path.cwd().resolve() != root.resolve():
        partial_text = str(out_dir.resolve()) + ".partial"  # the kernel runs in the project root
    parameters = {**parameters, "out_dir": partial_text}
    known = notebook_parameters(notebook)
    check_parameters(notebook, parameters, known)
    effective = {**known, **parameters}
    rank = int(os.environ.get("RANK", "0"))
    kernel = start_kernel(notebook, root) if rank == 0 else None
    lock = contextlib.ExitStack()
    try:
        import papermill  # here: its import (0.7 s) overlaps the kernel's start

        if rank == 0:
            check_out_dir(out_dir, notebook, effective, root)
        if validate is not None:
            try:
                validate(effective)
            except ParameterError:
                raise
            except (ValueError, TypeError, KeyError, FileNotFoundError, CheckpointError) as error:
                raise ParameterError(str(error)) from error
        partial = Path(partial_text)
        source = read_notebook(notebook)  # the twin's code: exactly what DVC depends on
        if rank > 0:  # under torchrun every rank executes the notebook; only rank 0 writes and publishes
            import tempfile

            with tempfile.TemporaryDirectory() as scratch, _headless_kernel():
                papermill.execute_notebook(source, f"{scratch}/{notebook.name}", parameters=parameters,
                                           cwd=str(root), progress_bar=False, kernel_name="python3")
            return out_dir
        if twin_differs(notebook):
            from lib.pipeline import twin

            notice(f"{notebook} and its twin {twin(notebook)} differ; running the twin (what DVC tracks). "
                   "Run `jupytext --sync notebooks/*.ipynb` (or open and save it in JupyterLab) to pair them again")
        from lib.storage import FolderLock

        # one run at a time into OUT_DIR (its .partial and its publication); released when this process ends
        lock.enter_context(FolderLock(f"{out_dir.resolve()}.running", f"OUT_DIR {out_dir}"))
        digest = parameters_hash(notebook, effective)
        prepare_partial(partial, notebook, effective, digest)
        relay = _NoticeRelay(notebook.stem)
        executed = partial / notebook.name
        nbformat.write(source, str(executed))  # the executed notebook's input: the twin's cells
        started, cpu_before = time.perf_counter(), _children_cpu()
        papermill.execute_notebook(str(executed), str(executed), parameters=parameters, cwd=str(root),
                                   progress_bar=progress, kernel_name="python3", stdout_file=relay,
                                   stderr_file=relay, **({"km": kernel} if kernel is not None else {}))
    except BaseException:
        with contextlib.suppress(Exception):  # the error that stopped the run is the one to report
            stop_kernel(kernel, now=True)
        lock.close()
        raise
    with lock:
        stop_kernel(kernel)
        # The kernel is a child process: its CPU time says what the stage costs on a machine it shares.
        notice(f"{notebook.stem} ran {time.perf_counter() - started:.0f} s "
               f"(kernel CPU {_children_cpu() - cpu_before:.0f} s)")
        how = check_out_dir(out_dir, notebook, effective, root)  # again: the folder may have changed meanwhile
        write_marker(partial, notebook, effective, digest)
        publish(partial, out_dir, how)
    return out_dir


def start_kernel(notebook: Path, root: Path):
    """The notebook's kernel, started before the checks: while this process checks the parameters (a stage's
    check imports torch, ~3 s a stage), the kernel starts and imports the library modules the notebook imports,
    so the two overlap instead of following each other; papermill then runs the notebook in it. The imports
    are the kernel's start-up lines (``IPKernelApp.exec_lines``): outside the notebook's cells, history and
    execution count, and what the notebook's first cell would import anyway."""
    from jupyter_client.manager import AsyncKernelManager
    from jupyter_core.utils import run_sync

    from lib.pipeline import notebook_imports

    manager = AsyncKernelManager(kernel_name="python3")
    imports = ", ".join(sorted(notebook_imports(notebook)))
    with _headless_kernel():  # the kernel inherits the environment it starts in
        run_sync(manager.start_kernel)(cwd=str(root),
                                       extra_arguments=[f"--IPKernelApp.exec_lines=import {imports}"] if imports else [])
    return manager


def stop_kernel(kernel, now: bool = False) -> None:
    """Shut the kernel down: politely once the notebook has run, at once when a check or a cell failed; a kernel
    that died on its own (a crash, out of memory) only leaves its connection file to remove."""
    from jupyter_core.utils import run_sync

    if kernel is None:
        return
    try:
        if run_sync(kernel.is_alive)():
            run_sync(kernel.shutdown_kernel)(now=now)
    finally:
        run_sync(kernel.cleanup_resources)()


def stage_check(notebook: str | Path) -> Callable[[dict], None] | None:
    """The declared stage's own check (``lib.pipeline``) for ``run_notebook``'s ``validate``: its parameters,
    then every input path it names that must already exist."""
    from lib.pipeline import HOW_TO_GET, stage_for_notebook

    stage = stage_for_notebook(notebook)
    if stage is None or stage.check is None:
        return None

    def validate(parameters: dict) -> None:
        checker = stage.checker()  # imported only now: run_notebook has started the kernel meanwhile
        missing = [f"{name} = {path} ({HOW_TO_GET.get(kind, kind)})" for name, path, kind in checker(parameters)
                   if not Path(path).exists()]
        if missing:
            raise FileNotFoundError(f"input missing: {'; '.join(missing)}; get it, or point the parameter at your copy")
        if "prune" in stage.upstream and isinstance(parameters.get("source"), str):
            from lib.checkpoints import validate_source

            # every checkpoint the analysis will score is the one its prune stage wrote, of the stage's arch
            validate_source(parameters["source"], parameters.get("arch"))

    return validate


def load_preset(path: str | Path) -> tuple[Path, Path, dict]:
    preset = read_yaml(path, "preset") or {}
    if not isinstance(preset, dict):
        raise ParameterError(f"preset {path} must be a mapping with notebook, out_dir and parameters")
    missing = {"notebook", "out_dir", "parameters"} - set(preset)
    if missing:
        raise ParameterError(f"preset {path} lacks {sorted(missing)} (it needs notebook, out_dir and parameters)")
    if preset["parameters"] is not None and not isinstance(preset["parameters"], dict):
        raise ParameterError(f"preset {path}: parameters must be a mapping of notebook parameters")
    return Path(preset["notebook"]), Path(preset["out_dir"]), dict(preset["parameters"] or {})


def _skip_iri_grammar() -> None:
    """Spare every stage ~2 s: papermill's nbformat imports jsonschema, which, where the optional rfc3987-syntax
    is installed (JupyterLab's jupyter-events pulls it in), compiles an IRI grammar at import for a format no
    notebook schema uses. Hidden from this process, jsonschema leaves that one format unchecked."""
    sys.modules.setdefault("rfc3987_syntax", None)


class Stopped(SystemExit):
    """This run was told to stop (SIGTERM, or the ``dvc repro`` that started it died)."""


@contextlib.contextmanager
def _stop_on_sigterm():
    """Within it, SIGTERM ends the run as Ctrl-C does: the kernel is stopped, the lock released, nothing
    published."""
    import signal

    def stop(signum, frame):
        raise Stopped(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _end_with_parent(poll_s: float = 1.0) -> None:
    """Under ``dvc repro`` (``DVC_STAGE`` set): when dvc dies (kill -9), end this run too (SIGTERM to itself),
    so that no orphan keeps writing into the ``.partial`` folder the next ``dvc repro`` resumes. A run started
    by hand (e.g. under nohup) is left alone: its parent's death says nothing about it."""
    import signal
    import threading

    parent = os.getppid()
    if not os.environ.get("DVC_STAGE") or parent <= 1:
        return

    def watch():
        while os.getppid() == parent:
            time.sleep(poll_s)
        notice(f"the process that started this run (pid {parent}, dvc) has ended: stopping, so that no orphan "
               "writes into what its rerun uses")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="lib.stage-parent", daemon=True).start()


def main(argv=None) -> int:
    _skip_iri_grammar()
    with _stop_on_sigterm():
        _end_with_parent()
        return _main(argv)


def _main(argv) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.stage", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", nargs="?")
    parser.add_argument("out_dir", nargs="?")
    parser.add_argument("--params", nargs="*", default=[], metavar="SECTION")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--preset", help="a presets/*.yaml file naming notebook, out_dir and parameters")
    parser.add_argument("--params-file", default="params.yaml")
    parser.add_argument("--summary", metavar="PATH",
                        help="also write the stage's headline numbers, flat (lib.results.summarize of OUT_DIR/"
                             "metrics.json), to PATH: metrics/<stage>/<item>.json, what `dvc exp show` compares")
    args = parser.parse_args(argv)
    try:
        if args.preset:
            notebook, out_dir, parameters = load_preset(args.preset)
        else:
            if not (args.notebook and args.out_dir):
                parser.error("give NOTEBOOK and OUT_DIR, or --preset")
            notebook, out_dir = Path(args.notebook), Path(args.out_dir)
            parameters = load_params(args.params, args.params_file)
        parameters.update(parse_sets(args.set))
        declared = stage_for_notebook(notebook) if args.summary else None
        if args.summary and declared is None:
            raise ParameterError(f"--summary: {notebook} is no stage of lib.pipeline; its metrics are unknown")
        run_notebook(notebook, out_dir, parameters, validate=stage_check(notebook))
        if args.summary and int(os.environ.get("RANK", "0")) == 0:
            from lib.results import write_summary

            write_summary(declared.name, out_dir / "metrics.json", args.summary)
    except ParameterError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BusyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    except Stopped as stopped:
        notice("stopped; nothing was published (a rerun resumes from the .partial folder)")
        return stopped.code
    except Exception as error:  # papermill re-raises the notebook's exception: show its message, not the trace
        if type(error).__name__ == "PapermillExecutionError":
            print(f"error in {error.exec_count and f'cell {error.exec_count} of '}{args.notebook or args.preset}: "
                  f"{error.ename}: {error.evalue}", file=sys.stderr)
            return 1
        if isinstance(error, OSError) and error.filename:  # a file the user named or may fix: say which
            print(f"error: {error.filename}: {error.strerror or error}; fix its permissions or free space, or "
                  "choose another path", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())

