"""The metrics contract every analysis stage follows, and how the report reads it back.

A stage writes into its output directory:

- ``metrics.json``: ``{"arch", "run", ..., "checkpoints": {"step_00": {"step", "sparsity", ...}}}``
  (what ``dvc metrics show`` lists; one entry per pruning checkpoint);
- ``plots/<name>.csv``: one row per checkpoint (sparsity and the metrics), for ``dvc plots``;
- ``per_image.csv`` (optional): one row per (checkpoint, image) so the report can bootstrap.

A pruning stage writes ``pruning.json`` (:data:`MANIFEST`): its checkpoints, the analyses' input.
"""

from __future__ import annotations

import io as _io
from pathlib import Path

import pandas as pd

from lib import io

MANIFEST = "pruning.json"


def list_checkpoints(pruning_dir: str | Path) -> list[dict]:
    """The manifest of a pruning stage: one record per checkpoint, with an absolute ``path``."""
    pruning_dir = Path(pruning_dir)
    manifest = io.load_json(pruning_dir / MANIFEST)
    return [{**r, "path": str(pruning_dir / r["file"])} for r in manifest["checkpoints"]]


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
    io.save_json(out_dir / "metrics.json", {**info, "checkpoints": {step_key(r["step"]): r for r in rows}})
    _save_csv(out_dir / "plots" / f"{plot}.csv", pd.DataFrame(rows))
    if per_image is not None:
        _save_csv(out_dir / "per_image.csv", per_image)
    return out_dir / "metrics.json"


def _save_csv(path: Path, frame: pd.DataFrame) -> None:
    buffer = _io.StringIO()
    frame.to_csv(buffer, index=False)
    io.write_bytes(path, buffer.getvalue().encode())


def save_figure(fig, out_dir: str | Path, name: str) -> Path:
    """Save a matplotlib figure as plots/<name>.png atomically (declared as a DVC image plot)."""
    buffer = _io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return io.write_bytes(Path(out_dir) / "plots" / f"{name}.png", buffer.getvalue())


def read_stage_metrics(path: str | Path) -> pd.DataFrame:
    """One stage's metrics.json as a table: a row per checkpoint, with the stage's info columns."""
    data = io.load_json(path)
    info = {k: v for k, v in data.items() if k != "checkpoints" and not isinstance(v, (dict, list))}
    rows = [{**info, **{k: v for k, v in row.items() if not isinstance(v, (dict, list))}}
            for row in data.get("checkpoints", {}).values()]
    return pd.DataFrame(rows)


def collect(root: str | Path, stage: str) -> pd.DataFrame:
    """Every ``metrics.json`` under ``root/stage`` (all architectures and runs) as one table."""
    paths = sorted(Path(root, stage).glob("**/metrics.json"))
    frames = [read_stage_metrics(p).assign(source=str(p)) for p in paths if ".partial" not in str(p)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
