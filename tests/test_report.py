import numpy as np
import pandas as pd
import pytest

from lib import stats
from lib.report import dimension_correlations, load_dimensions, sparsity_table, sweet_spot, sweet_spot_table
from lib.results import collect, save_stage_metrics


def _per_image(values_by_step):
    return pd.DataFrame([{"step": s, "image": i, "m": v} for s, vals in values_by_step.items() for i, v in enumerate(vals)])


def test_sweet_spot_that_clearly_beats_dense():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.5, 200)
    frame = _per_image({0: base, 1: base + 0.10, 2: base + 0.02})  # step 1 better than dense on every image
    spot = sweet_spot(frame, "m", {0: 0.0, 1: 0.2, 2: 0.36}, n_resamples=200)
    assert spot["step"] == 1 and spot["sparsity"] == 0.2
    assert spot["value"] == pytest.approx(base.mean() + 0.10) and spot["dense"] == pytest.approx(base.mean())
    assert spot["gain_interval"] == pytest.approx([0.10, 0.10])  # paired: the gain is the same on every image
    assert spot["sparsity_interval"] == [0.2, 0.2] and spot["beats_dense"] and spot["verdict"].startswith("beats dense")
    assert spot["p_value"] == pytest.approx(1 / 201)  # 200 random row flips: none reaches the identity's max-t
    assert spot["items"] == 200 and spot["checkpoints"] == 2


def test_noise_does_not_beat_dense():
    rng = np.random.default_rng(1)
    frame = _per_image({s: rng.normal(0.5, 0.2, 100) for s in range(4)})
    spot = sweet_spot(frame, "m", {0: 0, 1: 0.2, 2: 0.36, 3: 0.49}, n_resamples=300)
    assert spot["gain_interval"][0] <= 0 or spot["step"] == 0
    assert not spot["beats_dense"] and spot["verdict"].startswith("no gain detected (could have detected >= ")


def test_the_best_of_many_noisy_checkpoints_is_not_a_sweet_spot():
    """The winner's curse: 8 images, 12 checkpoints, correlated within an image. The old per-checkpoint
    bootstrap claimed a gain on ~32% of such noise; the max-t test over checkpoints does not here."""
    rng = np.random.default_rng(2)
    shared = rng.normal(size=(8, 1))
    frame = _per_image({s: (np.sqrt(0.8) * shared + np.sqrt(0.2) * rng.normal(size=(8, 1)))[:, 0] for s in range(12)})
    spot = sweet_spot(frame, "m", {s: s / 12 for s in range(12)}, n_resamples=500)
    assert spot["exact"] and spot["p_value"] > 0.05 and not spot["beats_dense"]


def test_dense_as_the_sweet_spot_and_lower_is_better():
    frame = _per_image({0: [1.0, 2.0], 1: [3.0, 4.0]})
    assert sweet_spot(frame, "m", {0: 0, 1: 0.5}, n_resamples=50)["step"] == 1
    spot = sweet_spot(frame, "m", {0: 0, 1: 0.5}, n_resamples=50, higher_is_better=False)
    assert spot["step"] == 0 and spot["value"] == 1.5 and not spot["beats_dense"] and spot["p_value"] == 1
    assert spot["verdict"].startswith("too few items for a claim among 1 tests")


def test_missing_values_keep_the_images_paired():
    frame = _per_image({0: [1.0, 2.0, np.nan, 4.0], 2: [2.0, 3.0, 4.0, 5.0], 1: [1.5, np.nan, 3.5, 4.5]})
    spot = sweet_spot(frame, "m", {0: 0, 1: 0.2, 2: 0.36}, n_resamples=50)
    assert spot["items"] == 2 and spot["step"] == 2 and spot["sparsity"] == 0.36 and spot["gain"] == pytest.approx(1.0)


