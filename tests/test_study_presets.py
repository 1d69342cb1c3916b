"""The parameter files presets/study_{a,b}.params.yaml (paper scale), presets/lite0.params.yaml (the real-data
study) and lib.experiment, which applies them.

Each file is resolved by DVC's own templating against dvc.yaml and checked stage by stage; then it is
dry-run end to end: every stage of the pipeline, in DVC's order, on tiny stand-ins of its datasets written in
their real formats at the paths the file names (ImageNet's train/val/<wnid>/*.JPEG, VOCdevkit/VOC2012 with
palette masks and XML boxes, model-vs-human's two folder layouts and human trials, torchvision's GoogLeNet
weights file), with only sizes changed (epochs, image counts and sizes, LRR thresholds, targets, IG steps).
The Lite0 study runs on the real data of ../shared/data (COCO128, Tiny ImageNet, the ImageNet sample images) at
tiny counts and sizes, with a stand-in for model-vs-human, and skips where that data is absent.
The stages run in this process (the notebooks' cells executed in order, as papermill would, without a
kernel per stage): 30 kernels would cost minutes of start-up alone.
"""

import copy
import json
import os
import shlex
import shutil
import subprocess
from io import BytesIO
from pathlib import Path

import nbformat
import numpy as np
import pytest
import yaml
from PIL import Image

import lib.mis.embeddings
import lib.stage
from helpers import voc_palette
from lib import experiment

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {"study_a": ROOT / "presets" / "study_a.params.yaml", "study_b": ROOT / "presets" / "study_b.params.yaml",
           "lite0": ROOT / "presets" / "lite0.params.yaml"}

# What a dry run may change: sizes only (counts, resolutions, durations, sparsity schedules, batch sizes).
SIZE_KEYS = {"n_train", "n_val", "n_test", "n_eval", "image_size", "resize", "epochs", "warmup_epochs", "batch_size",
             "eval_batch_size", "internal_batch_size", "threshold", "targets", "steps", "samples", "retrain_per_class",
             "test_per_class", "n_images", "perturbation_steps", "pointing_tolerance", "gallery_size", "limit",
             "n_explanations", "n_queries", "n_tasks", "per_task"}

A_ARCHS, B_PLANS = ("resnet18", "resnet50", "vit_b32", "swin_v2_t"), (
    "unstructured-oneshot", "unstructured-iterative", "filters-oneshot", "filters-iterative", "connections-oneshot",
    "connections-iterative")
COMMON_SIZES = {
    "data.n_train": 20, "data.n_val": 10, "data.n_test": 10, "data.n_eval": 5,
    "interpret.n_images": 2, "interpret.image_size": 64, "interpret.ig_smoothgrad.steps": 2,
    "interpret.ig_smoothgrad.samples": 1, "interpret.perturbation_steps": 2, "interpret.pointing_tolerance": 3,
    "interpret.batch_size": 2, "interpret.gallery_size": 2,
    "align.image_size": 64, "align.batch_size": 16,
    "mis.pool.image_size": 64, "mis.pool.limit": 12, "mis.tasks.n_explanations": 4, "mis.tasks.n_queries": 1,
    "mis.tasks.n_tasks": 1, "mis.tasks.per_task": 2, "mis.batch_size": 12,
    "discover.common.n_images": 2, "discover.common.batch_size": 4,
}


def _data_sizes(archs, **dataset):
    return {f"{block}.{arch}.dataset.{key}": value for block in ("train", "retrain") for arch in archs
            for key, value in {"image_size": 64, "resize": 72, "n_val": 2, **dataset}.items()}


