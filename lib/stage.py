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
the same notebook, parameters and code; another one is moved aside (``OUT_DIR.partial.stale-<hash>``), never
deleted. Parameter values are checked against the types of the notebook's defaults, and by ``validate``,
before the notebook's first cell runs (the kernel starts meanwhile, so that its imports overlap the checks',
and is stopped when one fails); notices the library prints inside the notebook (resuming, ignoring a state of
another run) are relayed to the terminal.

The runner's jobs, one module each: :mod:`lib.notebook` (the twin's cells, the parameters cell and its checks),
:mod:`lib.params` (parameter files, ``--set`` values, the one type checker), :mod:`lib.outputs` (OUT_DIR's
safety, markers, the ``.partial`` folder, publishing), :mod:`lib.kernel` (the early kernel, the notice relay);
this module runs them in order (:func:`run_notebook`) and is the command line (:func:`main`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import time
from pathlib import Path
from typing import Callable

from lib import settings
from lib.kernel import headless_kernel, NoticeRelay, start_kernel, stop_kernel  # noqa: F401  (this module's API)
from lib.notebook import (KERNELSPEC, PARAMETERS_TAG, check_parameter_types, check_parameters,  # noqa: F401
                          notebook_annotations, notebook_parameters, read_notebook, twin_differs)
from lib.outputs import (MARKER, check_out_dir, code_key, input_paths, notice, parameters_hash,  # noqa: F401
                         prepare_partial, publish, read_marker, write_marker)
from lib.params import ParameterError, load_params, parse_sets, read_yaml  # noqa: F401  (this CLI's API)
from lib.pipeline import stage_for_notebook
from lib.project import enter_project, project_root  # noqa: F401  (enter_project: this module's API before lib.project)
from lib.storage import BusyError, CheckpointError


def _children_cpu() -> float:
    """User + system seconds of this process's finished children (the notebook kernels)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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
    rank = settings.rank()
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

            with tempfile.TemporaryDirectory() as scratch, headless_kernel():
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
        relay = NoticeRelay(notebook.stem)
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

            # every checkpoint the analysis will score is the one its prune stage wrote, of the stage's arch; a
            # population stage (no seed in its matrix: forget) reads each seed's run, <source>/seed<k>
            sources = ([parameters["source"]] if "seed" in stage.matrix or "seeds" not in parameters
                       else [Path(parameters["source"]) / f"seed{seed}" for seed in parameters["seeds"]])
            for source in sources:
                validate_source(source, parameters.get("arch"))

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
    if not settings.under_dvc() or parent <= 1:
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
        if args.summary and settings.rank() == 0:
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