def test_sweet_spot_table_decides_over_all_metrics(tmp_path, monkeypatch):
    import dataclasses

    from lib import pipeline

    interpret = pipeline.STAGES["interpret"]  # deletion AUC (lower is better) as a tested metric here
    metrics = tuple(dataclasses.replace(m, tested=True) for m in interpret.metrics)
    monkeypatch.setitem(pipeline.STAGES, "interpret", dataclasses.replace(interpret, metrics=metrics))
    rng = np.random.default_rng(3)
    steps, images = range(12), 16
    rows = [{"step": s, "sparsity": round(1 - 0.8 ** s, 3), "test_acc": 0.5} for s in steps]
    save_stage_metrics(tmp_path / "prune" / "a" / "m", rows, plot="accuracy", arch="a", plan="m")
    shared = rng.normal(size=images)
    per_image = pd.DataFrame([{"step": s, "image": i, "rma_gain": shared[i] + rng.normal(0, 0.3) + (s == 4),
                               "rma_noise": shared[i] + rng.normal(0, 0.3),
                               "deletion_drop": shared[i] + rng.normal(0, 0.3) - (s == 7)}
                              for s in steps for i in range(images)])
    save_stage_metrics(tmp_path / "interpret" / "a" / "m",
                       [{**r, "rma_gain": 0.5, "rma_noise": 0.5, "deletion_drop": 0.5} for r in rows],
                       plot="scores", per_image=per_image, arch="a", plan="m")
    frame, columns = load_dimensions(tmp_path)
    spots = sweet_spot_table(tmp_path, frame, columns, n_resamples=400).set_index("metric")
    assert spots.loc["rma_gain", "beats_dense"] and spots.loc["rma_gain", "step"] == 4
    assert not spots.loc["rma_noise", "beats_dense"] and (spots["correction"] == "holm").all()
    # deletion AUC is declared lower-is-better (lib.pipeline): its sweet spot is the decrease at step 7
    assert spots.loc["deletion_drop", "beats_dense"] and spots.loc["deletion_drop", "step"] == 7
    assert not spots.loc["deletion_drop", "higher_is_better"]
    p = spots["p_value"].to_numpy()  # Holm over the three metrics
    assert spots["p_adjusted"].to_numpy() == pytest.approx(stats.adjust(p, "holm"))
    bh = sweet_spot_table(tmp_path, frame, columns, n_resamples=400, correction="bh").set_index("metric")
    assert (bh["p_adjusted"] <= spots["p_adjusted"]).all() and (bh["p_value"] == spots["p_value"]).all()


def test_sweet_spot_needs_the_dense_checkpoint():
    with pytest.raises(ValueError, match="step 0"):
        sweet_spot(_per_image({1: [1.0]}), "m", {1: 0.2})


def test_metrics_round_trip_and_tables(tmp_path):
    rows = [{"step": 0, "sparsity": 0.0, "test_acc": 0.9, "rma": 0.4}, {"step": 1, "sparsity": 0.2, "test_acc": 0.8, "rma": 0.5}]
    save_stage_metrics(tmp_path / "interpret" / "cnn" / "lrr", rows, plot="rma", arch="cnn", plan="lrr")
    frame = collect(tmp_path, "interpret")
    assert list(frame["rma"]) == [0.4, 0.5] and set(frame["arch"]) == {"cnn"}
    table = sparsity_table(frame, "rma")
    assert table.loc[("cnn", "lrr"), 20.0] == 0.5
    corr = dimension_correlations(pd.DataFrame({"a": [1, 2, 3, 4], "b": [2, 4, 6, 9], "c": [4, 3, 2, 1]}), ["a", "b", "c"])
    assert corr.loc["a", "b"] == pytest.approx(1.0) and corr.loc["a", "c"] == pytest.approx(-1.0)


