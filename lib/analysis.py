"""The loop every analysis runs over the checkpoints of a prune stage, written once.

An analysis supplies only how to score one checkpoint: ``score(record, model) -> Scored`` (its row of
``metrics.json``, its rows of the per-item table, and whatever else its figures need). :func:`score_checkpoints`
does the rest, the same way for every analysis:

- checks the source before any compute (``lib.checkpoints.validate_source``);
- iterates the checkpoints with a progress bar (``lib.storage.progress_bar``), one model in memory at a time, on
  the analysis's device;
- with ``state_dir``, keeps every finished checkpoint there and, on a rerun after an interruption, reuses
  it instead of scoring again. A kept result is keyed by content: the checkpoint file's SHA-256, the
  analysis's ``key`` (its options and a digest of its inputs) and its code (the import closure of ``score``'s
  module, :func:`lib.imports.code_digest`), so a changed checkpoint, option, input or code is scored afresh
  and never mixed with results of other settings (a kept checkpoint is still read from
  disk, ``lib.checkpoints.iter_checkpoints`` loads each, but not scored);
- gathers the rows (each with the checkpoint's ``step``, ``sparsity`` and ``test_acc``, as
  ``lib.results.save_stage_metrics`` needs them) and the per-item tables into one.

The state files hold tensors, lists and numbers only: they are read back with ``weights_only=True``
(``lib.storage.load_torch``), like every other file of the pipeline.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from lib import storage
from lib.checkpoints import iter_checkpoints, validate_source
from lib.imports import code_digest
from lib.results import list_checkpoints, step_key

RECORD_KEYS = ("step", "sparsity", "test_acc")


@dataclass
class Scored:
    """What scoring one checkpoint gives.

    row: the checkpoint's metrics (``step``, ``sparsity`` and ``test_acc`` are added from the record where
    the row lacks them); items: its rows of the per-item table (None: the analysis keeps none);
    extra: anything else its figures need (arrays, tensors, tables, lists, numbers, strings).
    """

    row: dict
    items: pd.DataFrame | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class Checkpoints:
    """Every checkpoint's results, in the source's order: ``records`` (without the model), ``rows``, the
    per-item tables concatenated (``items``; None when the analysis keeps none), and ``extras`` by step."""

    records: list[dict]
    rows: list[dict]
    items: pd.DataFrame | None
    extras: dict[int, dict]


def digest(*values) -> str:
    """SHA-256 of arrays, tensors and JSON-able values: what an analysis's inputs are, for its state ``key``."""
    out = hashlib.sha256()
    for value in values:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        if isinstance(value, np.ndarray) and value.dtype != object:
            out.update(str((value.dtype.str, value.shape)).encode())
            out.update(np.ascontiguousarray(value).tobytes())
        elif isinstance(value, pd.DataFrame):
            out.update(pd.util.hash_pandas_object(value, index=False).to_numpy().tobytes())
            out.update(json.dumps(list(map(str, value.columns))).encode())
        else:
            out.update(json.dumps(value, sort_keys=True, default=str).encode())
    return out.hexdigest()


def checkpoint_digest(record: dict) -> str:
    """The content of a checkpoint: its file's SHA-256, or its record where it has no file."""
    if record.get("path") and Path(record["path"]).is_file():
        return storage.file_sha256(record["path"])
    return digest({k: v for k, v in record.items() if k != "path"})


class State:
    """Finished checkpoints on disk: ``state_dir/step_XX.<fingerprint>.pt``, one file per checkpoint and key.

    ``name``: a result derived from a checkpoint other than its own scores (e.g. MIS's controls of the dense
    checkpoint), kept as ``state_dir/<name>.<fingerprint>.pt``.
    """

    def __init__(self, state_dir, key: dict):
        self.dir = Path(state_dir) if state_dir else None
        self.key = digest(key)

    def path(self, record: dict, name: str | None = None) -> Path | None:
        if self.dir is None:
            return None
        content = self.key + checkpoint_digest(record) + (name or "")
        fingerprint = hashlib.sha256(content.encode()).hexdigest()[:16]
        return self.dir / f"{name or step_key(record['step'])}.{fingerprint}.pt"

    def load(self, record: dict, name: str | None = None) -> Scored | None:
        path = self.path(record, name)
        if path is None or not path.is_file():
            return None
        state = storage.load_torch(path)
        return Scored(decode(state["row"]), decode(state["items"]), decode(state["extra"]))

    def save(self, record: dict, scored: Scored, name: str | None = None) -> None:
        path = self.path(record, name)
        if path is not None:
            storage.save_torch(path, {"row": encode(scored.row), "items": encode(scored.items),
                                 "extra": encode(scored.extra)})


