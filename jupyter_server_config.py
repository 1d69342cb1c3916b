"""The Jupyter server of `make lab` (passed as --config; Jupyter does not look for it by itself).

Every notebooks/NN_*.ipynb is paired with its jupytext twin NN_*.py (notebooks/jupytext.toml): a save in Lab
writes both, and DVC depends on the twin. This hook makes the .ipynb that a save writes hold only what the twin
holds (cells, their ids and tags) plus the kernelspec, so saving a notebook you opened and ran without editing it
writes the bytes git already has. Outputs stay in the open tab; they are not written to disk (docs/jupyterlab.md).
"""

from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent / "notebooks"


def keep_only_the_twins_content(model, path, contents_manager, **kwargs):
    """Pre-save hook: outputs, execution counts and every metadata key but a cell's tags, the kernelspec and the
    language's name are dropped from a notebook saved into notebooks/ (what the twin and git hold)."""
    if model.get("type") != "notebook" or not path.endswith(".ipynb") or model.get("content") is None:
        return
    if Path(contents_manager.root_dir, path.lstrip("/")).resolve().parent != NOTEBOOKS:
        return  # a notebook elsewhere (a scratch copy, an executed one under data/) is saved as it is
    notebook = model["content"]
    for cell in notebook["cells"]:
        # jupytext.toml keeps the same cell metadata in the twin (cell_metadata_filter = "tags,-all")
        cell["metadata"] = {key: value for key, value in cell["metadata"].items() if key == "tags"}
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
    metadata = notebook["metadata"]
    kept = {"kernelspec": metadata["kernelspec"]} if "kernelspec" in metadata else {}
    if "name" in metadata.get("language_info", {}):  # the rest (version, lexer) is the machine's, not the code's
        kept["language_info"] = {"name": metadata["language_info"]["name"]}
    notebook["metadata"] = kept


c.ContentsManager.pre_save_hook = keep_only_the_twins_content  # noqa: F821 (c: the config that Jupyter passes)