def test_item_table_reads_the_contract_and_mis_extras_where_present(tmp_path):
    """A per-unit table with only the declared columns (``unit``, ``mis``) is read as it is (the report used
    to need MIS's ``backend`` column: KeyError); MIS's own table keeps the first backend's non-constant units,
    named by layer."""
    from lib.report import item_table

    contract = pd.DataFrame({"step": [0, 0, 1, 1], "unit": ["u0", "u1", "u0", "u1"], "mis": [0.6, 0.7, 0.8, 0.9]})
    contract.to_csv(tmp_path / "contract.csv", index=False)
    items = item_table("mis", tmp_path / "contract.csv")
    assert list(items["item"]) == ["u0", "u1", "u0", "u1"] and list(items["mis"]) == [0.6, 0.7, 0.8, 0.9]
    full = pd.DataFrame({"step": 0, "layer": ["conv1", "conv1", "conv2", "conv2"], "unit": [0, 1, 0, 0],
                         "backend": ["dino", "dino", "dino", "clip"], "constant": [False, True, False, False],
                         "mis": [0.6, 0.5, 0.7, 0.8]})
    full.to_csv(tmp_path / "full.csv", index=False)
    items = item_table("mis", tmp_path / "full.csv")
    assert list(items["item"]) == ["conv1:0", "conv2:0"] and list(items["mis"]) == [0.6, 0.7]


def test_the_report_reads_the_declared_matrix_and_names_the_rest(tmp_path):
    """#29: exactly the outputs params.yaml declares; a copied folder is named and not read; an empty matrix is
    refused; a params file from before the seed axis (no ``seeds``) reads folders without a seed level."""
    import yaml

    from lib.report import declared_folders, read_matrix, undeclared_outputs

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"archs": ["a"], "plans": ["m"], "seeds": [0, 1], "variants": {"interpret": {}}}))
    matrix = read_matrix(params)
    rows = [{"step": s, "sparsity": s * 0.2, "test_acc": 0.5} for s in range(3)]
    for seed in (0, 1):
        save_stage_metrics(tmp_path / "data" / "prune" / "a" / "m" / f"seed{seed}", rows, arch="a", plan="m", seed=seed)
    save_stage_metrics(tmp_path / "data" / "prune" / "a" / "backup", rows, arch="a", plan="m")
    assert undeclared_outputs(tmp_path / "data", matrix) == [str(tmp_path / "data" / "prune" / "a" / "backup" / "metrics.json")]
    with pytest.raises(FileNotFoundError, match="interpret output"):  # declared, not run: named, not skipped
        load_dimensions(tmp_path / "data", matrix)
    for seed in (0, 1):
        save_stage_metrics(tmp_path / "data" / "interpret" / "a" / "m" / f"seed{seed}",
                           [{**r, "rma_x": 0.1 * seed} for r in rows], arch="a", plan="m", seed=seed)
    for stage in ("discover", "align", "mis"):
        for seed in (0, 1):
            save_stage_metrics(tmp_path / "data" / stage / "a" / "m" / f"seed{seed}", rows, arch="a", plan="m", seed=seed)
    frame, _ = load_dimensions(tmp_path / "data", matrix)
    assert sorted(set(zip(frame["seed"], frame["step"]))) == [(s, k) for s in (0, 1) for k in range(3)]
    assert frame.groupby("seed")["rma_x"].first().tolist() == [0.0, 0.1]  # the backup (seed 0 too) was not read
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump({"archs": ["a"], "plans": ["m"]}))
    assert read_matrix(old)["seeds"] is None
    assert declared_folders(tmp_path, read_matrix(old))[("prune", "a", "m", 0)] == tmp_path / "prune" / "a" / "m"
    for key, empty in (("plans", []), ("archs", None), ("seeds", [])):
        params.write_text(yaml.safe_dump({"archs": ["a"], "plans": ["m"], "seeds": [0], key: empty}))
        with pytest.raises(ValueError, match=f"`{key}` is"):
            read_matrix(params)


