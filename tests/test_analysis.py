"""The analyses' checkpoint loop (lib.analysis), and every analysis resuming after an interruption.

Each analysis is interrupted at its second checkpoint (a fake of its scoring step raises there), then run
again: the rerun scores only the checkpoint that was not finished, and gives exactly what one uninterrupted
run gives.
"""

import numpy as np
import pandas as pd
import pytest
import torch

from lib import analysis, storage
from lib.analysis import Scored, decode, encode


class Interrupted(Exception):
    pass


def interrupt_then_resume(module, name: str, run, state_dir, monkeypatch) -> tuple[object, object, int]:
    """(uninterrupted result, resumed result, calls of ``module.name`` by the rerun): ``run(state_dir)`` is
    interrupted at the second call of ``module.name``, then run again."""
    whole = run(None)
    real, calls = getattr(module, name), []

    def interrupts_at_the_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise Interrupted
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, interrupts_at_the_second)
    with pytest.raises(Interrupted):
        run(state_dir)
    assert [p.name.split(".")[0] for p in state_dir.iterdir()] == ["step_00"]  # the first checkpoint was kept
    calls.clear()
    monkeypatch.setattr(module, name, lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    resumed = run(state_dir)
    return whole, resumed, len(calls)


def assert_same_rows(a: list[dict], b: list[dict], ignore=()):
    drop = [c for c in ignore if c in pd.DataFrame(a)]
    pd.testing.assert_frame_equal(pd.DataFrame(a).drop(columns=drop), pd.DataFrame(b).drop(columns=drop),
                                  check_exact=True)


@pytest.mark.slow
def test_attribution_resumes_after_an_interruption(pruned_cnn, tiny_shapes, tmp_path, monkeypatch):
    from lib.interpret import run as module
    from lib.data.masks import load_ground_truth

    data = load_ground_truth("shapes", tiny_shapes, limit=2)
    options = dict(attributions=["gradcam", "saliency"], perturbation_steps=2, gallery_size=1, progress=False)
    whole, resumed, calls = interrupt_then_resume(
        module, "score_model", lambda state: module.score_checkpoints(pruned_cnn, data, state_dir=state, **options),
        tmp_path, monkeypatch)
    assert calls == 1
    assert_same_rows(whole.rows, resumed.rows, ignore=("seconds", "cpu_seconds"))  # timings: the first run's
    pd.testing.assert_frame_equal(whole.per_image, resumed.per_image, check_exact=True)
    assert resumed.attributions == whole.attributions and resumed.baseline == whole.baseline
    for step in (0, 1):
        for attribution, maps in whole.gallery["maps"][step].items():
            np.testing.assert_array_equal(resumed.gallery["maps"][step][attribution], maps)


@pytest.mark.slow
def test_discovery_resumes_after_an_interruption(pruned_cnn, tiny_shapes, tmp_path, monkeypatch):
    from lib.data.boxes import load_shapes
    from lib.discover import run as module

    data = load_shapes(tiny_shapes, "test").sample(4)
    algorithms = {"lost": {"k_patches": 10}, "tokencut": {}}
    whole, resumed, calls = interrupt_then_resume(
        module, "predict_boxes", lambda state: module.discover(pruned_cnn, data, algorithms, progress=False,
                                                               state_dir=state), tmp_path, monkeypatch)
    assert calls == 1
    assert_same_rows(whole[0], resumed[0])
    pd.testing.assert_frame_equal(whole[1], resumed[1], check_exact=True)


@pytest.mark.slow
def test_alignment_resumes_after_an_interruption(pruned_cnn, tiny_shapes, tmp_path, monkeypatch):
    from lib.align import metrics
    from lib.align import run as module

    evaluation = module.prepare(tiny_shapes, datasets=["cue-conflict"], distortions={"contrast": ["c100", "c10"]},
                                n_images=6, n_split=6, progress=False)
    whole, resumed, calls = interrupt_then_resume(
        module, "decide", lambda state: module.evaluate(pruned_cnn, evaluation, batch_size=8, progress=False,
                                                        state_dir=state), tmp_path, monkeypatch)
    assert calls == 1
    assert [r["step"] for r in resumed[0]] == [0, 1]
    pd.testing.assert_frame_equal(whole[1], resumed[1], check_exact=True)
    assert_same_rows(metrics.checkpoint_rows(*whole), metrics.checkpoint_rows(*resumed))


@pytest.mark.slow
def test_mis_resumes_after_an_interruption(pruned_cnn, tiny_shapes, tmp_path, monkeypatch):
    from lib.data.image_pool import load_pool
    from lib.mis import TaskConfig, create_backend
    from lib.mis import run as module

    pool = load_pool({"split": "test"}, tiny_shapes)
    scorers = module.build_scorers(pool, [create_backend({"name": "pixel", "image_size": 8})], tmp_path / "embeddings",
                                   TaskConfig(6, 2, 2, 3), alpha=8.0, progress=False)
    controls = {"random_init": True, "collapse_sparsity": 0.9}
    whole, resumed, calls = interrupt_then_resume(
        module, "score_model", lambda state: module.score_checkpoints(pruned_cnn, pool, scorers, controls=controls,
                                                                      progress=False, state_dir=state),
        tmp_path / "state", monkeypatch)
    assert calls == 1 + 2  # the unfinished checkpoint, then the two controls of the dense one (reloaded)
    assert sorted(p.name.split(".")[0] for p in (tmp_path / "state").iterdir()) == ["collapse", "random_init",
                                                                                 "step_00", "step_01"]
    monkeypatch.setattr(module, "score_model", lambda *args, **kwargs: 1 / 0)
    again = module.score_checkpoints(pruned_cnn, pool, scorers, controls=controls, progress=False,
                                     state_dir=tmp_path / "state")  # all kept: nothing is scored
    pd.testing.assert_frame_equal(again[1].units, whole[1].units, check_exact=True)
    for part in ("checkpoints", "layers", "units", "classes"):
        for a, b in zip(whole, resumed):
            pd.testing.assert_frame_equal(getattr(a, part), getattr(b, part), check_exact=True)
    assert resumed[0].examples == whole[0].examples and resumed[0].examples


# ----------------------------------------------------------------------------- the loop itself
def test_state_files_give_back_exactly_what_was_kept():
    frame = pd.DataFrame({"step": np.array([0, 0], dtype=np.int64), "x": np.array([0.1, np.nan], dtype=np.float32),
                          "name": ["a", None], "hit": [True, False], "mixed": [1.5, "b"], 7: [1, 2]})
    value = {"frame": frame, 3: (np.arange(4, dtype=np.uint8), [np.float64(0.25), "s"]),
             "tensor": torch.ones(2), "objects": np.array([None, "x"], dtype=object), "none": None}
    back = decode(torch.load(_saved(encode(value)), weights_only=True))
    pd.testing.assert_frame_equal(back["frame"], frame, check_exact=True)
    assert back[3][0].dtype == np.uint8 and back[3][0].tolist() == [0, 1, 2, 3]
    assert back[3][1] == [0.25, "s"] and type(back[3][1][0]) is np.float64
    assert torch.equal(back["tensor"], value["tensor"]) and back["objects"].tolist() == [None, "x"]
    assert back["none"] is None and list(back) == list(value)
    with pytest.raises(TypeError, match="cannot keep a object"):
        encode(object())


def _saved(value):
    import io

    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    return buffer


def test_state_is_keyed_by_the_checkpoints_content_the_options_and_the_code(pruned_cnn, tmp_path, monkeypatch):
    import shutil

    seen = []

    def score(record, model):
        seen.append(record["step"])
        return Scored({"weights": float(sum(p.detach().abs().sum() for p in model.parameters()))},
                      pd.DataFrame({"step": [record["step"]], "item": ["a"]}), {"step": record["step"]})

    first = analysis.score_checkpoints(pruned_cnn, score, {"option": 1}, tmp_path / "state", progress=False)
    assert seen == [0, 1] and [r["sparsity"] for r in first.rows] == [r["sparsity"] for r in first.records]
    assert list(first.rows[0]) == ["step", "sparsity", "test_acc", "weights"]  # the record's keys come first
    assert first.items["step"].tolist() == [0, 1] and first.extras == {0: {"step": 0}, 1: {"step": 1}}
    again = analysis.score_checkpoints(pruned_cnn, score, {"option": 1}, tmp_path / "state", progress=False)
    assert seen == [0, 1] and again.rows == first.rows
    analysis.score_checkpoints(pruned_cnn, score, {"option": 2}, tmp_path / "state", progress=False)
    assert seen == [0, 1, 0, 1]  # other options: scored afresh
    # a checkpoint file its prune stage did not write (step 0's weights copied over step 1's) is refused by name
    copy = tmp_path / "copy"
    shutil.copytree(pruned_cnn, copy)
    shutil.copy(copy / "checkpoints" / "step_00.pt", copy / "checkpoints" / "step_01.pt")
    with pytest.raises(storage.CheckpointError, match=r"step_01.pt is not the file the prune stage wrote"):
        analysis.score_checkpoints(copy, score, {"option": 1}, tmp_path / "state", progress=False)
    assert seen == [0, 1, 0, 1]
    # ... and once the manifest says so (a prune run that wrote these files), it is scored afresh
    manifest = storage.load_json(copy / "pruning.json")
    manifest["checkpoints"][1]["sha256"] = storage.file_sha256(copy / "checkpoints" / "step_01.pt")
    storage.save_json(copy / "pruning.json", manifest)
    changed = analysis.score_checkpoints(copy, score, {"option": 1}, tmp_path / "state", progress=False)
    assert seen == [0, 1, 0, 1, 1] and changed.rows[1]["weights"] == first.rows[0]["weights"]
    # other code (the score's module or lib.analysis changed): every checkpoint is scored afresh
    monkeypatch.setattr(analysis, "code_digest", lambda modules: "other code")
    analysis.score_checkpoints(pruned_cnn, score, {"option": 1}, tmp_path / "state", progress=False)
    assert seen == [0, 1, 0, 1, 1, 0, 1]
    only = analysis.score_checkpoints(pruned_cnn, score, {"option": 1}, None, steps=[1], progress=False)
    assert [r["step"] for r in only.rows] == [1]


def test_the_source_is_checked_before_any_compute(tmp_path):
    with pytest.raises(FileNotFoundError, match="prune stage"):
        analysis.score_checkpoints(tmp_path, lambda record, model: 1 / 0, {}, progress=False)


@pytest.mark.parametrize("stage", ["interpret", "discover", "align", "mis"])
def test_every_analysis_package_has_the_same_files_and_runs_on_the_loop(stage):
    from pathlib import Path

    from lib.pipeline import ANALYSES, STAGES

    assert stage in ANALYSES
    package = STAGES[stage].check.split(":")[0].rpartition(".")[0]
    assert STAGES[stage].check == f"{package}.run:check_stage"
    folder = Path(__file__).resolve().parents[1].joinpath(*package.split("."))
    assert {"methods.py", "metrics.py", "run.py", "plots.py"} <= {p.name for p in folder.glob("*.py")}
    assert "analysis.score_checkpoints(" in (folder / "run.py").read_text()
