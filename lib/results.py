"""The metrics contract every analysis stage follows, and how the report reads it back.

A stage writes into its output directory:

- ``metrics.json``: ``{"arch", "plan", "seed", ..., "checkpoints": {"step_00": {"step", "sparsity", ...}}}``
  (what ``dvc metrics show`` lists; one entry per pruning checkpoint);
- ``plots/<name>.csv``: one row per checkpoint (sparsity and the metrics), for ``dvc plots``;
- ``per_image.csv`` (optional): one row per (checkpoint, image) so the report can bootstrap.

A prune stage writes ``pruning.json`` (:data:`MANIFEST`): its checkpoints, the analyses' input.
"""

from __future__ import annotations

import io as _io
import sys
from pathlib import Path

import pandas as pd

from lib import storage

MANIFEST = "pruning.json"


def list_checkpoints(pruning_dir: str | Path) -> list[dict]:
    """The manifest of a prune stage: one record per checkpoint, with an absolute ``path``."""
    pruning_dir = Path(pruning_dir)
    manifest = storage.load_json(pruning_dir / MANIFEST)
    return [{**r, "path": str(pruning_dir / r["file"])} for r in manifest["checkpoints"]]


def source_lineage(pruning_dir: str | Path) -> dict:
    """What an analysis's metrics.json says about the networks it scored, from its source's manifest: ``seed``
    (the network's, params.yaml ``seeds``), ``control`` (None: a pruned plan; ``retrained``; ``random_init``)
    and ``control_of`` (the pruned plan a retrained control follows). None where the manifest predates them."""
    manifest = storage.load_json(Path(pruning_dir) / MANIFEST)
    return {key: manifest.get(key) for key in ("seed", "control", "control_of")}


def step_key(step: int) -> str:
    return f"step_{int(step):02d}"


def save_stage_metrics(out_dir: str | Path, rows: list[dict], plot: str = "curve", per_image: pd.DataFrame | None = None,
                       **info) -> Path:
    """Write metrics.json, plots/<plot>.csv and (optionally) per_image.csv for one stage run."""
    out_dir = Path(out_dir)
    if not rows:
        raise ValueError("no checkpoint rows to save")
    missing = [i for i, r in enumerate(rows) if "step" not in r or "sparsity" not in r]
    if missing:
        raise ValueError(f"rows {missing} lack 'step' or 'sparsity'; every row describes one checkpoint")
    storage.save_json(out_dir / "metrics.json", {**info, "checkpoints": {step_key(r["step"]): r for r in rows}})
    _save_csv(out_dir / "plots" / f"{plot}.csv", pd.DataFrame(rows))
    if per_image is not None:
        _save_csv(out_dir / "per_image.csv", per_image)
    return out_dir / "metrics.json"


def _save_csv(path: Path, frame: pd.DataFrame) -> None:
    buffer = _io.StringIO()
    frame.to_csv(buffer, index=False)
    storage.write_bytes(path, buffer.getvalue().encode())


def save_figure(fig, out_dir: str | Path, name: str) -> Path:
    """Save a matplotlib figure as plots/<name>.png atomically (declared as a DVC image plot).

    In a notebook the cell shows that same image and the figure is closed: it is drawn and compressed once, not
    a second time by the inline backend at the end of the cell (seconds for a figure of many panels)."""
    buffer = _io.BytesIO()
    # zlib level 3, not PIL's 6: a third of the time on the galleries' photographs, files about 10% larger
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight", pil_kwargs={"compress_level": 3})
    path = storage.write_bytes(Path(out_dir) / "plots" / f"{name}.png", buffer.getvalue())
    _show_in_notebook(fig, buffer.getvalue())
    return path


def _show_in_notebook(fig, png: bytes) -> None:
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if getattr(shell, "kernel", None) is None:  # not in a notebook's kernel (a script, the tests, lib.redraw)
        return
    import matplotlib.pyplot as plt
    from IPython.display import Image, display

    plt.close(fig)
    display(Image(data=png))


def read_stage_metrics(path: str | Path) -> pd.DataFrame:
    """One stage's metrics.json as a table: a row per checkpoint, with the stage's info columns."""
    data = storage.load_json(path)
    info = {k: v for k, v in data.items() if k != "checkpoints" and not isinstance(v, (dict, list))}
    rows = [{**info, **{k: v for k, v in row.items() if not isinstance(v, (dict, list))}}
            for row in data.get("checkpoints", {}).values()]
    return pd.DataFrame(rows)