SIZES = {
    "study_a": {
        **COMMON_SIZES, **_data_sizes(A_ARCHS),
        **{f"train.{arch}.recipe.{key}": value for arch in A_ARCHS
           for key, value in (("epochs", 1), ("batch_size", 12))},  # one step an epoch
        "train.vit_b32.recipe.warmup_epochs": 0, "train.swin_v2_t.recipe.warmup_epochs": 0,
        "prune.lrr.plan.threshold": 0.2,                     # one LRR round (ViT-B/32, Swin-V2-T)
        "retrain.resnet18.plan_overrides.threshold": 0.36,   # two rounds: the ResNets' own threshold applies
        "retrain.resnet50.plan_overrides.threshold": 0.36,
    },
    "study_b": {
        **COMMON_SIZES, **_data_sizes(("googlenet",)),  # Study B retrains on ImageNet train, tests on val
        "retrain.googlenet.recipe.epochs": 1, "retrain.googlenet.recipe.batch_size": 6,
        **{f"prune.{m}.plan.targets": [0.5] for m in B_PLANS},
        **{f"prune.{m}.plan.steps": 2 for m in B_PLANS if m.endswith("iterative")},
    },
}
SIZES["lite0"] = {
    **COMMON_SIZES, **_data_sizes(("lite0",), limit=4),
    "prune.oneshot.plan.targets": [0.5],
    "discover.common.resize": 64,
    "variants.discover.tiny_imagenet.n_images": 2, "variants.discover.tiny_imagenet.resize": 64,
    "variants.discover.tiny_imagenet.batch_size": 4,
}
WNIDS = ("n01440764", "n01443537", "n01484850")  # three ImageNet classes stand in for the thousand


def load(name: str) -> dict:
    return yaml.safe_load(PRESETS[name].read_text())


def set_dotted(params: dict, dotted: str, value) -> None:
    """Replace an existing value (never add a key: the dry run changes sizes, not the protocol)."""
    *parents, key = dotted.split(".")
    node = params
    for part in parents:
        node = node[part]
    assert key in node, f"{dotted} is not in the parameter file"
    node[key] = value


# ----------------------------------------------------------------------------- the files and their checks
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_dry_run_overrides_touch_only_sizes(name):
    params = load(name)
    for dotted, value in SIZES[name].items():
        assert dotted.split(".")[-1] in SIZE_KEYS, f"{dotted} is not a size"
        set_dotted(copy.deepcopy(params), dotted, value)  # exists in the file


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_stage_resolves_and_checks(name):
    stages = experiment.resolve(PRESETS[name], ROOT)
    params = load(name)
    items = {f"{a}-{m}-{s}" for a in params["archs"] for m in params["plans"] for s in params["seeds"]}
    assert {s.name.split("@")[1] for s in stages if s.name.startswith("prune@")} == items
    for stage in ("interpret", "discover", "align", "mis"):
        assert {s.name for s in stages if s.name.startswith(stage + "@")} == {f"{stage}@{i}" for i in items}
    assert stages[0].name == "data" and stages[-1].name == "report"
    experiment.check(stages, ROOT, paths=False)  # parameters known to every notebook, models build, dicts parse


def test_study_a_protocol():
    params = load("study_a")
    plans = {arch: {**params["prune"]["lrr"]["plan"], **params["retrain"][arch]["plan_overrides"]}
             for arch in params["archs"]}
    from lib.prune.schedules import PruningPlan

    rounds = {arch: len(PruningPlan.from_dict(plan).sparsities()) for arch, plan in plans.items()}
    assert rounds == {"resnet18": 27, "resnet50": 27, "vit_b32": 14, "swin_v2_t": 14}
    assert params["plans"] == ["lrr", "lrr_retrained", "random_init"] and params["seeds"] == [0]
    assert params["prune"]["lrr_retrained"] == {"plan": params["prune"]["lrr"]["plan"], "control": "retrained",
                                                "control_of": "lrr"}
    assert plans["resnet18"]["layers"] == ["conv"] and plans["resnet50"]["layers"] == ["conv", "linear"]
    resnet = params["train"]["resnet50"]["recipe"]
    assert resnet == params["retrain"]["resnet50"]["recipe"]  # LRR rewinds to the full original schedule
    assert (resnet["epochs"], resnet["lr"], resnet["schedule"], resnet["step_size"]) == (90, 0.1, "step", 30)
    assert params["train"]["vit_b32"]["recipe"]["epochs"] == params["train"]["swin_v2_t"]["recipe"]["epochs"] == 300
    assert params["interpret"]["ig_smoothgrad"]["steps"] == 50 and params["interpret"]["n_images"] == 100
    assert len(params["align"]["datasets"]) == 17
    # faithful mode (the README's Protocol table)
    assert plans["vit_b32"]["attention_qkv"] is False and "attention_qkv" not in plans["swin_v2_t"]
    assert params["interpret"]["mask"] == "red_channel" and params["align"]["accuracy_over"] == "all_images"
    assert params["discover"]["resnet50"]["features"]["dilation"] == 1


