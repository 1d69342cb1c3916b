"""Error consistency with human observers (``ec_humans``) tested by the report on trees the align stage's own
writers make: the per-trial table and ``human_trials.csv`` (lib.align.run.save_observer_trials)."""

import numpy as np
import pandas as pd
import pytest

from lib.align import metrics as am
from lib.align import run as ev
from lib.report import HUMAN_TRIALS, family_table, load_dimensions
from lib.results import save_stage_metrics


def write_tree(root, records, trials, humans, test_acc=0.8):
    """The prune and align outputs of one network (arch a, plan m) as the stages write them."""
    prune_rows = [{"step": r["step"], "sparsity": r["sparsity"], "test_acc": test_acc} for r in records]
    save_stage_metrics(root / "prune" / "a" / "m", prune_rows, plot="accuracy", arch="a", plan="m")
    rows = am.checkpoint_rows(records, trials, humans)
    out = root / "align" / "a" / "m"
    save_stage_metrics(out, rows, plot="alignment", per_image=am.per_image(trials), arch="a", plan="m")
    ev.save_observer_trials(out, humans, trials)
    return {r["step"]: r for r in rows}


def test_the_report_and_the_stage_name_the_same_file():
    assert HUMAN_TRIALS == am.HUMAN_TRIALS


def test_ec_humans_by_hand_per_dataset_then_over_datasets(tmp_path):
    """Two datasets whose observers share names (the benchmark's subject-01 of edge is not the one of silhouette)
    and a control condition the benchmark leaves out. At dense, by hand:

    - edge: the model is right on a, b, d. subject-01 on a, b (observed 3/4; accuracies 3/4 and 1/2: expected
      .75 * .5 + .25 * .5 = .5; kappa (.75 - .5) / .5 = .5); subject-02 decides as the model (kappa 1): mean .75.
    - silhouette: the model is right on a, c; subject-01 on b, d (observed 0, expected .5: kappa -1).
    - contrast c100 (excluded): left out, though the observer there disagrees everywhere.

    ec_humans = (.75 + -1) / 2 = -.125, in the stage's row and as the report's statistic at dense."""
    images = ["a", "b", "c", "d"]

    def table(dataset, correct, condition="0", **columns):
        return pd.DataFrame({"dataset": dataset, "condition": condition, "image_id": images, "category": "cat",
                             "object_response": np.where(np.array(correct, bool), "cat", "dog"), **columns})

    def decided(step, edge, silhouette, contrast):
        columns = {"subj": f"step_{step:02d}", "step": step, "sparsity": 0.2 * step}
        return pd.concat([table("edge", edge, **columns), table("silhouette", silhouette, **columns),
                          table("contrast", contrast, condition="c100", **columns)], ignore_index=True)

    humans = pd.concat([table("edge", [1, 1, 0, 0], subj="subject-01"), table("edge", [1, 1, 0, 1], subj="subject-02"),
                        table("silhouette", [0, 1, 0, 1], subj="subject-01"),
                        table("contrast", [0, 0, 1, 0], condition="c100", subj="subject-01")], ignore_index=True)
    trials = pd.concat([decided(0, [1, 1, 0, 1], [1, 0, 1, 0], [1, 1, 0, 1]),
                        decided(1, [1, 1, 0, 0], [0, 1, 0, 1], [1, 1, 0, 1]),
                        decided(2, [0, 0, 1, 1], [1, 0, 1, 0], [1, 1, 0, 1])], ignore_index=True)
    records = [{"step": s, "sparsity": 0.2 * s} for s in range(3)]
    rows = write_tree(tmp_path, records, trials, humans)
    assert rows[0]["ec_humans"] == pytest.approx(-0.125)
    written = pd.read_csv(tmp_path / "align" / "a" / "m" / HUMAN_TRIALS)
    assert set(written["dataset"]) == {"edge", "silhouette"} and len(written) == 12  # c100 is no trial of ec_humans
    frame, columns = load_dimensions(tmp_path)
    spot = family_table(tmp_path, frame, columns, n_resamples=50)[0].set_index("metric").loc["ec_humans"]
    assert spot["unit"] == "trial" and spot["dense"] == pytest.approx(-0.125)
    # step 1 decides as every subject-01 (edge (1 + .5) / 2, silhouette 1: .875); step 2 as none (-.875)
    assert spot["step"] == 1 and spot["value"] == pytest.approx(0.875) == rows[1]["ec_humans"]


@pytest.mark.slow  # loading the 320 stimuli: ~10 s of the ~30 s on two busy cores
def test_ec_humans_is_tested_against_the_real_observers(shared_data, pruned_source, tmp_path):
    """Model-vs-human's edge and silhouette stimuli with their 10 observers each, decided by a small CNN with
    ImageNet's 1,000 outputs (random weights, L1-pruned to 30% and 60%; at 64 px: seconds) through the align
    stage's code and writers: the report tests ec_humans (a p-value, not "no human observer trials"), and its
    statistic at every checkpoint is the stage's own ec_humans."""
    evaluation = ev.prepare(mvh_root=shared_data / "model-vs-human", datasets=["edge", "silhouette"], image_size=64,
                            progress=False)
    source = pruned_source("small_cnn", targets=(0.3, 0.6), num_classes=1000, image_size=64)
    records, trials = ev.evaluate(source, evaluation, batch_size=80, progress=False)
    rows = write_tree(tmp_path, records, trials, evaluation.humans)
    written = pd.read_csv(tmp_path / "align" / "a" / "m" / HUMAN_TRIALS)
    assert len(written) == 2 * 10 * 160 and written.groupby("dataset")["subj"].nunique().to_dict() == {
        "edge": 10, "silhouette": 10}
    frame, columns = load_dimensions(tmp_path)
    spots, points = family_table(tmp_path, frame, columns, n_resamples=100)
    spot = spots.set_index("metric").loc["ec_humans"]
    assert spot["unit"] == "trial" and spot["items"] == 320 and 0 < spot["p_value"] <= 1
    assert not spot["verdict"].startswith("not tested"), spot["verdict"]
    assert spot["dense"] == pytest.approx(rows[0]["ec_humans"])
    assert spot["value"] == pytest.approx(rows[spot["step"]]["ec_humans"])