def test_the_readable_table_rounds_numbers_intervals_and_p_values():
    from lib.report import readable

    spots = pd.DataFrame([{"arch": "a", "plan": "m", "metric": "rma_x", "gain": 0.1234567,
                           "gain_interval": [0.359999, 0.590399], "sparsity_interval": [0.2, 0.36],
                           "p_value": 0.000123456, "p_adjusted": 0.0311, "verdict": "beats dense " + "x" * 80},
                          {"arch": "a", "plan": "m", "metric": "rma_y", "verdict": "not tested: a secondary score"}])
    table = readable(spots)
    assert table.loc[0, "gain_interval"] == "[0.36, 0.59]" and table.loc[0, "sparsity_interval"] == "[0.2, 0.36]"
    assert table.loc[0, "gain"] == 0.123 and table.loc[0, "p_value"] == "0.00012" and table.loc[0, "p_adjusted"] == "0.031"
    assert table.loc[1, "gain_interval"] == "" and table.loc[1, "p_value"] == ""
    assert table.loc[0, "verdict"] == spots.loc[0, "verdict"]  # whole: show() displays it unclipped


def test_decisions_are_tested_from_the_per_trial_table_and_the_human_trials(tmp_path):
    """One network: shape bias from align's cue-conflict decisions, error consistency with the observers of
    ``human_trials.csv`` (where the align stage writes it), both by the swap test; a checkpoint that copies the
    observer's decisions is found, and error consistency with dense is shown, not tested."""
    from lib.report import HUMAN_TRIALS, family_table

    rng = np.random.default_rng(0)
    steps, trials = range(4), 120
    rows = [{"step": s, "sparsity": s * 0.2, "test_acc": 0.8} for s in steps]
    save_stage_metrics(tmp_path / "prune" / "a" / "m", rows, plot="accuracy", arch="a", plan="m")
    shape, texture = rng.integers(0, 4, trials), rng.integers(0, 4, trials)
    human = np.where(rng.random(trials) < 0.5, shape, texture)
    decisions = np.where(rng.random((trials, 4)) < 0.5, shape[:, None], texture[:, None])
    decisions[:, 2] = np.where(rng.random(trials) < 0.9, human, decisions[:, 2])  # step 2 decides like the human
    names = np.array(list("abcd"))
    table = pd.DataFrame({"trial": np.tile([f"cue-conflict/c/{i}" for i in range(trials)], 4),
                          "step": np.repeat(list(steps), trials), "dataset": "cue-conflict",
                          "image_id": np.tile(range(trials), 4), "category": np.tile(names[shape], 4),
                          "texture": np.tile(names[texture], 4), "object_response": names[decisions.T.ravel()],
                          "ood_score": rng.random(4 * trials)})
    metrics = [{**r, "ood_acc": 0.5, "shape_bias": 0.5, "ec_humans": 0.1, "ec_dense": 1.0} for r in rows]
    out = tmp_path / "align" / "a" / "m"
    save_stage_metrics(out, metrics, plot="alignment", per_image=table, arch="a", plan="m")
    pd.DataFrame({"subj": "s1", "dataset": "cue-conflict", "condition": "c", "image_id": range(trials),
                  "category": names[shape], "object_response": names[human]}).to_csv(out / HUMAN_TRIALS, index=False)
    frame, columns = load_dimensions(tmp_path)
    spots = family_table(tmp_path, frame, columns, n_resamples=400)[0].set_index("metric")
    assert spots.loc["ec_humans", "unit"] == "trial" and spots.loc["ec_humans", "step"] == 2
    assert spots.loc["ec_humans", "beats_dense"]
    assert spots.loc["shape_bias", "unit"] == "trial" and not pd.isna(spots.loc["shape_bias", "p_value"])
    assert spots.loc["ec_dense", "verdict"].startswith("not tested: consistency with the dense model is 1 at dense")
    (out / HUMAN_TRIALS).unlink()
    spots = family_table(tmp_path, frame, columns, n_resamples=400)[0].set_index("metric")
    assert "wrote no human observer trials (human_trials.csv)" in spots.loc["ec_humans", "verdict"]