def test_study_b_protocol():
    params = load("study_b")
    from lib.prune.schedules import PruningPlan

    plans = {m: PruningPlan.from_dict(params["prune"][m]["plan"]) for m in B_PLANS}
    assert params["plans"] == [*B_PLANS, "unstructured-oneshot_retrained", "random_init"]  # and the two controls
    assert params["prune"]["unstructured-oneshot_retrained"]["plan"] == params["prune"]["unstructured-oneshot"]["plan"]
    assert {(p.pruner, p.schedule) for p in plans.values()} == {
        (m, s) for m in ("unstructured", "filters", "connections") for s in ("oneshot", "iterative")}
    recipe = params["retrain"]["googlenet"]["recipe"]
    assert (recipe["optimizer"], recipe["schedule"], recipe["lr"], recipe["epochs"]) == ("sgd", "exponential", 0.01, 50)
    assert (recipe["gamma"], recipe["schedule_interval"], recipe["batch_size"], recipe["aux_weight"]) == (
        0.9, "epoch", 128, 0.3)
    assert params["train"]["googlenet"]["recipe"]["epochs"] == 0  # the pretrained model, not retrained
    # faithful mode (the README's Protocol table): per-layer rates, stem and aux heads dense, regrowing random connections
    assert params["models"]["googlenet"]["model_kwargs"]["aux_logits"] is True
    assert params["retrain"]["googlenet"]["dataset"]["train_split"] == "train"
    for plan in plans.values():
        assert set(plan.exclude) == {"conv1", "conv2", "conv3", "aux*"}
        assert plan.scope == ("global" if plan.pruner == "unstructured" else "layer")
    assert plans["unstructured-oneshot"].include_bias and not plans["unstructured-oneshot"].exclude_classifier
    assert plans["connections-oneshot"].masking == "regrowing" and plans["connections-oneshot"].selection == "random"
    assert not plans["filters-oneshot"].filter_companions
    assert [t for t, _ in plans["unstructured-iterative"].sparsities()] == pytest.approx(
        [1 - 0.6 ** i for i in range(1, 6)])
    assert params["mis"]["layers"] == "conv_channels"


@pytest.mark.slow
def test_missing_data_is_named_with_how_to_get_it(tmp_path):
    stages = experiment.resolve(PRESETS["study_b"], ROOT)
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")  # a checkout without data
    with pytest.raises(experiment.PresetError) as error:
        experiment.check(stages, tmp_path, targets=["mis"])
    message = str(error.value)
    assert "data/imagenet/val" in message and "googlenet-1378be20.pth" in message and "download.pytorch.org" in message
    assert "VOCdevkit" not in message  # `mis` and what it needs read no VOC
    (tmp_path / "data" / "model-vs-human" / "cue-conflict").mkdir(parents=True)  # one dataset of 17
    with pytest.raises(experiment.PresetError) as error:
        experiment.check(experiment.resolve(PRESETS["study_a"], ROOT), tmp_path, targets=["align@resnet18-lrr-0"])
    message = str(error.value)
    assert "data/model-vs-human/edge" in message and "data/model-vs-human/cue-conflict" not in message
    assert "data/imagenet/train" in message and "align@resnet50-lrr-0" not in message  # what align@resnet18 needs


