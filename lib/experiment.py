"""Apply a parameter file to the DVC pipeline with ``dvc exp run``, after checking it end to end.

    python -m lib.experiment presets/study_a.params.yaml [TARGET ...] [--name NAME] [--queue] [--dry]

A parameter file has ``params.yaml``'s schema (the same top-level blocks; ``archs`` x ``plans`` x ``seeds``
is the stages' matrix, each list non-empty; controls among the plans checked against the plans they control). Before anything runs, DVC itself templates every stage of ``dvc.yaml`` with the file,
and for every stage: its notebook knows every parameter it is given, and the stage's own check
(``check`` of its declaration in ``lib.pipeline``) passes: model names build, recipes, plans, datasets and
analysis options parse, and every input file or folder that no stage produces
exists (the error names the parameter, the path and how to get the data). Only then is the file
copied to ``params.yaml`` and ``dvc exp run`` started (TARGETs: only those stages and what they need).
``--queue`` queues the experiment for ``dvc queue start`` and puts ``params.yaml`` back; ``--dry`` checks
and prints the stages' commands without running anything. By hand, without the checks:

    cp presets/study_a.params.yaml params.yaml && dvc exp run -n study-a
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lib.params import renamed_hint
from lib.pipeline import HOW_TO_GET, check_matrix, stage_of
from lib.stage import ParameterError, check_parameters, load_params, notebook_parameters, parse_sets

class PresetError(ValueError):
    """The parameter file cannot run: the message names the stage, the parameter and the fix."""


@dataclass
class Stage:
    """One resolved stage of dvc.yaml: its command and what that command runs with."""

    name: str
    cmd: str
    outs: list[str]
    module: str = ""                 # lib.stage or lib.mis.embeddings
    notebook: str | None = None
    out_dir: str = ""
    parameters: dict = field(default_factory=dict)   # what the command passes (sections + --set)
    upstream: set = field(default_factory=set)       # names of the stages it needs


# ----------------------------------------------------------------------------- resolving with DVC
def check_schema(params: dict, reference: dict, source: str) -> None:
    """The same top-level blocks as ``params.yaml`` (the per-arch and per-plan sections are checked with the
    stages that read them)."""
    if not isinstance(params, dict):
        raise PresetError(f"{source} is not a YAML mapping of parameter blocks")
    missing, unknown = sorted(set(reference) - set(params)), sorted(set(params) - set(reference))
    if missing or unknown:
        raise PresetError(f"{source} must have params.yaml's top-level blocks {sorted(reference)}; "
                          f"missing {missing}, unknown {unknown}{renamed_hint(unknown, reference)}")


def check_plans(params: dict, source: str) -> None:
    """The matrix (``archs``, ``plans``, ``seeds``: non-empty, each with its sections) and the controls among the
    plans (``lib.prune.runs.check_controls``), before DVC templates anything."""
    from lib.prune.runs import check_controls

    try:
        check_matrix(params, source)
        check_controls(params, source)
    except ValueError as error:
        raise PresetError(str(error)) from None


def resolve(params_file: str | Path, root: str | Path = ".") -> list[Stage]:
    """Every stage of ``root/dvc.yaml`` templated by DVC with ``params_file``, dependencies first."""
    import networkx as nx
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    root, params_file = Path(root), Path(params_file)
    try:
        params = yaml.safe_load(params_file.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise PresetError(f"cannot read {params_file}: {error}") from None
    check_schema(params, yaml.safe_load((root / "params.yaml").read_text()), str(params_file))
    check_plans(params, str(params_file))
    with tempfile.TemporaryDirectory() as scratch:  # DVC reads params.yaml beside dvc.yaml: a scratch project
        shutil.copy(root / "dvc.yaml", scratch)
        shutil.copy(params_file, Path(scratch) / "params.yaml")
        (Path(scratch) / ".dvc").mkdir()
        (Path(scratch) / ".dvc" / "config").write_text("[core]\n    no_scm = true\n")
        try:
            index = Repo(scratch).index
            graph = index.graph  # edges point from a stage to the stages it depends on
            by_node = {s: Stage(s.name, s.cmd, [str(o.def_path) for o in s.outs]) for s in index.stages}
            for node, stage in by_node.items():
                stage.upstream = {by_node[n].name for n in nx.descendants(graph, node)}
            order = [by_node[n] for n in reversed(list(nx.topological_sort(graph)))]
        except DvcException as error:
            raise PresetError(f"dvc.yaml cannot be templated with {params_file}: {error}") from None
    for stage in order:
        _parse_command(stage, params_file)
    return order


def _parse_command(stage: Stage, params_file: Path) -> None:
    """Fill in what a ``python -m lib.stage`` / ``lib.mis.embeddings`` command runs with."""
    words = shlex.split(stage.cmd)
    if words[:2] != ["python", "-m"] or words[2] not in ("lib.stage", "lib.mis.embeddings"):
        raise PresetError(f"stage {stage.name}: cannot read its command {stage.cmd!r}")
    stage.module = words[2]
    parser = argparse.ArgumentParser(add_help=False)
    if stage.module == "lib.stage":
        parser.add_argument("notebook")
    parser.add_argument("out_dir")
    parser.add_argument("--params", nargs="*", default=[])
    parser.add_argument("--set", nargs="*", default=[])
    parser.add_argument("--summary")  # the flat summary it writes (metrics/<stage>/<item>.json)
    args = parser.parse_args(words[3:])
    stage.notebook, stage.out_dir = getattr(args, "notebook", None), args.out_dir
    try:
        stage.parameters = {**load_params(args.params, params_file), **parse_sets(args.set)}
    except ParameterError as error:
        raise PresetError(f"stage {stage.name}: {error}") from None


# ----------------------------------------------------------------------------- checking every stage
def check(stages: list[Stage], root: str | Path = ".", targets=(), paths: bool = True) -> list[Stage]:
    """Check the stages that ``dvc exp run TARGETS`` would run (all without targets); returns them.

    Parameters are checked stage by stage (the first error stops); then every missing input is listed at once.
    Relative paths are the repository root's (``root``), as for the stages.
    """
    root = Path(root).resolve()
    chosen = _chosen(stages, targets)
    produced = [Path(out) for stage in stages for out in stage.outs]
    missing = {}  # kind -> {path: (parameter, stages)}
    previous = os.getcwd()
    os.chdir(root)
    try:
        for stage in chosen:
            try:
                values = _effective(stage, root)
                if stage_of(stage.name).name == "prune" and (values["models"] or values["plans"]):
                    raise ValueError("models/plans make a grid of runs (the presets of notebook 02); a pipeline "
                                     "stage prunes the model its train stage wrote with the plan")
                checker = stage_of(stage.name).checker()
                needed = checker(values) if checker else []
            except PresetError:
                raise
            except (ParameterError, ValueError, TypeError, KeyError) as error:
                raise PresetError(f"stage {stage.name}: {error}") from None
            for name, path, kind in needed:
                path = Path(path)
                produced_here = any(path == out or out in path.parents for out in produced)  # a stage writes it
                if paths and not produced_here and not path.exists():
                    missing.setdefault(kind, {}).setdefault(path, (name, []))[1].append(stage.name)
    finally:
        os.chdir(previous)
    if missing:
        lines = ["input data missing: get it, or point the parameters at your copy"]
        for kind, found in missing.items():
            lines.append(f"- {HOW_TO_GET[kind]}:")
            lines += [f"    {path}  ({name}; stages {', '.join(stages[:2])}{', ...' if len(stages) > 2 else ''})"
                      for path, (name, stages) in found.items()]
        raise PresetError("\n".join(lines))
    return chosen


def _chosen(stages: list[Stage], targets) -> list[Stage]:
    if not targets:
        return list(stages)
    names = set()
    for target in targets:  # a stage name, or a matrix stage's base name (all of its items)
        hits = {s.name for s in stages if s.name == target or s.name.split("@")[0] == target}
        if not hits:
            known = sorted({s.name.split("@")[0] for s in stages})
            raise PresetError(f"no stage {target!r} in dvc.yaml; stages: {known}")
        names |= hits
    names |= {u for s in stages if s.name in names for u in s.upstream}
    return [s for s in stages if s.name in names]


def _effective(stage: Stage, root: Path) -> dict:
    """The values the stage's code sees: the notebook's defaults, overridden by what the command passes."""
    if stage.module == "lib.mis.embeddings":
        missing = {"pool", "backends"} - set(stage.parameters)
        if missing:
            raise PresetError(f"stage {stage.name}: the parameters lack {sorted(missing)}")
        return stage.parameters
    notebook = root / stage.notebook
    check_parameters(notebook, {**stage.parameters, "out_dir": stage.out_dir})
    return {**notebook_parameters(notebook), **stage.parameters}


# ----------------------------------------------------------------------------- running
def experiment_command(name: str, targets=(), queue: bool = False) -> list[str]:
    return ["dvc", "exp", "run", "--name", name, *(["--queue"] if queue else []), *targets]


def default_name(params_file: str | Path) -> str:
    """``presets/study_a.params.yaml`` -> ``study-a`` (a valid experiment name)."""
    return Path(params_file).name.split(".")[0].replace("_", "-")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib.experiment", description=__doc__.split("\n\n")[0])
    parser.add_argument("params_file", help="a file in params.yaml's schema, e.g. presets/study_a.params.yaml")
    parser.add_argument("targets", nargs="*", help="stages to run with what they need (default: every stage)")
    parser.add_argument("--name", help="the experiment's name (default: from the file name, e.g. study-a)")
    parser.add_argument("--queue", action="store_true", help="queue it for `dvc queue start` instead of running it")
    parser.add_argument("--dry", action="store_true", help="check and print the commands; run nothing")
    args = parser.parse_args(argv)
    name = args.name or default_name(args.params_file)
    try:
        stages = check(resolve(args.params_file), targets=args.targets)
    except (PresetError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    command = experiment_command(name, args.targets, args.queue)
    print(f"{args.params_file}: {len(stages)} stages checked")
    if args.dry:
        for stage in stages:
            print(f"  {stage.name}: {stage.cmd}")
        print(f"to run: cp {args.params_file} params.yaml && {shlex.join(command)}")
        return 0
    params = Path("params.yaml")
    previous = params.read_bytes()
    if Path(args.params_file).resolve() != params.resolve():
        shutil.copy(args.params_file, params)
    try:
        return subprocess.run(command).returncode
    finally:
        if args.queue:  # the queued experiment holds its own copy of the parameters
            params.write_bytes(previous)
        else:
            print("params.yaml now holds the experiment's parameters (`git checkout params.yaml` restores the default)")


if __name__ == "__main__":
    sys.exit(main())