def _two_seed_tree(root, sanity=None):
    """prune and interpret of (a, m) for seeds 0 and 1, three checkpoints; interpret with per-image rma_/rra_ of
    attributions ``good`` and ``bad`` and the top-level ``sanity`` of lib.interpret.sanity.verdicts."""
    rng = np.random.default_rng(5)
    rows = [{"step": s, "sparsity": s * 0.2, "test_acc": 0.8} for s in range(3)]
    for seed in (0, 1):
        save_stage_metrics(root / "prune" / "a" / "m" / f"seed{seed}", rows, arch="a", plan="m", seed=seed,
                           control=None)
        per_image = pd.DataFrame([{"step": s, "image": i, **{f"{m}_{a}": rng.random() for m in ("rma", "rra")
                                                             for a in ("good", "bad")}}
                                  for s in range(3) for i in range(6)])
        scores = [{**r, **{c: float(per_image.loc[per_image["step"] == r["step"], c].mean())
                           for c in per_image.columns if c not in ("step", "image")}} for r in rows]
        save_stage_metrics(root / "interpret" / "a" / "m" / f"seed{seed}", scores, per_image=per_image, arch="a",
                           plan="m", seed=seed, sanity=(sanity or {}).get(seed, {}))
    return rows


def test_forget_is_merged_into_every_seed_drawn_and_shown_untested(tmp_path):
    """#25 item 4: forget's population rows (one run per (arch, plan)) join every seed's rows on (arch, plan,
    step); they are panels of the dimensions figure and rows of the sweet-spot table, not tested, with the
    reason; params.yaml declares forget's folder only with a ``forget`` section, and a copy is named."""
    import yaml

    from lib.report import declared_folders, family_table, panels, read_matrix, undeclared_outputs

    rows = _two_seed_tree(tmp_path / "data")
    frame, columns = load_dimensions(tmp_path / "data")  # no matrix, forget not run: skipped
    assert "forget" not in columns and "flip_share" not in frame
    forget = [{**r, "flip_share": 0.1 * r["step"], "pie_share": 0.05 * r["step"], "classes_hurt": r["step"]}
              for r in rows]
    save_stage_metrics(tmp_path / "data" / "forget" / "a" / "m", forget, arch="a", plan="m", seeds=[0, 1])
    frame, columns = load_dimensions(tmp_path / "data")
    assert columns["forget"] == ["flip_share", "pie_share", "classes_hurt"]
    assert frame.set_index(["seed", "step"])["flip_share"].to_dict() == {
        (seed, step): pytest.approx(0.1 * step) for seed in (0, 1) for step in range(3)}
    assert ("forget", "flip_share", ["flip_share"]) in panels(columns)
    spots = family_table(tmp_path / "data", frame, columns, n_resamples=50)[0].set_index("metric")
    for metric in ("flip_share", "pie_share", "classes_hurt"):
        assert spots.loc[metric, "verdict"].startswith("not tested:")
        assert "0 at dense by definition" in spots.loc[metric, "verdict"] and pd.isna(spots.loc[metric, "p_value"])
    assert not pd.isna(spots.loc["rma_good", "p_value"])  # the family is the same as without forget

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"archs": ["a"], "plans": ["m"], "seeds": [0, 1]}))
    for stage in ("discover", "align", "mis"):
        for seed in (0, 1):
            save_stage_metrics(tmp_path / "data" / stage / "a" / "m" / f"seed{seed}", rows, arch="a", plan="m", seed=seed)
    matrix = read_matrix(params)
    assert ("forget", "a", "m") not in declared_folders(tmp_path / "data", matrix)
    assert undeclared_outputs(tmp_path / "data", matrix) == [str(tmp_path / "data" / "forget" / "a" / "m" / "metrics.json")]
    assert "forget" not in load_dimensions(tmp_path / "data", matrix)[1]  # not run by this params.yaml: not read
    params.write_text(yaml.safe_dump({"archs": ["a"], "plans": ["m"], "seeds": [0, 1], "forget": {"n_images": 6}}))
    matrix = read_matrix(params)
    assert declared_folders(tmp_path / "data", matrix)[("forget", "a", "m")] == tmp_path / "data" / "forget" / "a" / "m"
    save_stage_metrics(tmp_path / "data" / "forget" / "a" / "copy", forget, arch="a", plan="m")
    assert undeclared_outputs(tmp_path / "data", matrix) == [str(tmp_path / "data" / "forget" / "a" / "copy" / "metrics.json")]
    frame, columns = load_dimensions(tmp_path / "data", matrix)
    assert frame.loc[frame["step"] == 2, "classes_hurt"].tolist() == [2, 2]
    (tmp_path / "data" / "forget" / "a" / "m" / "metrics.json").unlink()
    with pytest.raises(FileNotFoundError, match="forget output"):  # declared, not run: named
        load_dimensions(tmp_path / "data", matrix)