@pytest.mark.parametrize("change, message", [
    (("interpret", "n_imgs", 3), r"has no parameter\(s\) \['n_imgs'\]"),
    (("retrain", "vit_b32", "recipe", "optimizer", "lamb"), "invalid training recipe"),
    (("models", "vit_b32", "model", "timm/vit_tiny_not_a_model"), "unknown timm model"),
    (("discover", "vit_b32", "features", "dilatation", 2), "dilatation"),
    (("align", "datasets", ["cue-conflict", "sketches"]), "sketches"),
    (("archs", ["resnet18", "resnet34"]), "resnet34"),
    (("mis", "backends", [{"name": "dreamsim"}]), "DreamSim backend needs"),
])
@pytest.mark.slow
def test_bad_parameters_fail_before_any_compute(tmp_path, change, message):
    params = load("study_a")
    *path, key, value = change
    node = params
    for part in path:
        node = node[part]
    node[key] = value
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(experiment.PresetError, match=message):
        experiment.check(experiment.resolve(tmp_path / "p.yaml", ROOT), ROOT, paths=False)


@pytest.mark.parametrize("section, renamed, message", [
    ("mis", "extra", r"missing \['mis'\], unknown \['extra'\]"),  # the schema must match params.yaml's
    # one word per concept: `methods` (the matrix) became `plans`; the old name is refused, the error says so
    ("plans", "methods", r"unknown \['methods'\] \(methods: renamed to plans\)"),
])
def test_sections_must_match_params_yaml(tmp_path, section, renamed, message):
    params = load("study_b")
    params[renamed] = params.pop(section)
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(experiment.PresetError, match=message):
        experiment.resolve(tmp_path / "p.yaml", ROOT)


@pytest.mark.slow
def test_main_runs_dvc_exp_run_with_the_file_as_params_yaml(tmp_path, monkeypatch, capsys):
    project = tmp_path / "project"
    shutil.copytree(ROOT / "notebooks", project / "notebooks")
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, project / name)
    monkeypatch.chdir(project)
    default = (project / "params.yaml").read_text()
    calls = []

    def fake_run(command):
        calls.append((command, Path("params.yaml").read_text()))
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(experiment.subprocess, "run", fake_run)
    small = yaml.safe_load(default)
    small["data"]["seed"] = 7
    (project / "small.params.yaml").write_text(yaml.safe_dump(small))
    assert experiment.main(["small.params.yaml", "--dry"]) == 0 and not calls
    assert "dvc exp run --name small" in capsys.readouterr().out
    assert experiment.main(["small.params.yaml", "--queue", "--name", "seed7"]) == 0
    assert calls[-1][0] == ["dvc", "exp", "run", "--name", "seed7", "--queue"]
    assert yaml.safe_load(calls[-1][1])["data"]["seed"] == 7  # what DVC saw
    assert (project / "params.yaml").read_text() == default  # put back after queueing
    assert experiment.main(["small.params.yaml", "train"]) == 0
    assert calls[-1][0] == ["dvc", "exp", "run", "--name", "small", "train"]
    assert yaml.safe_load((project / "params.yaml").read_text())["data"]["seed"] == 7  # the workspace run's params


# ----------------------------------------------------------------------------- stand-ins in the real formats
def write_imagenet(root: Path, per_split: dict) -> None:
    """ILSVRC2012 layout: <root>/<split>/<wnid>/<file>.JPEG, photos of different sizes."""
    rng = np.random.default_rng(0)
    for split, count in per_split.items():
        for wnid in WNIDS:
            (root / split / wnid).mkdir(parents=True)
            for i in range(count):
                name = f"ILSVRC2012_val_{i:08d}" if split == "val" else f"{wnid}_{i}"
                Image.fromarray(rng.integers(0, 256, (70 + 4 * i, 90, 3), dtype=np.uint8)).save(
                    root / split / wnid / f"{name}.JPEG", quality=90)


VOC_XML = """<annotation><folder>VOC2012</folder><filename>{name}.jpg</filename>
<size><width>{w}</width><height>{h}</height><depth>3</depth></size><segmented>1</segmented>
<object><name>{cls}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>
<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object></annotation>"""


