"""Does some pruned checkpoint beat the dense model? Selection-aware tests for the report's sweet spots.

A sweet spot is the checkpoint with the best mean of a metric over the evaluation items (images,
units), every checkpoint scored on the same items. Picking the best of a dozen checkpoints and then
testing its gain over dense as if it had been chosen in advance fires on noise (the winner's curse:
32% false claims measured with 8 images, 12 checkpoints and a within-image correlation of 0.8, for a
nominal 2.5%). This module keeps the selection inside every test and interval:

* :func:`sweet_spot` (one metric). The per-item differences ``d[i, j] = x[i, j] - x[i, 0]`` against
  dense (column 0; ``x`` negated first when lower is better) are tested with a **max-t paired
  sign-flip test** (Westfall & Young 1993, the single-step max-T adjustment): each item's whole row
  of differences is flipped at once, which keeps the correlation across checkpoints, and the
  statistic is the largest one-sided paired t over the pruned checkpoints. The sweet spot's p-value
  is the share of flips whose max-t reaches the sweet spot's own t: it controls the family-wise error
  over checkpoints (a false "the sweet spot beats dense" has probability <= alpha whichever
  checkpoints are truly better), and is exact (all 2^n flips enumerated) when 2^n <= ``n_resamples``.
  Studentizing puts checkpoints with noisier differences on the same scale (a plain mean would let the
  noisiest checkpoint dominate the max). The t of a flipped sample is a monotone function of
  ``sum_i d_ij / sqrt(n sum_i d_ij^2)`` (the denominator does not change under flips), so the flip
  distribution is one matrix product.
* The **gain interval** is a simultaneous max-|z| bootstrap interval over all pruned checkpoints
  (Romano & Wolf 2005, single step): items are resampled with replacement (paired), and the level
  quantile of ``max_j |mean*_j - mean_j| / se_j`` widens every checkpoint's interval at once, so the
  interval of the checkpoint that was selected keeps its coverage. The standard errors are those of
  the sample, not of each resample: with few items, resamples of one repeated item have no spread.
* The **location interval** (the sweet spot's sparsity) re-selects the best checkpoint in every
  bootstrap resample and takes the percentiles of the selected sparsities (the bootstrap of an argmax,
  cf. Hall & Miller 2010 on bootstrapping rankings: a guide to the uncertainty of a selection, not an
  exact confidence set when several checkpoints are nearly tied).
* :func:`adjust` and :func:`claim` control the error rate **across the metrics** of one report: Holm
  (1979) step-down for the family-wise error rate (default), or Benjamini & Hochberg (1995) step-up
  for the false discovery rate. A record ``beats_dense`` when its adjusted p-value is at most
  ``alpha`` and its sweet spot is not the dense checkpoint.
* :func:`detectable_gain` says what a "no" means: the smallest gain a one-sided paired t test would
  detect with 80% power at a Bonferroni share of alpha (over the checkpoints and the metrics),
  so that "no gain detected" and "too few items to tell" read differently.

numpy and scipy only; nothing from ``lib``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

POWER = 0.8
TEST = "max-t paired sign-flip (Westfall-Young single step)"


def _flips(n: int, n_resamples: int, rng) -> tuple[np.ndarray, bool]:
    """(flips, exact): every sign vector of ``n`` items when 2^n <= ``n_resamples``, else random ones."""
    if n < 31 and 2 ** n <= n_resamples:
        codes = np.arange(2 ** n)[:, None] >> np.arange(n)[None, :]
        return (1 - 2 * (codes & 1)).astype(float), True  # row 0: no flip
    return rng.choice(np.array([-1.0, 1.0]), size=(n_resamples, n)), False


def _flip_statistic(d: np.ndarray, flips: np.ndarray) -> np.ndarray:
    """``sum_i e_i d_ij / sqrt(n sum_i d_ij^2)`` per flip (rows) and checkpoint (columns): the paired t
    of the flipped sample is ``sqrt(n-1) r / sqrt(1 - r^2)``, increasing in ``r``, and the same function
    for every checkpoint, so the max of r and the max of t pick the same flips. 0 for a column of zeros."""
    n = len(d)
    norm = np.sqrt(n * (d ** 2).sum(0))
    scaled = np.divide(d, norm, out=np.zeros_like(d), where=norm > 0)
    return flips @ scaled


@functools.lru_cache(maxsize=4096)
def _noncentrality(df: int, level: float, power: float) -> float:
    """The noncentrality at which a one-sided t test at ``level`` on ``df`` degrees of freedom has ``power``."""
    from scipy import optimize, stats

    critical = stats.t.isf(level, df)
    miss = lambda delta: stats.nct.sf(critical, df, delta) - power  # noqa: E731
    high = critical + 2 * stats.norm.isf(1 - power) + 10
    while miss(high) < 0:
        high *= 2
    return float(optimize.brentq(miss, 0.0, high, xtol=1e-10))


def detectable_gain(sd: float, n: int, alpha: float, tests: int = 1, power: float = POWER) -> float:
    """Smallest true mean gain that a one-sided paired t test at level ``alpha / tests`` (Bonferroni)
    detects with probability ``power``, for differences of standard deviation ``sd`` on ``n`` items.

    Exact for normal differences and one test (the noncentral t: solves ``P(T'(n-1, delta) >
    t_crit) = power`` for ``delta``, gain = ``delta sd / sqrt(n)``). Bonferroni over the checkpoints
    and metrics is a conservative stand-in for the max-t and Holm procedures actually used (their
    critical values are lower), so a gain of this size would have been detected with at least about
    ``power``. NaN with fewer than 2 items or an undefined spread; 0 when the differences do not vary.
    """
    if n < 2 or not np.isfinite(sd):
        return float("nan")
    if sd == 0:
        return 0.0
    delta = _noncentrality(n - 1, alpha / max(int(tests), 1), power)
    return float(delta * sd / np.sqrt(n))


def sweet_spot(values: np.ndarray, sparsities: Sequence[float], higher_is_better: bool = True,
               n_resamples: int = 2000, seed: int = 0, level: float = 0.95, alpha: float = 0.05) -> dict:
    """The best checkpoint of one metric, its selection-aware test against dense and its intervals.

    ``values``: (items, checkpoints), column 0 the dense model, every checkpoint scored on the same
    items; rows with a missing value are dropped (the items stay paired). ``sparsities``: one per
    column. The sweet spot is the column with the best mean (ties: the first column, so a tie with
    dense is dense). See the module docstring for the methods. Returns a record with

    ``step_index`` (column of the sweet spot), ``sparsity``, ``value`` and ``dense`` (means, in the
    metric's units), ``gain`` (sweet spot - dense; dense - sweet spot when lower is better, so positive
    is better), ``gain_interval`` (simultaneous over the pruned checkpoints, at ``level``; [0, 0] when
    dense is the sweet spot, NaN with one item),
    ``sparsity_interval`` (the sweet spot re-selected in every bootstrap resample, at ``level``),
    ``selected_share`` (share of resamples that select the sweet spot's column), ``p_value`` (max-t
    sign-flip, adjusted over checkpoints; 1 when dense is the best), ``difference_sd`` (root mean
    square over the pruned checkpoints of the sd of the per-item differences), ``items``,
    ``checkpoints``, ``resamples``, ``exact`` (all flips enumerated), ``p_floor`` (smallest p the test
    can give), ``test``, ``higher_is_better``, ``alpha``; and, as the family of this one metric (see
    :func:`claim`, which a report reruns over all its metrics), ``p_adjusted``, ``beats_dense``,
    ``detectable_gain`` and ``verdict``.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(sparsities):
        raise ValueError(f"values must be (items, checkpoints) with one sparsity per checkpoint; got {values.shape} "
                         f"and {len(sparsities)} sparsities")
    values = values[~np.isnan(values).any(1)]
    n, k = values.shape
    if n == 0:
        raise ValueError("no item has a value at every checkpoint")
    sparsities = np.asarray(sparsities, dtype=float)
    sign = 1.0 if higher_is_better else -1.0
    x = sign * values
    means = x.mean(0)
    best = int(np.argmax(means))
    rng = np.random.default_rng(seed)
    tail = (1 - level) / 2

    # Location: re-select the best checkpoint in every paired bootstrap resample.
    weights = rng.multinomial(n, np.full(n, 1 / n), size=n_resamples) / n  # (resamples, items)
    boot = weights @ x  # (resamples, checkpoints)
    chosen = boot.argmax(1)
    picked = np.sort(sparsities[chosen])
    sparsity_interval = [float(np.quantile(picked, tail, method="lower")),
                         float(np.quantile(picked, 1 - tail, method="higher"))]

    d = x[:, 1:] - x[:, :1]  # (items, pruned checkpoints)
    gain = float(means[best] - means[0])
    sd = d.std(0, ddof=1) if n > 1 else np.full(k - 1, np.nan)
    difference_sd = float(np.sqrt(np.mean(sd ** 2))) if k > 1 else float("nan")
    p_value, exact, p_floor, gain_interval = 1.0, False, float("nan"), [gain, gain]
    if k > 1:
        flips, exact = _flips(n, n_resamples, rng)
        p_floor = 2.0 ** -n if exact else max(2.0 ** -n, 1 / (len(flips) + 1))
        if best > 0:
            stat = _flip_statistic(d, flips)
            observed = _flip_statistic(d, np.ones((1, n)))[0, best - 1]
            reached = int((stat.max(1) >= observed - 1e-12).sum())
            p_value = reached / len(flips) if exact else (reached + 1) / (len(flips) + 1)
        # Simultaneous interval: max over pruned checkpoints of the standardised bootstrap deviation.
        if n > 1:
            se = sd / np.sqrt(n)
            deviation = (boot[:, 1:] - boot[:, :1]) - d.mean(0)
            z = np.abs(np.divide(deviation, se, out=np.zeros_like(deviation), where=se > 0))
            critical = float(np.quantile(z.max(1), level))
            half = critical * se[best - 1] if best > 0 else 0.0
            gain_interval = [gain - half, gain + half]
        else:
            gain_interval = [float("nan"), float("nan")]
    record = {
        "step_index": best, "sparsity": float(sparsities[best]), "value": float(sign * means[best]),
        "dense": float(sign * means[0]), "gain": gain, "gain_interval": [float(v) for v in gain_interval],
        "sparsity_interval": sparsity_interval, "selected_share": float(np.mean(chosen == best)),
        "p_value": float(p_value), "difference_sd": difference_sd, "items": int(n), "checkpoints": int(k - 1),
        "resamples": int(n_resamples), "exact": bool(exact), "p_floor": float(p_floor), "test": TEST,
        "higher_is_better": bool(higher_is_better), "alpha": float(alpha),
    }
    return claim([record], alpha)[0]


