"""Redraw a stage's figures from the tables it saved, without recomputing any model.

    python -m lib.redraw results/lite0/align/lite0/oneshot [results/...]

A stage's folder (``results/NAME`` of a notebook preset, ``data/<stage>/<arch>/<plan>``, or such a folder
collected into ``results/``) holds ``metrics.json``, ``plots/*.csv`` and, where it has them,
``per_image.csv`` / ``per_unit.csv``. Which stage wrote it follows from which of these tables are there;
its figures are drawn by the stage's own ``stage_figures`` (``lib.<stage>.plots``), the function its notebook
calls, from those files. Figures drawn from images or relevance maps (galleries, stimuli, MIS tasks) are not in
the tables and are left as they are, except RQ2's boxes gallery where the preset's dataset is at hand (the boxes
are in ``per_image.csv``). Chance levels come from ``metrics.json``; a folder written before it recorded them
takes them from the tables (categories of the trials, classes of the pool) or from the preset that wrote it
(``presets/NAME.yaml``: the models' ``num_classes``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from lib import storage
from lib.results import save_figure

# Figures drawn from what the tables do not hold (RQ2's gallery is redrawn where its preset's images are at hand).
NOT_REDRAWN = {"gallery": "relevance maps or images", "stimuli": "images", "mis_tasks": "images of the pool"}


def _preset_classes(folder: Path) -> int | None:
    """The number of classes of the preset that wrote ``folder`` (all its models agree), if it says."""
    import yaml

    preset = Path("presets") / f"{folder.name}.yaml"
    if not preset.is_file():
        return None
    models = (yaml.safe_load(preset.read_text()).get("parameters") or {}).get("models") or {}
    classes = {m.get("num_classes") for m in models.values() if isinstance(m, dict)}
    return classes.pop() if len(classes) == 1 and None not in classes else None


def _prune(folder: Path, metrics: dict) -> dict:
    from lib.prune.plots import stage_figures

    return stage_figures(pd.read_csv(folder / "plots" / "accuracy.csv"), metrics)


def _interpret(folder: Path, metrics: dict) -> dict:
    from lib.interpret.plots import stage_figures

    return stage_figures(pd.read_csv(folder / "plots" / "scores.csv"), metrics)


def _discover(folder: Path, metrics: dict) -> dict:
    from lib.discover.plots import stage_figures

    rows = pd.read_csv(folder / "plots" / "corloc.csv")
    figures = stage_figures(rows, metrics)
    gallery = _discovery_gallery(folder, metrics, rows)
    if gallery is not None:
        figures["gallery"] = gallery
    return figures


def _discovery_gallery(folder: Path, metrics: dict, rows: pd.DataFrame):
    """The boxes gallery from the saved boxes (per_image.csv) on the images of the preset's dataset, the same
    images the run drew (its ids are checked); None where the preset or its dataset is not at hand."""
    from lib.data.boxes import load_boxes
    from lib.discover.plots import gallery_steps, plot_gallery
    from lib.stage import load_preset, notebook_parameters

    preset = Path("presets") / f"{folder.name}.yaml"
    if not preset.is_file():
        return None
    notebook, _, parameters = load_preset(preset)
    p = {**notebook_parameters(notebook), **parameters}
    if not Path(p["dataset"]["root"]).exists():
        return None
    data = load_boxes(**p["dataset"]).with_boxes().sample(p["n_images"], seed=p["seed"])
    per_image = pd.read_csv(folder / "per_image.csv", dtype={"image": str})
    drawn = per_image.loc[per_image["step"] == per_image["step"].min(), "image"].tolist()
    if drawn != [str(i) for i in data.ids]:
        raise ValueError(f"{folder}/per_image.csv lists other images than {preset}'s dataset gives now: "
                         f"the gallery cannot be redrawn from it (rerun the preset)")
    return plot_gallery(data, per_image, gallery_steps(rows.to_dict("records"), p["gallery_rows"]),
                        p["gallery_images"], list(metrics["algorithms"]))


def _align(folder: Path, metrics: dict) -> dict:
    from lib.align.plots import stage_figures

    trials = pd.read_csv(folder / "per_image.csv", dtype={"condition": str})
    if "ood_acc" not in (metrics.get("chance") or {}):  # written before chance was recorded: every category occurs
        metrics = {**metrics, "chance": {"ood_acc": 1 / trials["category"].nunique()}}
    return stage_figures(pd.read_csv(folder / "plots" / "alignment.csv"), trials, metrics)


def _mis(folder: Path, metrics: dict) -> dict:
    from lib.mis.plots import stage_figures

    classes_csv = folder / "plots" / "mis_classes.csv"
    classes = pd.read_csv(classes_csv) if classes_csv.is_file() else pd.DataFrame()
    if "test_acc" not in (metrics.get("chance") or {}) and not classes.empty:  # written before chance was recorded
        metrics = {**metrics, "chance": {"test_acc": 1 / classes["class"].nunique()}}
    return stage_figures(pd.read_csv(folder / "plots" / "mis.csv"), pd.read_csv(folder / "per_unit.csv"),
                         pd.read_csv(folder / "plots" / "mis_layers.csv"), classes, metrics)


# The table that tells which stage wrote a folder, and the function that redraws that stage's figures.
STAGE_TABLES = {"accuracy.csv": _prune, "scores.csv": _interpret, "corloc.csv": _discover,
                "alignment.csv": _align, "mis.csv": _mis}


def redraw(folder: str | Path) -> dict[str, Path | None]:
    """Redraw the figures of the stage folder ``folder`` from its saved tables: name -> the PNG written, or None where the tables hold nothing to draw (no figure)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(folder)
    if not (folder / "metrics.json").is_file():
        raise FileNotFoundError(f"folder={str(folder)!r} has no metrics.json: pass a stage's output folder "
                                f"(results/NAME or data/<stage>/<arch>/<plan>)")
    metrics = storage.load_json(folder / "metrics.json")
    classes = _preset_classes(folder)
    if "test_acc" not in (metrics.get("chance") or {}) and classes:  # written before chance was recorded
        metrics["chance"] = {**(metrics.get("chance") or {}), "test_acc": 1 / classes}
    written = {}
    for table, draw in STAGE_TABLES.items():
        if (folder / "plots" / table).is_file():
            for name, fig in draw(folder, metrics).items():
                written[name] = None if fig is None else save_figure(fig, folder, name)
                if fig is not None:
                    plt.close(fig)
            return written
    raise FileNotFoundError(f"folder={str(folder)!r} has none of the tables figures are drawn from "
                            f"({', '.join('plots/' + t for t in STAGE_TABLES)}): nothing to redraw")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="stage output folders, e.g. results/lite0/align/lite0/oneshot")
    for folder in parser.parse_args(argv).folders:
        try:
            written = redraw(folder)
        except KeyError as error:  # a metrics.json of something else than a stage
            print(f"error: {folder}/metrics.json lacks {error}: it is no stage's output; pass a stage's output "
                  "folder (results/NAME or data/<stage>/<arch>/<plan>)", file=sys.stderr)
            return 2
        except (FileNotFoundError, ValueError) as error:  # the folder is no stage output, or a table is damaged
            print(f"error: {error}", file=sys.stderr)
            return 2
        for name, path in written.items():
            print(f"{folder}: {name}: {path if path is not None else 'nothing to draw, no figure'}")
        for name, source in NOT_REDRAWN.items():
            if (Path(folder) / "plots" / f"{name}.png").is_file() and name not in written:
                print(f"{folder}: {name}: not redrawn (drawn from {source}, which the tables do not hold)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
