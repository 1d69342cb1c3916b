"""The two readings issue #28 (item 8) corrects, recomputed from this folder's per-unit and per-image tables.

    python results/lite0/readings.py        (writes results/lite0/readings.json; seconds)

- MIS: the mean over the hidden units (the 7 blocks' channels, as the mis stage's `mis`), per backend, of dense,
  each pruned checkpoint and the two random networks (the mis stage's own `random_init` control and the
  `random_init` plan); each pruned checkpoint against dense paired over the same units (t test and Wilcoxon
  signed-rank); the share of the random-to-dense range a checkpoint keeps.
- CorLoc: per algorithm, each pruned checkpoint's hits against dense's on the same images (gained, lost) with an
  exact McNemar test (two-sided binomial on the discordant images), and the mean box area relative to dense's.
"""
import json
from pathlib import Path

import pandas as pd
from scipy import stats

HERE = Path(__file__).resolve().parent
OUTPUT_LAYERS = ("logits", "softmax")  # the classifier's units: reported apart, not in MIS's mean


def hidden_units(path):
    units = pd.read_csv(path)
    return units[~units.layer.isin(OUTPUT_LAYERS)]


def mis_readings(oneshot, random_plan):
    readings = {}
    for backend, rows in oneshot.groupby("backend"):
        checkpoints = rows[rows.control.isna()]
        by_step = {int(step): group.set_index(["layer", "unit"]).mis for step, group in checkpoints.groupby("step")}
        dense = by_step[0]
        control = rows[rows.control == "random_init"].mis.mean()
        plan = random_plan[random_plan.backend == backend]
        entry = {"dense": dense.mean(), "units": int(dense.size),
                 "random_init_control": control,
                 "random_init_plan": plan[plan.control.isna()].mis.mean() if len(plan) else None,
                 "collapse_control": rows[rows.control == "collapse"].mis.mean(), "steps": {}}
        for step, values in by_step.items():
            if step == 0:
                continue
            paired = pd.concat([values, dense], axis=1, keys=["pruned", "dense"], join="inner")
            difference = paired.pruned - paired.dense
            t = stats.ttest_rel(paired.pruned, paired.dense)
            entry["steps"][step] = {
                "mis": values.mean(), "difference": difference.mean(), "pairs": int(len(paired)),
                "t": t.statistic, "p_t": t.pvalue,
                "p_wilcoxon": stats.wilcoxon(paired.pruned, paired.dense).pvalue,
                "units_higher": int((difference > 0).sum()), "units_lower": int((difference < 0).sum()),
                # meaningful only where the random network scores below dense (a floor under the ceiling)
                "share_of_range_kept": ((values.mean() - control) / (dense.mean() - control)
                                        if dense.mean() > control else None)}
        readings[backend] = entry
    return readings


def box_area(frame, algorithm):
    return ((frame[f"{algorithm}_x1"] - frame[f"{algorithm}_x0"])
            * (frame[f"{algorithm}_y1"] - frame[f"{algorithm}_y0"]))


def corloc_readings(path):
    images = pd.read_csv(path)
    readings = {}
    for algorithm in ("lost", "tokencut"):
        dense = images[images.step == 0].set_index("image")
        entry = {"dense_hits": int(dense[f"hit_{algorithm}"].sum()), "images": int(len(dense)), "steps": {}}
        for step, group in images[images.step > 0].groupby("step"):
            pruned = group.set_index("image").loc[dense.index]
            lost = int((dense[f"hit_{algorithm}"] & ~pruned[f"hit_{algorithm}"]).sum())
            gained = int((~dense[f"hit_{algorithm}"] & pruned[f"hit_{algorithm}"]).sum())
            exact = stats.binomtest(min(lost, gained), lost + gained, 0.5).pvalue if lost + gained else 1.0
            entry["steps"][int(step)] = {
                "hits": int(pruned[f"hit_{algorithm}"].sum()), "lost": lost, "gained": gained,
                "mcnemar_exact_p": exact,
                "box_area_vs_dense": box_area(pruned, algorithm).mean() / box_area(dense, algorithm).mean() - 1}
        readings[algorithm] = entry
    return readings


def main():
    oneshot = hidden_units(HERE / "mis/lite0/oneshot/seed0/per_unit.csv")
    random_plan = hidden_units(HERE / "mis/lite0/random_init/seed0/per_unit.csv")
    readings = {"mis": mis_readings(oneshot, random_plan),
                "corloc_coco128": corloc_readings(HERE / "discover/lite0/oneshot/seed0/per_image.csv")}
    (HERE / "readings.json").write_text(json.dumps(readings, indent=1) + "\n")
    print(json.dumps(readings, indent=1))


if __name__ == "__main__":
    main()
