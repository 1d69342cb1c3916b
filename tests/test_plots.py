"""The figures' shared rules (lib.plots): one colour per name in every figure, legends outside the data,
accuracy axes with chance, legible text, no placeholder figures; and lib.redraw's figures from saved tables."""

import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from lib import plots  # noqa: E402
from lib.report import plot_dimensions  # noqa: E402

ATTRIBUTION = ("gradcam", "guided_gradcam", "ig_smoothgrad", "saliency")
RESULTS = Path(__file__).resolve().parents[1] / "results"


def _dimensions(plans=("lrr",), steps=5):
    rng = np.random.default_rng(0)
    rows = []
    for plan in plans:
        for step in range(steps):
            row = {"arch": "cnn", "plan": plan, "step": step, "sparsity": 1 - 0.8 ** step,
                   "test_acc": 0.95 + 0.03 * rng.random(), "ood_acc": 0.2 + 0.02 * rng.random(), "mis": rng.random()}
            row.update({f"rma_{m}": rng.random() for m in ATTRIBUTION})
            row.update({f"corloc_{m}": rng.random() for m in ("lost", "tokencut")})
            rows.append(row)
    frame = pd.DataFrame(rows)
    columns = {"prune": ["test_acc"], "interpret": [f"rma_{m}" for m in ATTRIBUTION],
               "discover": ["corloc_lost", "corloc_tokencut"], "align": ["ood_acc"], "mis": ["mis"]}
    return frame, columns


def _line_colours(fig) -> dict:
    """label -> colour of every labelled line of ``fig`` (the CorLoc figure's "CorLoc lost" as "lost")."""
    out = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            label = line.get_label().removeprefix("CorLoc ")
            if not label.startswith("_"):
                out.setdefault(label, to_hex(line.get_color()))
    return out


def test_colour_is_one_per_name_and_distinct_within_a_kind():
    assert plots.colour("gradcam") == plots.colour("gradcam") == plots.COLOURS["gradcam"]
    for kind in (ATTRIBUTION + ("attention", "rollout"), ("lost", "tokencut"), ("lrr", "unstructured", "filters", "connections", "oneshot_magnitude", "studyB")):
        assert len({plots.colour(n) for n in kind}) == len(kind)
    # a schedule is a lighter shade of its criterion, distinct from the one-shot colour
    assert plots.colour("filters-iterative") != plots.colour("filters-oneshot") == plots.colour("filters")
    assert plots.colour("a name nobody listed") == plots.colour("a name nobody listed") in plots.FALLBACK


def test_two_figures_give_a_method_the_same_colour():
    from lib.interpret.plots import plot_scores
    from lib.discover.plots import plot_corloc

    frame, columns = _dimensions()
    report = _line_colours(plot_dimensions(frame, columns, "cnn"))
    rq1 = _line_colours(plot_scores(frame, ["rma"], ATTRIBUTION))
    rq2 = _line_colours(plot_corloc(frame.to_dict("records"), ["lost", "tokencut"]).figure)
    for attribution in ATTRIBUTION:
        assert rq1[attribution] == report[attribution] == plots.colour(attribution)
    for algorithm in ("lost", "tokencut"):
        assert rq2[algorithm] == report[algorithm] == plots.colour(algorithm)
    assert report["plan: lrr"] == plots.colour("lrr")  # metrics without variants: the plan's colour
    plt.close("all")


def _overlaps(fig, legend) -> list:
    fig.canvas.draw()
    box = legend.get_window_extent()
    return [ax for ax in fig.axes if ax.get_visible() and ax.axison and box.overlaps(ax.get_window_extent())]


def test_report_legend_is_one_per_figure_outside_the_panels_and_text_is_legible():
    frame, columns = _dimensions(plans=("lrr", "filters"))
    fig = plot_dimensions(frame, columns, "cnn", chance={"test_acc": 0.1})
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    assert _overlaps(fig, fig.legends[0]) == []
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert set(ATTRIBUTION) | {"lost", "tokencut", "plan: lrr", "plan: filters", "chance (0.1)"} <= labels
    sizes = [t.get_fontsize() for t in fig.findobj(matplotlib.text.Text) if t.get_text()]
    assert min(sizes) >= 9
    plt.close(fig)


