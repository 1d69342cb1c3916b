"""RQ1 end to end: attribution maps of every checkpoint of a pruning run, scored against ground-truth masks.

``score_checkpoints(source, data, ...)`` runs the analyses' checkpoint loop (``lib.analysis``) over a
prune stage's checkpoints and, for each checkpoint, attributes the
predicted class of every image in batches (all attributions of a batch share one forward pass, see
``lib.interpret.methods.Attributor``), turns the attributions into relevance maps at the mask's
resolution and scores them. Everything that does not depend on the checkpoint (the ground truth and its
distance transform, the uniform-map baseline, the normalised inputs) is computed once, before the loop.
With ``state_dir``, every finished checkpoint is kept there, and a rerun after an interruption picks
up where the first one stopped.

:func:`configure` checks and parses the stage's parameters once, into the :class:`InterpretRun` that :func:`score`
runs; the stage's check (:func:`check_stage`) is the same call before the notebook starts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lib import analysis
from lib.analysis import Scored, digest
from lib.interpret.methods import Attributor, check_attribution_names, create_attribution, default_attributions
from lib.interpret.metrics import FAITHFULNESS, LOCALISATION, GroundTruth, relevance_map, uniform_scores
from lib.interpret.sanity import sanity_check, verdicts
from lib.checkpoints import validate_source
from lib.data.transforms import normalize, to_tensor
from lib.models import get_spec

METRICS = tuple(cls.name for cls in LOCALISATION + FAITHFULNESS)


@dataclass
class Scores:
    """What a run produced.

    rows: one dict per checkpoint (step, sparsity, test_acc, accuracy on the scored images where labels are
    known, wall and CPU seconds, and ``<metric>_<attribution>`` means); per_image: one row per (checkpoint, image);
    baseline: mean scores of a uniform map (``uniform_<metric>``); gallery: the maps of the first images.
    """

    rows: list[dict]
    per_image: pd.DataFrame
    attributions: list[str]
    baseline: dict[str, float]
    gallery: dict = field(default_factory=dict)
    sanity: dict = field(default_factory=dict)  # per attribution: the randomisation test's verdict (lib.interpret.sanity)


@dataclass(frozen=True)
class InterpretRun:
    """RQ1's run with every parameter checked and parsed (:func:`configure`): what notebook 03 runs (:func:`score`).

    ``attributions``: names of ``lib.interpret.ATTRIBUTIONS`` (None: every one that applies to the model family);
    ``attribution_options``: {attribution: {option: value}}; ``metrics``: the scores computed, names of ``METRICS``;
    the rest as :func:`score_checkpoints` describes them."""

    source: str
    attributions: tuple[str, ...] | None = None
    attribution_options: dict = field(default_factory=dict)
    cam_layer: str | None = None
    metrics: tuple[str, ...] = METRICS
    pointing_tolerance: float = 15.0
    perturbation_steps: int = 16
    blur_sigma: float = 5.0
    batch_size: int = 16
    eval_batch_size: int = 128
    gallery_size: int = 4
    sanity_images: int = 0
    sanity_seed: int = 0
    sanity_threshold: float = 0.5
    device: str | None = "cpu"
    state_dir: str | None = None


def configure(source, attributions=None, attribution_options: dict | None = None, cam_layer: str | None = None,
              metrics=None, pointing_tolerance: float = 15.0, perturbation_steps: int = 16, blur_sigma: float = 5.0,
              batch_size: int = 16, eval_batch_size: int = 128, gallery_size: int = 4, sanity_images: int = 0,
              sanity_seed: int = 0, sanity_threshold: float = 0.5, device: str | None = "cpu", state_dir=None,
              exists: bool = True) -> InterpretRun:
    """RQ1's one check and parse, before any compute: the scoring parameters of notebook 03 as an
    :class:`InterpretRun`. :func:`check_stage` calls it with ``exists`` False (before the notebook starts); the
    notebook (and :func:`score_checkpoints`) with ``exists`` True (``source`` is then a prune stage's output, every
    checkpoint the file that stage wrote) and runs what it returns (:func:`score`)."""
    from lib.interpret.methods import ATTRIBUTIONS
    from lib.params import check_at_least, check_options, keys_of

    check_at_least({"batch_size": batch_size, "eval_batch_size": eval_batch_size, "gallery_size": gallery_size,
                    "perturbation_steps": perturbation_steps, "pointing_tolerance": pointing_tolerance},
                   {"batch_size": 1, "eval_batch_size": 1, "perturbation_steps": 1, "pointing_tolerance": 0,
                    "gallery_size": 0})
    if attributions is not None:
        check_attribution_names(attributions)
        attributions = tuple(attributions)
    attribution_options = dict(attribution_options or {})
    check_attribution_names(attribution_options)
    for name, options in attribution_options.items():
        check_options(options, keys_of(ATTRIBUTIONS[name].__init__, ("self", "model")), name)
    try:
        metrics = check_metrics(metrics)
    except ValueError as error:
        raise ValueError(f"metrics: {error}") from None
    if not isinstance(sanity_images, int) or isinstance(sanity_images, bool) or sanity_images < 0:
        raise ValueError(f"sanity_images must be a number of images >= 0 (0: no randomisation test), got {sanity_images!r}")
    if not -1 < sanity_threshold <= 1:
        raise ValueError(f"sanity_threshold must be a rank correlation in (-1, 1], got {sanity_threshold!r}")
    if exists:
        validate_source(source)
    return InterpretRun(str(source), attributions, attribution_options, cam_layer, metrics, pointing_tolerance,
                        perturbation_steps, blur_sigma, batch_size, eval_batch_size, gallery_size, sanity_images,
                        sanity_seed, sanity_threshold, device, None if state_dir is None else str(state_dir))


def check_stage(p: dict) -> list[tuple]:
    """The attribution stage's parameters, checked before any compute (:func:`configure`, and the notebook's own:
    the ground truth it loads, the gallery it draws); returns the input paths it reads."""
    from lib.data.masks import DATASETS
    from lib.params import check_at_least

    check_at_least(p, {"n_images": 1, "gallery_size": 1})  # the gallery figure draws at least one image
    if p["dataset"] not in DATASETS:
        raise ValueError(f"unknown ground-truth dataset {p['dataset']!r}; choose one of {DATASETS}")
    configure(p.get("source"), p["attributions"], {"ig_smoothgrad": p["ig_smoothgrad"], "rollout": p["rollout"]},
              p["cam_layer"], p.get("metrics"), p["pointing_tolerance"], p["perturbation_steps"], p["blur_sigma"],
              p["batch_size"], p["eval_batch_size"], p["gallery_size"], p.get("sanity_images", 0),
              p.get("sanity_seed", 0), p.get("sanity_threshold", 0.5), p.get("device"), exists=False)
    if p["dataset"] == "voc12":
        return [("data_dir", Path(p["data_dir"]) / "ImageSets" / "Segmentation" / f"{p['split'] or 'val'}.txt", "voc")]
    return [("data_dir", p["data_dir"], "coco")] if p["dataset"] == "coco" else []


def check_data(data: dict) -> None:
    images, masks = np.asarray(data.get("images")), np.asarray(data.get("masks"))
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"data['images'] must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if masks.shape != images.shape[:3]:
        raise ValueError(f"data['masks'] {masks.shape} must match the images' (N, H, W) {images.shape[:3]}")


def check_metrics(metrics) -> tuple[str, ...]:
    """``metrics`` of :func:`score_checkpoints`: None (all of ``METRICS``) or a non-empty subset of them."""
    if metrics is None:
        return METRICS
    metrics = tuple(metrics)
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown or not metrics:
        raise ValueError(f"unknown or no metric(s) {unknown or metrics}; choose from {list(METRICS)}")
    return metrics


def score_model(model, attributions: list, inputs: torch.Tensor, truth: GroundTruth, batch_size: int,
                faithfulness=(), keep: int = 0, progress: bool = False,
                metrics=None) -> tuple[pd.DataFrame, dict]:
    """Scores of one model on every image (a row per image) and the relevance maps of the first ``keep`` images.
    ``metrics``: the localisation metrics to compute (names; None: all); ``faithfulness``: the metric objects."""
    from lib.storage import progress_bar as tqdm

    device = next(model.parameters()).device
    wanted = check_metrics(metrics)
    attributor, localisation = Attributor(attributions), [cls() for cls in LOCALISATION if cls.name in wanted]
    pooling = {m.name: m.pooling for m in attributions}
    columns: dict[str, list] = {"prediction": []}
    kept: dict[str, list] = {m.name: [] for m in attributions}
    for lo in tqdm(range(0, len(inputs), batch_size), desc="batches", leave=False, disable=not progress):
        x, part = inputs[lo:lo + batch_size].to(device), truth[lo:lo + batch_size]
        target, raw = attributor.attribute(x)
        columns["prediction"].append(target.cpu())
        for name, attributions in raw.items():
            maps = relevance_map(attributions, pooling[name], size=tuple(truth.masks.shape[-2:]))
            for metric in localisation:
                columns.setdefault(f"{metric.name}_{name}", []).append(metric(maps, part))
            for metric in faithfulness:
                columns.setdefault(f"{metric.name}_{name}", []).append(metric(model, x, target, maps.to(device)))
            if lo < keep:
                kept[name].append(maps[: keep - lo].cpu().numpy().astype(np.float32))
    frame = pd.DataFrame({k: torch.cat(v).numpy() for k, v in columns.items()})
    return frame, {k: np.concatenate(v) for k, v in kept.items() if v}


def score_checkpoints(source, data: dict, attributions: list[str] | None = None, attribution_options: dict | None = None,
                      cam_layer: str | None = None, tolerance: float = 15.0, perturbation_steps: int = 16,
                      blur_sigma: float = 5.0, batch_size: int = 16, eval_batch_size: int = 128, gallery_size: int = 4,
                      device: str | None = "cpu", state_dir=None, progress: bool = True, metrics=None,
                      sanity_images: int = 0, sanity_seed: int = 0, sanity_threshold: float = 0.5) -> Scores:
    """Attribute and score every checkpoint of ``source`` on ``data`` (a ``lib.data.masks`` dict).

    attributions: names from ``lib.interpret.ATTRIBUTIONS`` (default: every attribution of the model family that applies
    to the model, ``lib.interpret.methods.default_attributions``);
    attribution_options: {attribution: {option: value}} (e.g. ``{"ig_smoothgrad": {"steps": 50, "samples": 2}}``);
    tolerance: the pointing game's (:func:`configure`'s ``pointing_tolerance``), in pixels; perturbation_steps, blur_sigma: deletion/insertion curves;
    batch_size: images per attribution call; eval_batch_size: images per forward pass of the perturbation curves;
    state_dir: where each finished checkpoint is kept, so that a rerun after an interruption resumes
    (``lib.analysis``);
    device: where the models run (None: the GPU when there is one, see ``lib.distributed.default_device``);
    metrics: the scores to compute, names of ``METRICS`` (None: all). ``["rma", "rra"]`` skips the pointing
    game, Gini and the deletion/insertion curves (the curves cost ``2 x perturbation_steps`` forward passes
    per image and attribution);
    sanity_images: the model parameter randomisation test (``lib.interpret.sanity``) on the first this many images
    of every checkpoint (0: none): the maps of the same network with every layer re-initialised (``sanity_seed``)
    are compared with its own (``sanity_<attribution>``: mean Spearman rank correlation; ``random_rma_``,
    ``random_rra_``: the randomised maps' scores, a floor); an attribution whose correlation reaches
    ``sanity_threshold`` at some checkpoint fails (``Scores.sanity``). It costs one more attribution pass of those
    images per checkpoint (the trained network's maps are RQ1's own).

    :func:`configure`, then :func:`score`.
    """
    return score(configure(source, attributions, attribution_options, cam_layer, metrics, tolerance, perturbation_steps,
                           blur_sigma, batch_size, eval_batch_size, gallery_size, sanity_images, sanity_seed,
                           sanity_threshold, device, state_dir), data, progress)


def score(run: InterpretRun, data: dict, progress: bool = True) -> Scores:
    """Attribute and score every checkpoint of a checked :class:`InterpretRun` on ``data`` (a ``lib.data.masks``
    dict: its images and masks are checked here, before the first forward pass)."""
    from lib.distributed import default_device

    check_data(data)
    device = run.device or default_device()
    attributions, attribution_options, cam_layer, metrics = (run.attributions, run.attribution_options, run.cam_layer,
                                                             run.metrics)
    gallery_size, sanity_images, sanity_seed = run.gallery_size, run.sanity_images, run.sanity_seed
    truth = GroundTruth(torch.from_numpy(np.asarray(data["masks"])), run.pointing_tolerance)
    faithfulness = [cls(run.perturbation_steps, run.eval_batch_size, run.blur_sigma)
                    for cls in FAITHFULNESS if cls.name in metrics]
    baseline = {f"uniform_{k}": float(v.mean()) for k, v in uniform_scores(truth).items() if k in metrics}
    key = {"metrics": list(metrics), "attributions": attributions, "options": attribution_options, "cam_layer": cam_layer,
           "tolerance": run.pointing_tolerance, "perturbation_steps": run.perturbation_steps,
           "blur_sigma": run.blur_sigma, "batch_size": run.batch_size, "eval_batch_size": run.eval_batch_size,
           "gallery_size": gallery_size,
           **({"sanity": [sanity_images, sanity_seed]} if sanity_images else {}),
           "data": digest(*(data.get(k) for k in ("images", "masks", "labels", "ids")))}
    images = to_tensor(np.asarray(data["images"]))
    inputs_by_norm: dict[tuple, torch.Tensor] = {}

    def score_one(record: dict, model) -> Scored:
        started, cpu_started = time.perf_counter(), time.process_time()
        spec = get_spec(record["model"])
        names = list(attributions or default_attributions(model, spec))
        chosen = [create_attribution(n, model, spec, cam_layer=cam_layer, **attribution_options.get(n, {})) for n in names]
        # channels_last: oneDNN's convolutions run about 1.4x faster in it on CPU (benchmarks/interpret.py).
        layout = torch.channels_last if spec.family == "cnn" else torch.contiguous_format
        norm = (spec.mean, spec.std, layout)
        if norm not in inputs_by_norm:
            inputs_by_norm[norm] = normalize(images, spec.mean, spec.std).contiguous(memory_format=layout)
        model.to(memory_format=layout)
        frame, maps = score_model(model, chosen, inputs_by_norm[norm], truth, run.batch_size, faithfulness,
                                  keep=max(gallery_size, sanity_images), progress=progress, metrics=metrics)
        sanity = {}
        if sanity_images:
            def make(network):
                return [create_attribution(n, network, spec, cam_layer=cam_layer, **attribution_options.get(n, {}))
                        for n in names]
            count = min(sanity_images, len(truth))
            sanity = sanity_check(model, make, inputs_by_norm[norm][:count], truth[:count], run.batch_size, sanity_seed,
                                  trained_maps=maps, targets=torch.tensor(frame["prediction"].to_numpy()[:count]))
            sanity = {c: float(sanity[c].mean()) for c in sanity.columns}
        maps = {name: kept[:gallery_size] for name, kept in maps.items()}
        frame = describe_images(frame, record, data)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        row = {"step": record["step"], "sparsity": record["sparsity"], "test_acc": record.get("test_acc"),
               **({"scored_acc": float(frame["correct"].mean())} if "correct" in frame else {}),
               "seconds": round(seconds, 3), "cpu_seconds": round(cpu_seconds, 3),
               **{c: float(frame[c].mean()) for c in frame.columns if c.split("_")[0] in METRICS}, **sanity}
        return Scored(row, frame, {"maps": maps, "names": names})

    done = analysis.score_checkpoints(run.source, score_one, key, run.state_dir, device=device, progress=progress)
    keep = min(gallery_size, len(truth))
    gallery = {"images": np.asarray(data["images"])[:keep], "masks": np.asarray(data["masks"])[:keep],
               "ids": np.asarray(data.get("ids", np.arange(keep)))[:keep],
               "maps": {step: extra["maps"] for step, extra in done.extras.items()},
               "sparsity": {r["step"]: r["sparsity"] for r in done.records}}
    names = done.extras[done.records[-1]["step"]]["names"] if done.records else None
    return Scores(done.rows, done.items, names, baseline, gallery,
                  verdicts(done.rows, names or [], run.sanity_threshold) if sanity_images else {})


def describe_images(frame: pd.DataFrame, record: dict, data: dict) -> pd.DataFrame:
    """Prefix a checkpoint's per-image scores with the checkpoint, the image id, and the label where known."""
    frame.insert(0, "image", np.asarray(data.get("ids", np.arange(len(frame)))).astype(str))
    if data.get("labels") is not None:
        frame.insert(2, "label", np.asarray(data["labels"]))
        frame.insert(3, "correct", (frame["prediction"] == frame["label"]).astype(float))
    frame.insert(0, "step", record["step"])
    frame.insert(1, "sparsity", record["sparsity"])
    return frame