def collect(root: str | Path, stage: str) -> pd.DataFrame:
    """Every ``metrics.json`` under ``root/stage`` (all architectures and runs) as one table."""
    paths = sorted(Path(root, stage).glob("**/metrics.json"))
    frames = [read_stage_metrics(p).assign(source=str(p)) for p in paths if ".partial" not in str(p)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ----------------------------------------------------------------------------- flat summaries for dvc exp show
SUMMARY_ROOT = "metrics"  # git-tracked: metrics/<stage>/<item>.json, the `metrics:` of dvc.yaml


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return None if value != value else value  # NaN: none


def summarize(stage: str, metrics: dict) -> dict:
    """A stage's headline numbers, flat and short, for ``dvc exp show``.

    The headline metrics are the stage's declared ones (``lib.pipeline.STAGES[stage].metrics``) that the
    report tests (``tested``). Per checkpoint table (``{"checkpoints": {...}}``): for each such column
    ``<column>_dense`` (the first checkpoint), ``<column>_best`` (best in the declared direction) and
    ``<column>_last`` (the last checkpoint), and ``sparsity_last``. Without checkpoints (training): the
    top-level values of the declared names. Only numbers; missing or non-numeric values are left out.
    """
    from lib.pipeline import STAGES

    declared = [m for m in STAGES[stage].metrics if m.tested]
    rows = sorted(metrics.get("checkpoints", {}).values(), key=lambda r: r.get("step", 0))
    out = {}
    if not rows:
        for key, value in metrics.items():
            if any(m.matches(key) for m in declared) and _number(value) is not None:
                out[key] = round(_number(value), 6)
        return out
    columns = dict.fromkeys(k for r in rows for k in r)
    for column in columns:
        metric = next((m for m in declared if m.matches(column)), None)
        values = [_number(r.get(column)) for r in rows]
        present = [v for v in values if v is not None]
        if metric is None or not present:
            continue
        if values[0] is not None:
            out[f"{column}_dense"] = round(values[0], 6)
        out[f"{column}_best"] = round(max(present) if metric.higher_is_better else min(present), 6)
        if values[-1] is not None:
            out[f"{column}_last"] = round(values[-1], 6)
    if _number(rows[-1].get("sparsity")) is not None:
        out["sparsity_last"] = round(_number(rows[-1]["sparsity"]), 6)
    return out


def write_summary(stage: str, metrics_path: str | Path, summary_path: str | Path) -> Path:
    """Write :func:`summarize` of a stage's ``metrics.json`` to ``summary_path`` (``metrics/<stage>/<item>.json``)."""
    return storage.save_json(summary_path, summarize(stage, storage.load_json(metrics_path)))


def experiments_table(root: str | Path = ".") -> pd.DataFrame:
    """The workspace's flat summaries (``metrics/<stage>/<item>.json``) as one readable table: a row per
    (stage, item, metric), columns ``dense``, ``best``, ``last`` (a stage's single values, e.g. training's
    ``test_acc``, under ``value``). What ``dvc exp show`` compares across experiments, for one workspace."""
    records = []
    for path in sorted(Path(root, SUMMARY_ROOT).glob("*/*.json")):
        for key, value in storage.load_json(path).items():
            metric, _, kind = key.rpartition("_")
            if kind not in ("dense", "best", "last") or not metric:
                metric, kind = key, "value"
            records.append({"stage": path.parent.name, "item": path.stem, "metric": metric, "kind": kind,
                            "number": value})
    if not records:
        return pd.DataFrame(columns=["stage", "item", "metric", "dense", "best", "last", "value"])
    table = pd.DataFrame(records).pivot_table(index=["stage", "item", "metric"], columns="kind", values="number",
                                              aggfunc="first")
    table = table.reindex(columns=[c for c in ("dense", "best", "last", "value") if c in table.columns])
    table.columns.name = None
    return table.reset_index()


def main(argv=None) -> int:
    """``python -m lib.results``: the workspace's flat summaries (``metrics/``) as one table (:func:`experiments_table`)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    table = experiments_table(args[0] if args else ".")
    if table.empty:
        print(f"no summaries under {SUMMARY_ROOT}/ (a stage writes them when `dvc repro` runs it)")
        return 0
    with pd.option_context("display.width", 120, "display.max_rows", None, "display.precision", 3):
        print(table.to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