def write_voc(devkit: Path, n: int = 3) -> None:
    """VOCdevkit/VOC2012: JPEGImages, palette SegmentationClass PNGs (ids, 255 void outline), XML boxes, ImageSets."""
    voc = devkit / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "Annotations", "ImageSets/Main", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    rng = np.random.default_rng(1)
    ids = [f"2007_{i:06d}" for i in range(1, n + 1)]
    for k, name in enumerate(ids):
        h, w = 80 + 8 * k, 100
        x0, y0, x1, y1 = 20 + 5 * k, 15, 70, 60
        classes = np.zeros((h, w), np.uint8)
        classes[y0 - 2:y1 + 2, x0 - 2:x1 + 2] = 255  # VOC's void outline
        classes[y0:y1, x0:x1] = (8, 12, 15)[k % 3]  # cat, dog, person
        label = Image.fromarray(classes, mode="P")
        label.putpalette(voc_palette())
        label.save(voc / "SegmentationClass" / f"{name}.png")
        image = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
        image[y0:y1, x0:x1] = rng.integers(150, 256, (y1 - y0, x1 - x0, 3), dtype=np.uint8)
        Image.fromarray(image).save(voc / "JPEGImages" / f"{name}.jpg", quality=90)
        (voc / "Annotations" / f"{name}.xml").write_text(VOC_XML.format(
            name=name, w=w, h=h, cls=("cat", "dog", "person")[k % 3], x0=x0 + 1, y0=y0 + 1, x1=x1, y1=y1))
    for listing in ("ImageSets/Main/trainval.txt", "ImageSets/Segmentation/val.txt"):
        (voc / listing).write_text("\n".join(ids) + "\n")


def write_model_vs_human(root: Path, datasets) -> None:
    """model-vs-human: <dataset>/<category>/<image> for the texture-shape sets, <dataset>/dnn/session-1/
    <a>_<b>_<c>_<condition>_<category>_<image> for the others; raw-data/<dataset>/*.csv human trials."""
    from lib.data.modelvshuman import TEXTURE_SHAPE

    rng = np.random.default_rng(2)
    shapes, textures = ("airplane", "bear"), ("bear", "airplane")
    conditions = {"colour": "bw", "contrast": "c30", "high-pass": "1.5", "low-pass": "3", "phase-scrambling": "60",
                  "power-equalisation": "pow", "false-colour": "False", "rotation": "90", "eidolonI": "8-10-10",
                  "eidolonII": "8-3-10", "eidolonIII": "8-0-10", "uniform-noise": "0.1"}
    for dataset in datasets:
        names = []
        for i, (shape, texture) in enumerate(zip(shapes, textures)):
            image = Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8))
            if dataset in TEXTURE_SHAPE:
                name = f"{shape}{i + 1}-{texture}{i + 2}.png" if dataset == "cue-conflict" else f"{shape}{i + 1}.png"
                (root / dataset / shape).mkdir(parents=True, exist_ok=True)
                image.save(root / dataset / shape / name)
            else:
                name = f"{i + 1:04d}_x_s01_{conditions.get(dataset, '0')}_{shape}_00_n0000000{i}_{i}.png"
                (root / dataset / "dnn" / "session-1").mkdir(parents=True, exist_ok=True)
                image.save(root / dataset / "dnn" / "session-1" / name)
            names.append((shape, name))
        if dataset in TEXTURE_SHAPE:  # two observers' trials
            (root / "raw-data" / dataset).mkdir(parents=True)
            for subject in (1, 2):
                rows = [{"subj": f"subject-0{subject}", "session": 1, "trial": t + 1, "rt": 1.0,
                         "object_response": shape if (t + subject) % 2 else "bear", "category": shape, "condition": 0,
                         "imagename": f"{t + 1:04d}_s{subject}_s01_0_{shape}_00_{name}"}
                        for t, (shape, name) in enumerate(names)]
                lines = [",".join(rows[0])] + [",".join(str(v) for v in row.values()) for row in rows]
                csv = root / "raw-data" / dataset / f"{dataset}_subject-0{subject}_session_1.csv"
                csv.write_text("\n".join(lines))


def write_googlenet_weights(path: Path) -> None:
    """A weights file in torchvision's layout (with the auxiliary heads, as the downloaded file has them)."""
    import warnings

    import torch
    import torchvision

    path.parent.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        torch.save(torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False).state_dict(), path)