def test_report_accuracy_panels_include_chance_or_say_why_not():
    frame, columns = _dimensions()
    fig = plot_dimensions(frame, columns, "cnn", chance={"test_acc": 0.1})
    panels = {ax.get_title().split("\n")[0]: ax for ax in fig.axes}
    test_acc, ood_acc = panels["prune: test_acc"], panels["align: ood_acc"]
    assert test_acc.get_ylim()[0] == 0 and test_acc.get_ylim()[1] >= 0.98  # not scaled to the data's 0.95-0.98
    assert any(line.get_linestyle() == "--" and line.get_ydata()[0] == 0.1 for line in test_acc.get_lines())
    assert ood_acc.get_ylim()[0] == 0 and "chance not given" in ood_acc.get_ylabel()
    plt.close(fig)


def test_alignment_figure_has_one_legend_below_and_no_placeholders():
    from lib.align import plots as align

    frame = pd.DataFrame({"step": [0, 1], "sparsity": [0.0, 0.5], "acc/edge": [0.5, 0.3], "acc/silhouette": [0.6, 0.2],
                          "arch": "cnn", "plan": "lrr"})
    humans = {"edge": {"accuracy": 0.9, "accuracy_min": 0.6, "accuracy_max": 0.95}}
    fig = align.plot_metric_per_dataset(frame, "acc", ["edge", "silhouette"], humans, "accuracy", chance=1 / 16)
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    assert _overlaps(fig, fig.legends[0]) == []
    assert {t.get_text() for t in fig.legends[0].get_texts()} == {"cnn / lrr", "humans (range over observers)",
                                                                  "chance (0.0625)"}
    assert all(ax.get_ylim()[0] == 0 for ax in fig.axes)
    assert align.plot_shape_bias(frame) is None  # no cue-conflict: no figure, not a picture of a sentence
    assert align.plot_distortion_curves(pd.DataFrame(), {}) is None
    plt.close("all")


def test_layer_profiles_name_every_checkpoint():
    from lib.mis.plots import plot_layer_profiles

    layers = pd.DataFrame([{"step": s, "sparsity": sp, "backend": "b", "layer": f"l{d}", "depth": d, "mis": 0.5 + d / 10}
                           for s, sp in enumerate((0.0, 0.3, 0.5, 0.7)) for d in range(3)])
    fig = plot_layer_profiles(layers)
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["0%", "30%", "50%", "70%"]
    assert _overlaps(fig, legend) == []
    plt.close(fig)


@pytest.mark.parametrize("name", ["lite0/align/lite0/oneshot", "lite0/discover/lite0/oneshot/seed0", "cifar10_resnet"])
def test_redraw_from_saved_tables(tmp_path, name, monkeypatch, capsys):
    from lib.redraw import main, redraw

    folder = tmp_path / Path(name).name  # a preset's folder keeps its name: its chance level comes from it
    shutil.copytree(RESULTS / name, folder, ignore=shutil.ignore_patterns("*.png"))
    monkeypatch.chdir(RESULTS.parent)  # the presets/ the folder's chance level comes from
    written = redraw(folder)
    assert written and all(p is None or p.is_file() for p in written.values())
    assert {p.name for p in (folder / "plots").glob("*.png")} == {f"{n}.png" for n, p in written.items() if p}
    if "align" in name:
        assert written["distortions"] is None  # the run has no parametric distortions: no figure
    with pytest.raises(FileNotFoundError, match="folder=.*metrics.json"):
        redraw(tmp_path / "missing")
    assert main([str(tmp_path / "missing")]) == 2  # the command line: one sentence, no traceback
    assert "has no metrics.json" in capsys.readouterr().err