def test_an_attribution_that_fails_the_sanity_check_is_marked(tmp_path):
    """#25 item 3: ``bad`` fails the randomisation test in one seed's interpret output (rank correlation 0.83 >=
    0.5), ``good`` passes in both: every per-attribution row of ``bad`` says so, in a ``sanity`` column and in the
    verdict; ``good``'s rows say it passes with the largest correlation over the outputs read."""
    from lib.report import SANITY_FAILED, family_table, readable

    check = lambda value: {"max_rank_correlation": value, "passed": value < 0.5, "threshold": 0.5}  # noqa: E731
    _two_seed_tree(tmp_path, sanity={0: {"good": check(0.12), "bad": check(0.31)},
                                     1: {"good": check(0.2), "bad": check(0.83)}})
    frame, columns = load_dimensions(tmp_path)
    spots = family_table(tmp_path, frame, columns, n_resamples=50)[0].set_index("metric")
    for column in ("rma_bad", "rra_bad"):
        assert spots.loc[column, "sanity"] == "fails: rank correlation 0.83 >= 0.5 with random weights"
        assert spots.loc[column, "verdict"].endswith(SANITY_FAILED)
        assert SANITY_FAILED == "; its maps fail the randomisation sanity check: read as the image, not the network"
    for column in ("rma_good", "rra_good"):
        assert spots.loc[column, "sanity"] == "passes (max 0.2)"
        assert "sanity" not in spots.loc[column, "verdict"]
    assert "sanity" in readable(spots.reset_index()).columns
    _two_seed_tree(tmp_path)  # no check run: no mark
    frame, columns = load_dimensions(tmp_path)
    spots = family_table(tmp_path, frame, columns, n_resamples=50)[0]
    assert "sanity" not in spots.columns and not spots["verdict"].str.contains("sanity").any()


def test_a_control_undefined_at_a_checkpoint_keeps_the_test_against_dense(tmp_path):
    """A retrained control whose RMA is undefined (NaN, an all-zero map) at one checkpoint for every image cannot be
    paired: the test against dense stands, the verdict says the control comparison was not made (the Study A dry
    run's resnet50 control on one machine)."""
    from lib.report import CONTROL_UNDEFINED, family_table

    rows = _two_seed_tree(tmp_path)
    for seed in (0, 1):
        save_stage_metrics(tmp_path / "prune" / "a" / "c" / f"seed{seed}", rows, arch="a", plan="c", seed=seed,
                           control="retrained", control_of="m")
        per_image = pd.DataFrame([{"step": s, "image": i, **{f"{m}_{a}": np.nan if (s == 2 and a == "bad") else 0.5
                                                             for m in ("rma", "rra") for a in ("good", "bad")}}
                                  for s in range(3) for i in range(6)])
        save_stage_metrics(tmp_path / "interpret" / "a" / "c" / f"seed{seed}", rows, per_image=per_image, arch="a",
                           plan="c", seed=seed)
    frame, columns = load_dimensions(tmp_path)
    spots = family_table(tmp_path, frame, columns, n_resamples=50)[0]
    spots = spots[spots["plan"] == "m"].set_index("metric")
    for column in ("rma_bad", "rra_bad"):
        assert not pd.isna(spots.loc[column, "p_value"]) and spots.loc[column, "verdict"].endswith(CONTROL_UNDEFINED)
        assert "no retrained control in the run" not in spots.loc[column, "verdict"]
    for column in ("rma_good", "rra_good"):  # defined everywhere: compared with the control as before
        assert not pd.isna(spots.loc[column, "p_control"]) and CONTROL_UNDEFINED not in spots.loc[column, "verdict"]