def make_project(tmp_path: Path, name: str) -> Path:
    """A copy of the pipeline whose params.yaml is the parameter file with the dry run's sizes, and whose data/
    holds the stand-ins where the file expects the datasets."""
    project = tmp_path / name
    shutil.copytree(ROOT / "notebooks", project / "notebooks")
    shutil.copy(ROOT / "dvc.yaml", project)
    params = load(name)
    for dotted, value in SIZES[name].items():
        set_dotted(params, dotted, value)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    data = project / "data"
    write_imagenet(data / "imagenet", {"train": 4, "val": 4})
    write_voc(data / "VOCdevkit")
    write_model_vs_human(data / "model-vs-human", params["align"]["datasets"])
    if name == "study_b":
        write_googlenet_weights(data / "weights" / "googlenet-1378be20.pth")
    return project


# ----------------------------------------------------------------------------- the dry run
def execute_in_process(input_path, output_path, parameters=None, cwd=None, **_):
    """papermill.execute_notebook without a kernel: the code cells in order, the parameters injected after the
    cell tagged ``parameters`` (as papermill injects them), in ``cwd``; the notebook is copied to ``output_path``."""
    import matplotlib.pyplot as plt

    notebook = nbformat.read(str(input_path), as_version=4)
    namespace = {"__name__": "__main__", "display": lambda *args, **kwargs: None}
    previous = os.getcwd()
    os.chdir(cwd or previous)
    try:
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type == "code":
                exec(compile(cell.source, f"{input_path}[cell {index}]", "exec"), namespace)
                if "parameters" in cell.metadata.get("tags", []):
                    namespace.update(copy.deepcopy(parameters or {}))
    finally:
        os.chdir(previous)
        plt.close("all")
    nbformat.write(notebook, str(output_path))
    return notebook


def figure_placeholder(fig, out_dir, name):
    """lib.results.save_figure without rendering (seconds per figure on one core): the figure is built by the
    notebook's code as usual (but for its tight layout, cosmetic and as slow); a 1-pixel PNG stands where the
    rendered one goes."""
    import matplotlib.pyplot as plt

    from lib import storage

    assert fig.axes, f"figure {name} has no axes"
    plt.close(fig)
    buffer = BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="png")
    return storage.write_bytes(Path(out_dir) / "plots" / f"{name}.png", buffer.getvalue())


def dry_run(project: Path, monkeypatch) -> list:
    """Every stage of the resolved pipeline, dependencies first, as its command would run; its outputs checked."""
    import matplotlib.figure
    import papermill

    import lib.results

    stages = experiment.resolve(project / "params.yaml", project)
    experiment.check(stages, project)  # the stand-ins are where the parameters point
    monkeypatch.setattr(papermill, "execute_notebook", execute_in_process)
    monkeypatch.setattr(lib.stage, "start_kernel", lambda notebook, root: None)  # no kernel: cells run in-process
    monkeypatch.setattr(lib.results, "save_figure", figure_placeholder)
    monkeypatch.setattr(matplotlib.figure.Figure, "tight_layout", lambda self, *args, **kwargs: None)
    monkeypatch.setattr(os, "fsync", lambda fd: None)  # durable writes are not under test: seconds of disk waits
    monkeypatch.chdir(project)
    modules = {"lib.stage": lib.stage.main, "lib.mis.embeddings": lib.mis.embeddings.main}
    for stage in stages:
        assert modules[stage.module](shlex.split(stage.cmd)[3:]) == 0, stage.name
        missing = [out for out in stage.outs if not (project / out).exists()]
        assert not missing, f"{stage.name} did not write its declared outputs {missing}"
    return stages


def read(project: Path, *parts) -> dict:
    return json.loads((project.joinpath(*parts)).read_text())