def test_report_chance_comes_from_the_run(tmp_path):
    import torch

    from lib.models.registry import save_checkpoint
    from lib.report import chance_levels

    assert chance_levels(tmp_path, "cnn") == {} and plots.chance_of(tmp_path / "none.pt") is None  # not given
    save_checkpoint(tmp_path / "train" / "cnn" / "model.pt", torch.nn.Linear(2, 10), "small_cnn", 10)
    assert chance_levels(tmp_path, "cnn") == {"test_acc": pytest.approx(0.1)}
    (tmp_path / "align" / "cnn" / "lrr").mkdir(parents=True)  # RQ3 records its own: 1 / the 16 categories
    (tmp_path / "align" / "cnn" / "lrr" / "metrics.json").write_text('{"checkpoints": {}, "chance": {"ood_acc": 0.0625}}')
    assert chance_levels(tmp_path, "cnn") == {"test_acc": pytest.approx(0.1), "ood_acc": 0.0625}
    assert chance_levels(tmp_path, "vit") == {}  # another architecture's files say nothing of this one


def test_learning_curves_show_chance():
    history = pd.DataFrame({"epoch": [1, 2, 3], "train_acc": [0.5, 0.8, 0.9], "val_acc": [0.45, 0.7, 0.85]})
    fig = plots.plot_learning_curves(history, "cnn", chance=0.1)
    ax = fig.axes[0]
    assert ax.get_ylim()[0] == 0 and [t.get_text() for t in ax.get_legend().get_texts()] == [
        "train acc", "val acc", "chance (0.1)"]
    assert _overlaps(fig, ax.get_legend()) == []
    assert "chance not given" in plots.plot_learning_curves(history).axes[0].get_ylabel()
    plt.close("all")


def test_chance_of_a_pruning_stage_folder(tmp_path):
    import torch

    from lib.storage import save_json
    from lib.models.registry import save_checkpoint
    from lib.results import MANIFEST

    save_checkpoint(tmp_path / "checkpoints" / "step_00.pt", torch.nn.Linear(2, 16), "small_cnn", 16)
    save_json(tmp_path / MANIFEST, {"checkpoints": [{"step": 0, "file": "checkpoints/step_00.pt"}]})
    assert plots.chance_of(tmp_path) == pytest.approx(1 / 16)  # the stage's folder: its first checkpoint
    assert plots.chance_of({"model": "efficientnet_lite0"}) is None  # a dict source: not given


def test_a_saved_figure_is_shown_once_in_a_notebook_and_kept_open_elsewhere(tmp_path, monkeypatch):
    import IPython
    from IPython import display as ipython_display

    from lib.results import save_figure

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    save_figure(fig, tmp_path, "script")
    assert plt.fignum_exists(fig.number)  # a script (or lib.redraw) keeps its figure
    shown = []
    monkeypatch.setattr(IPython, "get_ipython", lambda: type("Shell", (), {"kernel": object()})())
    monkeypatch.setattr(ipython_display, "display", shown.append)
    path = save_figure(fig, tmp_path, "notebook")
    # the cell shows the saved file itself; the closed figure is not drawn again by the inline backend
    assert not plt.fignum_exists(fig.number)
    assert len(shown) == 1 and shown[0].data == path.read_bytes() == (tmp_path / "plots" / "script.png").read_bytes()


def test_report_draws_a_retrained_control_beside_the_checkpoint_it_controls_and_random_init_as_a_floor():
    frame, columns = _dimensions(plans=("lrr", "lrr_retrained", "random_init"))
    frame["control"] = frame["plan"].map({"lrr_retrained": "retrained", "random_init": "random_init"})
    frame["control_of"] = frame["plan"].map({"lrr_retrained": "lrr"})
    frame.loc[frame["plan"] != "lrr", "sparsity"] = 0.0  # controls are dense
    frame = frame[(frame["plan"] != "random_init") | (frame["step"] == 0)]
    fig = plot_dimensions(frame, columns, "cnn", chance={"test_acc": 0.1})
    mis = next(ax for ax in fig.axes if ax.get_title().startswith("mis: mis"))
    lines = {line.get_label(): line for line in mis.get_lines()}
    pruned = lines["plan: lrr"].get_xdata()
    np.testing.assert_allclose(lines["plan: lrr_retrained"].get_xdata(), pruned)  # at step r's sparsity, not 0
    floor = lines["plan: random_init"]
    expected = frame.loc[frame["plan"] == "random_init", "mis"].iloc[0]
    assert list(floor.get_ydata()) == [expected, expected] and floor.get_linestyle() == ":"
    plt.close(fig)