def score_checkpoints(source, score: Callable[[dict, torch.nn.Module], Scored], key: dict, state_dir=None,
                      steps=None, device: str | torch.device | None = "cpu", progress: bool = True,
                      desc: str = "checkpoints") -> Checkpoints:
    """Score every checkpoint of ``source`` (or only those of ``steps``) with ``score(record, model)``, the
    model in eval mode on ``device`` (None: the GPU when there is one, ``lib.distributed.default_device``).

    key: everything the results depend on besides the checkpoint and the device (the analysis's options, a
    :func:`digest` of its inputs); state_dir: where finished checkpoints are kept, so that a rerun
    resumes (None: nothing is kept).
    """
    from lib.distributed import default_device

    validate_source(source)
    device = device or default_device()
    # the code that scores: a kept result of other code is scored afresh, never mixed with the new code's
    code = code_digest([__name__, getattr(score, "__module__", None) or __name__])
    state = State(state_dir, {**key, "device": str(device), "code": code})
    wanted = None if steps is None else set(steps)
    records, rows, items, extras = [], [], [], {}
    for record, model in storage.progress_bar(iter_checkpoints(source), total=_checkpoints_to_load(source, wanted),
                                              desc=desc, disable=not progress):
        if wanted is not None and len(records) == len(wanted):
            break  # every requested step is done: load no more checkpoints
        if wanted is not None and record["step"] not in wanted:
            continue
        scored = state.load(record)
        if scored is None:
            scored = score(record, model.to(device).eval())
            scored.row = {**{k: record.get(k) for k in RECORD_KEYS if k not in scored.row}, **scored.row}
            state.save(record, scored)
        del model
        records.append(record)
        rows.append(scored.row)
        if scored.items is not None:
            items.append(scored.items)
        extras[record["step"]] = scored.extra
    return Checkpoints(records, rows, pd.concat(items, ignore_index=True) if items else None, extras)


def _checkpoints_to_load(source, wanted: set | None) -> int:
    """How many checkpoints :func:`score_checkpoints` loads (its progress bar's total): every one, or those up to
    the last wanted step (it loads them in order and stops there)."""
    steps = [record["step"] for record in list_checkpoints(source)]
    if wanted is None or not wanted <= set(steps):
        return len(steps)
    return max((steps.index(step) + 1 for step in wanted), default=0)


# ----------------------------------------------------------------------------- state files (weights_only)
def encode(value):
    """``value`` as tensors, lists, dicts and plain numbers, which ``torch.load(weights_only=True)`` reads
    back; :func:`decode` restores it exactly (tables with their column order and dtypes, arrays with theirs)."""
    if isinstance(value, pd.DataFrame):
        return {"__frame__": [(encode(c), str(value[c].dtype), encode(value[c].to_numpy())) for c in value.columns]}
    if isinstance(value, np.ndarray):
        if value.dtype == object or value.dtype.kind in "US":
            return {"__list__": [encode(v) for v in value.ravel().tolist()], "dtype": value.dtype.str,
                    "shape": list(value.shape)}
        return {"__array__": torch.from_numpy(np.array(value, order="C"))}  # a writable copy, 0-d kept 0-d
    if isinstance(value, torch.Tensor):
        return {"__tensor__": value.detach().cpu()}
    if isinstance(value, np.generic):
        return {"__scalar__": encode(np.asarray(value))}
    if isinstance(value, dict):
        return {"__dict__": [(encode(k), encode(v)) for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return {"__list__" if isinstance(value, list) else "__tuple__": [encode(v) for v in value]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot keep a {type(value).__name__} in an analysis's state; give arrays, tables, lists, "
                    "dicts, numbers or strings")


def decode(value):
    """The inverse of :func:`encode`."""
    if not isinstance(value, dict):
        return value
    if "__frame__" in value:
        return pd.DataFrame({decode(name): _column(decode(data), dtype) for name, dtype, data in value["__frame__"]})
    if "__array__" in value:
        return value["__array__"].numpy()
    if "__tensor__" in value:
        return value["__tensor__"]
    if "__scalar__" in value:
        return decode(value["__scalar__"])[()]
    if "__dict__" in value:
        return {decode(k): decode(v) for k, v in value["__dict__"]}
    if "__tuple__" in value:
        return tuple(decode(v) for v in value["__tuple__"])
    if "__list__" in value:
        items = [decode(v) for v in value["__list__"]]
        if "dtype" in value:
            out = np.empty(len(items), dtype=np.dtype(value["dtype"]))
            for index, item in enumerate(items):  # one by one: numpy would unpack items that are lists
                out[index] = item
            return out.reshape(value["shape"])
        return items
    raise ValueError(f"not an encoded value: keys {sorted(value)}")


def _column(values: np.ndarray, dtype: str) -> pd.Series:
    series = pd.Series(values)
    return series if str(series.dtype) == dtype else series.astype(dtype)