@pytest.mark.slow
def test_study_a_dry_run(tmp_path, monkeypatch):
    project = make_project(tmp_path, "study_a")
    dry_run(project, monkeypatch)
    for arch in A_ARCHS:
        manifest = read(project, "data", "prune", arch, "lrr", "seed0", "pruning.json")
        sparsities = [round(c["sparsity"], 2) for c in manifest["checkpoints"]]
        assert sparsities == ([0.0, 0.2, 0.36] if arch.startswith("resnet") else [0.0, 0.2]), arch
        assert manifest["plan"]["exclude_classifier"] is False
        assert manifest["plan"]["layers"] == (["conv"] if arch == "resnet18" else ["conv", "linear"])
    attributions = {arch: read(project, "data", "interpret", arch, "lrr", "seed0", "metrics.json")["attributions"] for arch in A_ARCHS}
    assert attributions == {"resnet18": ["gradcam", "guided_gradcam", "ig_smoothgrad", "saliency"],
                       "resnet50": ["gradcam", "guided_gradcam", "ig_smoothgrad", "saliency"],
                       "vit_b32": ["gradcam", "ig_smoothgrad", "saliency", "attention", "rollout"],
                       "swin_v2_t": ["gradcam", "ig_smoothgrad", "saliency"]}
    align = read(project, "data", "align", "swin_v2_t", "lrr", "seed0", "metrics.json")
    assert len(align["datasets"]) == 17
    assert "shape_bias" in align["checkpoints"]["step_00"]
    discover = read(project, "data", "discover", "vit_b32", "lrr", "seed0", "metrics.json")
    assert discover["dataset"] == "voc12/trainval" and "corloc_lost" in discover["checkpoints"]["step_01"]
    mis = read(project, "data", "mis", "resnet50", "lrr", "seed0", "metrics.json")
    assert len(mis["checkpoints"]) == 3
    report = read(project, "data", "report", "metrics.json")
    assert {key.split("/")[0] for key in report["accuracy"]} == set(A_ARCHS)


@pytest.mark.slow
def test_study_b_dry_run(tmp_path, monkeypatch):
    project = make_project(tmp_path, "study_b")
    dry_run(project, monkeypatch)
    train = read(project, "data", "train", "googlenet", "seed0", "metrics.json")
    assert train["epochs"] == 0 and train["recorded_acc"] == pytest.approx(0.6978)
    for plan in B_PLANS:
        manifest = read(project, "data", "prune", "googlenet", plan, "seed0", "pruning.json")
        targets = [c["target"] for c in manifest["checkpoints"]]
        assert targets == ([0.0, 0.25, 0.5] if plan.endswith("iterative") else [0.0, 0.5]), plan
        assert manifest["recipe"]["schedule"] == "exponential" and manifest["recipe"]["lr"] == 0.01
    mis = read(project, "data", "mis", "googlenet", "connections-iterative", "seed0", "metrics.json")
    assert len(mis["checkpoints"]) == 3 and all("mis" in row for row in mis["checkpoints"].values())
    report = read(project, "data", "report", "metrics.json")
    assert {key.split("/")[1] for key in report["accuracy"]} == set(load("study_b")["plans"])  # controls too


# ----------------------------------------------------------------------------- the real-data Lite0 study
def test_lite0_study_protocol():
    """What the five former Lite0 presets ran, as one pipeline: shared one-shot checkpoints without retraining,
    both RQ1 mask modes, RQ2 on two datasets, both RQ3 accuracy aggregations."""
    params = load("lite0")
    assert params["models"]["lite0"] == {"model": "efficientnet_lite0", "model_kwargs": {"pretrained": True}}
    assert params["train"]["lite0"]["recipe"]["epochs"] == 0 and params["retrain"]["lite0"]["recipe"]["epochs"] == 0
    plan = params["prune"]["oneshot"]["plan"]
    assert plan["schedule"] == "oneshot" and plan["pruner"] == "unstructured" and plan["scope"] == "global"
    assert plan["targets"] == [0.3, 0.5, 0.7]
    assert (params["interpret"]["mask"], params["variants"]["interpret"]["red_channel"]["mask"]) == (
        "foreground", "red_channel")
    assert params["align"]["accuracy_over"] == "ood_conditions"  # Study A's all-images value is in every row
    assert params["variants"]["align"] == {}  # ... so no second RQ3 run of the same decisions
    assert params["discover"]["common"]["dataset"]["name"] == "coco"
    assert params["variants"]["discover"]["tiny_imagenet"]["dataset"]["name"] == "tiny_imagenet"
    names = {s.name for s in experiment.resolve(PRESETS["lite0"], ROOT)}
    assert {"interpret_variant@lite0-oneshot-0-red_channel", "discover_variant@lite0-oneshot-0-tiny_imagenet",
            "align@lite0-oneshot-0", "mis@lite0-oneshot-0", "mis@lite0-random_init-0"} <= names
    assert params["plans"] == ["oneshot", "random_init"] and params["prune"]["random_init"] == {"control": "random_init"}
    judges = [backend["name"] for backend in params["mis"]["backends"]]
    assert judges == ["lite2", "pixel"]  # MIS's similarity network is not the network analysed (issue #28)


