"""A notebook as ``lib.stage`` runs it: its jupytext twin read into cells, and its ``parameters`` cell (names,
defaults, declared types) that every parameter is checked against before a kernel runs a cell."""

from __future__ import annotations

import ast
from pathlib import Path

from lib.params import ParameterError, kinds_errors, renamed_hint

PARAMETERS_TAG = "parameters"


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


def check_parameter_types(notebook: str | Path, parameters: dict, known: dict | None = None) -> None:
    """Each value against the type the ``parameters`` cell declares (``n_images: int | None = 100``) or else the
    type of its default: an integer default wants an integer (``epochs: 1.5`` is refused), a number accepts an
    integer, a None default anything."""
    known = notebook_parameters(notebook) if known is None else known
    annotations = notebook_annotations(notebook)
    errors = []
    for name, value in parameters.items():
        if name in known and name != "out_dir":
            errors += kinds_errors(name, value, known[name], annotations.get(name))
    if errors:
        raise ParameterError(f"{Path(notebook).name}: parameter {'; '.join(errors)}")