def adjust(p_values, method: str = "holm") -> np.ndarray:
    """Adjusted p-values over one family: ``"holm"`` (Holm 1979, step-down Bonferroni: family-wise
    error rate under any dependence) or ``"bh"`` (Benjamini & Hochberg 1995, step-up: false discovery
    rate under independence or positive regression dependence). Missing (NaN) p-values stay missing
    and do not count in the family. Reject where the adjusted p-value is <= alpha."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, np.nan)
    present = np.flatnonzero(~np.isnan(p))
    m = len(present)
    if m == 0:
        return out
    order = present[np.argsort(p[present], kind="stable")]
    ranked = p[order]
    if method == "holm":
        adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * ranked))
    elif method in ("bh", "fdr_bh"):
        adjusted = np.minimum.accumulate(np.minimum(1.0, m / np.arange(1, m + 1) * ranked)[::-1])[::-1]
    else:
        raise ValueError(f"unknown correction {method!r}; choose 'holm' (family-wise) or 'bh' (false discovery rate)")
    out[order] = adjusted
    return out


def claim(records: list[dict], alpha: float = 0.05, method: str = "holm") -> list[dict]:
    """Decide the sweet spots of one report's family of metrics at once (the records of
    :func:`sweet_spot`; updated in place and returned).

    Sets ``p_adjusted`` (:func:`adjust` over the records' ``p_value``), ``beats_dense`` (adjusted p <=
    ``alpha`` and the sweet spot is not dense), ``correction``, ``alpha``, ``detectable_gain`` (see
    :func:`detectable_gain` with the record's ``difference_sd``, a root mean square over checkpoints;
    Bonferroni over the record's checkpoints and the family's metrics) and
    ``verdict``: "beats dense"; "too few items to test" when even the most extreme sign flip cannot
    reach ``alpha`` (2^-n > alpha with n items), "too few resamples to test" likewise for the random
    flips; else "no gain detected (could have detected >= X)" with X the detectable gain.
    """
    adjusted = adjust([r["p_value"] for r in records], method)
    family = max(int(np.sum(~np.isnan(adjusted))), 1)
    for record, p in zip(records, adjusted):
        floor = record.get("p_floor", float("nan"))
        detectable = detectable_gain(record["difference_sd"], record["items"], alpha,
                                     tests=record["checkpoints"] * family)
        record.update(p_adjusted=float(p), correction=method, alpha=float(alpha), detectable_gain=detectable,
                      beats_dense=bool(p <= alpha and record["step_index"] != 0))
        if record["beats_dense"]:
            verdict = "beats dense"
        elif record["checkpoints"] == 0:
            verdict = "no pruned checkpoint to test"
        elif 2.0 ** -record["items"] > alpha:
            n = record["items"]
            verdict = f"too few items to test ({n}: the smallest sign-flip p is {2.0 ** -n:.3g})"
        elif floor > alpha:
            verdict = f"too few resamples to test (smallest p {floor:.3g})"
        else:
            verdict = f"no gain detected (could have detected >= {detectable:.3g})"
        record["verdict"] = verdict
    return records