@pytest.mark.slow
def test_lite0_dry_run(tmp_path, monkeypatch, shared_data):
    """Every stage of the Lite0 study at tiny sizes on the real data (model-vs-human: a stand-in). About 4 min on
    two shared cores: Lite0's pruning accounting (compaction) and RQ1 twice dominate."""
    for name in ("coco128", "tiny-imagenet-200", "imagenet-sample-images"):
        if not (shared_data / name).is_dir():
            pytest.skip(f"{shared_data / name} is absent: the Lite0 study's dry run reads it")
    project = tmp_path / "lite0"  # ../shared/data from the project: tmp_path/shared/data
    shared = tmp_path / "shared" / "data"
    shared.mkdir(parents=True)
    for name in ("coco128", "tiny-imagenet-200", "imagenet-sample-images"):
        (shared / name).symlink_to(shared_data / name)
    shutil.copytree(ROOT / "notebooks", project / "notebooks")
    shutil.copy(ROOT / "dvc.yaml", project)
    params = load("lite0")
    for dotted, value in SIZES["lite0"].items():
        set_dotted(params, dotted, value)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    write_model_vs_human(shared / "model-vs-human", params["align"]["datasets"])
    dry_run(project, monkeypatch)
    train = read(project, "data", "train", "lite0", "seed0", "metrics.json")
    assert train["epochs"] == 0 and train["test_acc"] > 0  # the pretrained weights, scored on 4 sample images
    manifest = read(project, "data", "prune", "lite0", "oneshot", "seed0", "pruning.json")
    assert [round(c["sparsity"], 2) for c in manifest["checkpoints"]] == [0.0, 0.5]
    assert manifest["recipe"]["epochs"] == 0
    interpret = read(project, "data", "interpret", "lite0", "oneshot", "seed0", "metrics.json")
    red = read(project, "data", "interpret_variant", "lite0", "oneshot", "seed0", "red_channel", "metrics.json")
    assert interpret["attributions"] == red["attributions"] == ["gradcam", "guided_gradcam", "ig_smoothgrad", "saliency"]
    assert interpret["checkpoints"]["step_00"]["rma_gradcam"] != red["checkpoints"]["step_00"]["rma_gradcam"]
    assert read(project, "data", "discover", "lite0", "oneshot", "seed0", "metrics.json")["dataset"].startswith("coco/")
    tiny = read(project, "data", "discover_variant", "lite0", "oneshot", "seed0", "tiny_imagenet", "metrics.json")
    assert tiny["dataset"].startswith("tiny_imagenet") and len(tiny["checkpoints"]) == 2
    align = read(project, "data", "align", "lite0", "oneshot", "seed0", "metrics.json")
    assert len(align["checkpoints"]) == 2 and {"shape_bias", "ood_acc", "ood_acc_all_images"} <= set(
        align["checkpoints"]["step_00"])  # both RQ3 aggregations from one run
    mis = read(project, "data", "mis", "lite0", "oneshot", "seed0", "metrics.json")
    assert len(mis["checkpoints"]) == 2
    assert read(project, "metrics", "interpret_variant", "lite0-oneshot-seed0-red_channel.json")  # the flat summary
