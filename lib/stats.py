"""Does some pruned checkpoint beat the dense model, and is that a claim about pruning? Selection-aware tests
for the report's sweet spots, with the network as the unit of inference when there are several.

A sweet spot is the checkpoint with the best mean of a metric over the evaluation items (images, units,
trials), among the checkpoints that may be claimed (``claimable``: the report's accuracy guard), every
checkpoint scored on the same items. Picking the best of a dozen checkpoints and then testing its gain as if
it had been chosen in advance fires on noise (the winner's curse), so the selection stays inside every test
and interval. What the test can claim depends on how many independent networks (seeds) a step has:

* **One network per step** (:func:`sweet_spot` with ``values`` of shape (items, checkpoints)). The per-item
  differences ``d[i, j] = x[i, j] - x[i, 0]`` against dense (column 0; ``x`` negated first when lower is
  better) are tested with a **max-t paired sign-flip test** over the claimable checkpoints (Westfall & Young
  1993, single-step max-T): each item's row of differences is flipped at once (keeping the correlation across
  checkpoints) and the statistic is the largest one-sided paired t. Exact (all 2^n flips) when 2^n <=
  ``n_resamples``. This is valid *given the networks*: it says that this pruned network beats this dense
  network on the population of items. It cannot say anything about pruning: two trainings of the same recipe
  differ by a random offset per network, and a test over items takes that offset for an effect (simulated
  with 16 items, 12 checkpoints: 18% "claims" at p <= 0.05 when the offsets' SD is a quarter of the item
  noise, 71% when equal). Its verdicts say they are about one network.
* **Several networks per step** (``values`` of shape (seeds, items, checkpoints); seed ``s`` of every column
  is one training run). The unit of inference is the network: per seed, the mean over items of each
  claimable checkpoint minus that seed's dense mean, ``D[s, j]``; a **one-sample t test over seeds** (df =
  seeds - 1) per checkpoint; **Bonferroni** over the claimable checkpoints for the selected one (its p times
  their number). Under the null "pruning does not change the population mean of the metric", with each
  (seed, checkpoint) network carrying its own random offset of any size, ``D[s, j]`` are independent over
  seeds with mean 0, so the test holds its level for normal offsets whatever the item noise (a random-effects
  analysis: the between-network spread is the error term; cf. Bouthillier et al. 2021, "Accounting for
  variance in machine learning benchmarks"; Dror et al. 2019 for the failure of item-level tests). An
  intersection-union test ("each seed's own item-level test rejects", Berger 1982) is reported beside it as
  ``p_every_network``: it is valid for "every one of these networks beats its dense network", again a
  statement given the networks, and fires far above alpha under the population null (each seed's offset is
  fixed given the networks), so no claim rests on it. With S seeds the t test on S - 1 degrees of freedom at a
  Bonferroni share of alpha needs a large gain: see :func:`detectable_gain` (at 80% power, 11 claimable
  checkpoints and a family of 16 tests: three seeds about 31 between-network SDs of ``D``; five seeds 5.5;
  ten 2.0; twenty 1.1). Three seeds show a large, consistent effect of pruning or nothing.
* **A control** (``reference``: the dense-retrained control, the same schedule with nothing pruned, scored on
  the same items at the same steps): the same test on ``x - reference`` at the selected checkpoint, with the
  same selection adjustment over the claimable checkpoints. "Beats dense and its retrained control" is the
  intersection-union of the two tests (p = the larger of both; Berger 1982), so it implies "beats dense".
* **Decisions, not means** (:func:`swap_sweet_spot`, shape bias and error consistency: ratios and kappas of
  decision counts): a **paired swap test** (a permutation test on matched pairs): per trial, the pruned and the
  dense model's decisions are exchanged with probability 1/2, exchangeable under the null that the two
  networks decide alike on every trial; the statistic is the metric's difference, recomputed from the swapped
  decisions, so no per-item mean is needed. Bonferroni over the claimable checkpoints for the selected one.
  With several seeds these metrics are network-level numbers and take the seed-level t test above.
* **Intervals**: one network: a simultaneous max-|z| bootstrap interval over the claimable checkpoints (Romano
  & Wolf 2005), items resampled with replacement; several: the t interval over seeds at a Bonferroni share
  of ``1 - level``. The **location interval** re-selects the best checkpoint in every bootstrap resample of
  the items (one network) or of the seeds (several) (cf. Hall & Miller 2010).
* :func:`adjust` and :func:`claim` control the error rate **across the report's family**: every test against
  dense and every "beats dense and its control" test, Holm (1979) step-down (default) or Benjamini &
  Hochberg (1995).
* :func:`detectable_gain` says what a "no" means, from the spread of the claimable checkpoints only, at the
  family's multiplier (Bonferroni over the claimable checkpoints times the family's number of tests, which is
  Holm's first step); when even the smallest p the test can give, times the family's size, is above alpha,
  the verdict says that no claim was attainable instead.

numpy and scipy only; nothing from ``lib``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np

POWER = 0.8
TEST_ITEMS = "max-t paired sign-flip over items (Westfall-Young single step), one network"
TEST_NETWORKS = "one-sample t over seeds of the per-network mean difference, Bonferroni over checkpoints"
TEST_SWAP = "paired swap of decisions per trial, Bonferroni over checkpoints, one network"


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


def _max_t_p(d: np.ndarray, column: int, flips: np.ndarray, exact: bool) -> float:
    """The max-t sign-flip p-value of column ``column`` of the per-item differences ``d`` (items, checkpoints)."""
    stat = _flip_statistic(d, flips)
    observed = _flip_statistic(d, np.ones((1, len(d))))[0, column]
    reached = int((stat.max(1) >= observed - 1e-12).sum())
    return reached / len(flips) if exact else (reached + 1) / (len(flips) + 1)


def _t_p(D: np.ndarray) -> np.ndarray:
    """One-sided one-sample t p-values (mean > 0) per column of ``D`` (seeds, checkpoints); a column without
    spread: 0 if its mean is positive, else 1."""
    from scipy import stats

    s = len(D)
    mean, sd = D.mean(0), D.std(0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / (sd / np.sqrt(s))
    p = stats.t.sf(t, s - 1)
    return np.where(sd > 0, p, np.where(mean > 0, 0.0, 1.0))


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
    """Smallest true mean gain that a one-sided one-sample t test at level ``alpha / tests`` (Bonferroni)
    detects with probability ``power``, for differences of standard deviation ``sd`` on ``n`` units (items
    of one network, or networks).

    Exact for normal differences and one test (the noncentral t: solves ``P(T'(n-1, delta) > t_crit) =
    power`` for ``delta``, gain = ``delta sd / sqrt(n)``). Bonferroni is what the network-level test uses and
    a conservative stand-in for the max-t and Holm procedures (their critical values are lower). NaN with
    fewer than 2 units or an undefined spread; 0 when the differences do not vary.
    """
    if n < 2 or not np.isfinite(sd):
        return float("nan")
    if sd == 0:
        return 0.0
    delta = _noncentrality(n - 1, alpha / max(int(tests), 1), power)
    return float(delta * sd / np.sqrt(n))


def _networks(values) -> np.ndarray:
    """(seeds, items, checkpoints) from one network's (items, checkpoints) or several networks' array."""
    values = np.asarray(values, dtype=float)
    return values[None] if values.ndim == 2 else values


def _candidates(claimable, k: int) -> list[int]:
    """The pruned columns (1..k-1) that may be claimed."""
    if claimable is None:
        return list(range(1, k))
    claimable = np.asarray(claimable, dtype=bool)
    if len(claimable) != k:
        raise ValueError(f"claimable must have one entry per checkpoint ({k}); got {len(claimable)}")
    return [j for j in range(1, k) if claimable[j]]


def sweet_spot(values, sparsities: Sequence[float], higher_is_better: bool = True, n_resamples: int = 2000,
               seed: int = 0, level: float = 0.95, alpha: float = 0.05, claimable=None, reference=None) -> dict:
    """The best claimable checkpoint of one metric, its selection-aware test against dense (and against the
    retrained control) and its intervals.

    ``values``: (items, checkpoints) for one network per step, or (seeds, items, checkpoints); column 0 the
    dense model, every checkpoint scored on the same items; items with a missing value anywhere are dropped
    (the items stay paired). ``sparsities``: one per column. ``claimable``: one bool per column (the accuracy
    guard; default every pruned column): only those may be the sweet spot, and the selection adjustment is over
    them. ``reference``: the dense-retrained control's values, the same shape (its column j: the control of
    step j). The sweet spot is the claimable column with the best mean over items and seeds if it is better
    than dense, else dense (ties: the earlier column). See the module docstring for the tests. Returns a
    record with

    ``step_index``, ``sparsity``, ``value`` and ``dense`` (means in the metric's units), ``gain`` (sweet spot -
    dense, positive is better), ``gain_interval`` (simultaneous over the claimable checkpoints), ``sparsity_interval``,
    ``selected_share``, ``p_value`` (against dense, adjusted for the selection; 1 when dense is the best),
    ``unit`` ("network" or "item"), ``seeds``, ``items``, ``checkpoints`` (claimable), ``checkpoints_total``
    (pruned), ``difference_sd`` (root mean square over the claimable checkpoints of the differences' sd over
    the unit), ``resamples``, ``exact``, ``p_floor`` (smallest p the test can give), ``test``,
    ``higher_is_better``, ``alpha``; with a reference ``control`` (its mean at the sweet spot),
    ``control_gain`` and ``p_control`` (selection-adjusted); with several seeds ``p_every_network`` (the
    intersection-union of the seeds' item-level tests, given the networks); and, as a family of this one
    metric (see :func:`claim`), ``p_adjusted``, ``beats_dense``, ``beats_control``, ``detectable_gain`` and
    ``verdict``.
    """
    x = _networks(values)
    if x.ndim != 3 or x.shape[2] != len(sparsities):
        raise ValueError(f"values must be (items, checkpoints) or (seeds, items, checkpoints) with one sparsity per "
                         f"checkpoint; got {np.shape(values)} and {len(sparsities)} sparsities")
    ref = None if reference is None else _networks(reference)
    if ref is not None and ref.shape != x.shape:
        raise ValueError(f"reference must have the values' shape {x.shape}; got {ref.shape}")
    keep = ~np.isnan(x).any((0, 2)) & (True if ref is None else ~np.isnan(ref).any((0, 2)))
    x = x[:, keep]
    s, n, k = x.shape
    if n == 0:
        raise ValueError("no item has a value at every checkpoint")
    sparsities = np.asarray(sparsities, dtype=float)
    sign = 1.0 if higher_is_better else -1.0
    x = sign * x
    if ref is not None:
        ref = sign * ref[:, keep]
    candidates = _candidates(claimable, k)
    m = len(candidates)
    rng = np.random.default_rng(seed)
    tail = (1 - level) / 2
    seed_means = x.mean(1)  # (seeds, checkpoints)
    means = seed_means.mean(0)
    pool = [0] + candidates

    def select(column_means: np.ndarray) -> np.ndarray:
        """Index (into ``pool``) of the best of dense and the candidates, per row; ties: the earlier column."""
        return column_means[..., pool].argmax(-1)

    best = pool[int(select(means))]
    network = s >= 2
    unit_values = seed_means if network else x[0]  # the resampled units: networks, or items of the one network
    weights = rng.multinomial(len(unit_values), np.full(len(unit_values), 1 / len(unit_values)),
                              size=n_resamples) / len(unit_values)
    boot = weights @ unit_values  # (resamples, checkpoints)
    chosen = np.asarray(pool)[select(boot)]
    picked = np.sort(sparsities[chosen])
    sparsity_interval = [float(np.quantile(picked, tail, method="lower")),
                         float(np.quantile(picked, 1 - tail, method="higher"))]

    gain = float(means[best] - means[0])
    d = unit_values[:, candidates] - unit_values[:, :1]  # (units, claimable checkpoints)
    units = len(d)
    sd = d.std(0, ddof=1) if units > 1 else np.full(m, np.nan)
    difference_sd = float(np.sqrt(np.mean(sd ** 2))) if m else float("nan")
    record = {"p_value": 1.0, "exact": False, "p_floor": float("nan"), "gain_interval": [gain, gain]}
    column = candidates.index(best) if best in candidates else None
    if network:
        record.update(test=TEST_NETWORKS, exact=True, p_floor=0.0 if s > 1 else float("nan"))
        if column is not None:
            record["p_value"] = float(min(1.0, m * _t_p(d)[column]))
            from scipy import stats as sps

            half = sps.t.isf((1 - level) / 2 / m, s - 1) * sd[column] / np.sqrt(s)
            record["gain_interval"] = [gain - half, gain + half]
            every = []
            for net in x:
                flips, exact = _flips(n, n_resamples, rng)
                every.append(_max_t_p(net[:, candidates] - net[:, :1], column, flips, exact))
            record["p_every_network"] = float(max(every))
    else:
        record["test"] = TEST_ITEMS
        if m:
            flips, exact = _flips(n, n_resamples, rng)
            record.update(exact=exact, p_floor=2.0 ** -n if exact else max(2.0 ** -n, 1 / (len(flips) + 1)))
            if column is not None:
                record["p_value"] = _max_t_p(d, column, flips, exact)
            if n > 1:  # simultaneous interval: max over claimable checkpoints of the standardised deviation
                se = sd / np.sqrt(n)
                deviation = (boot[:, candidates] - boot[:, :1]) - d.mean(0)
                z = np.abs(np.divide(deviation, se, out=np.zeros_like(deviation), where=se > 0))
                half = float(np.quantile(z.max(1), level)) * se[column] if column is not None else 0.0
                record["gain_interval"] = [gain - half, gain + half]
            else:
                record["gain_interval"] = [float("nan"), float("nan")]
    if ref is not None:
        ref_means = ref.mean(1)
        # p 1 when dense is the sweet spot (no claim to test): the test still counts in the family's size
        record.update(control=float(sign * ref_means.mean(0)[best]), control_gain=float(means[best] - ref_means.mean(0)[best]),
                      p_control=1.0)
        if column is not None:
            if network:
                record["p_control"] = float(min(1.0, m * _t_p(seed_means[:, candidates] - ref_means[:, candidates])[column]))
            else:
                flips, exact = _flips(n, n_resamples, rng)
                record["p_control"] = _max_t_p(x[0][:, candidates] - ref[0][:, candidates], column, flips, exact)
    record.update({
        "step_index": best, "sparsity": float(sparsities[best]), "value": float(sign * means[best]),
        "dense": float(sign * means[0]), "gain": gain,
        "gain_interval": [float(v) for v in record["gain_interval"]], "sparsity_interval": sparsity_interval,
        "selected_share": float(np.mean(chosen == best)), "difference_sd": difference_sd,
        "unit": "network" if network else "item", "seeds": int(s), "items": int(n), "checkpoints": int(m),
        "checkpoints_total": int(k - 1), "resamples": int(n_resamples), "higher_is_better": bool(higher_is_better),
        "alpha": float(alpha),
    })
    return claim([record], alpha)[0]


def swap_sweet_spot(decisions, statistic: Callable[[np.ndarray], np.ndarray], sparsities: Sequence[float],
                    higher_is_better: bool = True, n_resamples: int = 2000, seed: int = 0, alpha: float = 0.05,
                    claimable=None, reference=None) -> dict:
    """The best claimable checkpoint of a metric computed from one network's decisions (shape bias, error
    consistency), tested against dense by a paired swap of the decisions per trial.

    ``decisions``: (trials, checkpoints), column 0 the dense model's, any numeric code. ``statistic``: maps an
    array of decision vectors (rows, trials) to the metric per row (e.g. the shape bias of each row). Per
    resample and trial, the decisions of the selected checkpoint and of dense are exchanged with probability
    1/2 and the difference of the statistic recomputed; the p-value is the share of resamples (counting the
    observed one) whose difference reaches the observed one, times the number of claimable checkpoints
    (Bonferroni: the selection). ``reference``: the retrained control's decisions, the same shape, for
    ``p_control``. The record has the keys of :func:`sweet_spot` (no gain interval: NaN).
    """
    decisions = np.asarray(decisions, dtype=float)
    t, k = decisions.shape
    if k != len(sparsities):
        raise ValueError(f"decisions must be (trials, checkpoints) with one sparsity per checkpoint; got "
                         f"{decisions.shape} and {len(sparsities)} sparsities")
    sign = 1.0 if higher_is_better else -1.0
    values = sign * statistic(decisions.T)
    candidates = _candidates(claimable, k)
    m = len(candidates)
    pool = [0] + candidates
    best = pool[int(np.argmax(values[pool]))]
    rng = np.random.default_rng(seed)

    def swapped_p(mine: np.ndarray, other: np.ndarray) -> float:
        swap = rng.random((n_resamples, t)) < 0.5
        a, b = np.where(swap, other, mine), np.where(swap, mine, other)
        null = sign * (statistic(a) - statistic(b))
        observed = sign * (statistic(mine[None])[0] - statistic(other[None])[0])
        null = np.nan_to_num(null, nan=-np.inf)
        return float(min(1.0, m * (1 + int((null >= observed - 1e-12).sum())) / (n_resamples + 1)))

    record = {"p_value": 1.0, "test": TEST_SWAP, "exact": False, "p_floor": 1 / (n_resamples + 1)}
    if best != 0:
        record["p_value"] = swapped_p(decisions[:, best], decisions[:, 0])
    if reference is not None:
        reference = np.asarray(reference, dtype=float)
        control = float(sign * statistic(reference.T)[best])
        record.update(control=control, control_gain=float(values[best] - sign * control), p_control=1.0)
        if best != 0:
            record["p_control"] = swapped_p(decisions[:, best], reference[:, best])
    gain = float(values[best] - values[0])
    record.update({
        "step_index": best, "sparsity": float(np.asarray(sparsities, dtype=float)[best]),
        "value": float(sign * values[best]), "dense": float(sign * values[0]), "gain": gain,
        "gain_interval": [float("nan"), float("nan")], "sparsity_interval": [float("nan"), float("nan")],
        "selected_share": float("nan"), "difference_sd": float("nan"), "unit": "trial", "seeds": 1, "items": int(t),
        "checkpoints": int(m), "checkpoints_total": int(k - 1), "resamples": int(n_resamples),
        "higher_is_better": bool(higher_is_better), "alpha": float(alpha),
    })
    return claim([record], alpha)[0]


def shape_bias(decisions: np.ndarray, shape: np.ndarray, texture: np.ndarray) -> np.ndarray:
    """Geirhos et al. 2019's shape bias of each row of ``decisions`` (rows, trials) on cue-conflict trials with
    the given shape and texture classes: shape decisions / (shape + texture decisions), over the trials whose
    two cues differ. NaN for a row with neither."""
    decisions = np.atleast_2d(decisions)
    conflict = shape != texture
    hits_shape = ((decisions == shape) & conflict).sum(1)
    hits_texture = ((decisions == texture) & conflict).sum(1)
    total = hits_shape + hits_texture
    return np.divide(hits_shape, total, out=np.full(len(decisions), np.nan), where=total > 0)


def kappa(correct: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Cohen's kappa of trial-wise correctness (Geirhos, Meding & Wichmann 2020) between each row of
    ``correct`` (rows, trials) and the one vector ``other`` (trials,): (observed - expected) / (1 - expected),
    1 where observed is 1."""
    correct = np.atleast_2d(correct).astype(float)
    other = np.asarray(other, dtype=float)
    p1, p2 = correct.mean(1), other.mean()
    expected = p1 * p2 + (1 - p1) * (1 - p2)
    observed = (correct == other).mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = (observed - expected) / (1 - expected)
    return np.where(observed == 1.0, 1.0, value)


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


def scope(record: dict) -> str:
    """What a claim of ``record`` is about: the networks it was tested on, or pruning."""
    if record.get("seeds", 1) >= 2:
        return f"across {record['seeds']} networks per step"
    return "about this one network per step, not about pruning"


def claim(records: list[dict], alpha: float = 0.05, method: str = "holm") -> list[dict]:
    """Decide the sweet spots of one report's family at once (records of :func:`sweet_spot` or
    :func:`swap_sweet_spot`; updated in place and returned).

    The family is every record's test against dense and, where the record has a control, its "beats dense
    and its retrained control" test (p = max(p_value, p_control)); ``family_tests`` is their number N. Sets
    ``p_adjusted`` and ``p_adjusted_control`` (:func:`adjust` over the family), ``beats_dense`` (adjusted p
    <= ``alpha`` and the sweet spot is not dense), ``beats_control`` (the same for the control test; None
    without a control), ``correction``, ``alpha``, ``family_tests``, ``detectable_gain`` (see
    :func:`detectable_gain` with the record's ``difference_sd`` over its unit; Bonferroni over its claimable
    checkpoints times N) and ``verdict``, one of:

    "beats dense and its retrained control [scope]", "beats dense, not its retrained control (adjusted p X)
    [scope]", "beats dense; no retrained control in the run [scope]"; "no pruned checkpoint to test"; "no
    checkpoint within the accuracy tolerance to claim"; "too few items for a claim among N tests (smallest p
    X, times N: Y)"; "no gain detected (could have detected >= X)" (without a spread: "no gain detected");
    [scope] being :func:`scope` in brackets.
    """
    both = [max(r["p_value"], r["p_control"]) if not np.isnan(r.get("p_control", np.nan)) else np.nan
            for r in records]
    adjusted = adjust([r["p_value"] for r in records] + both, method)
    family = max(int(np.sum(~np.isnan(adjusted))), 1)
    for i, record in enumerate(records):
        p, p_both = adjusted[i], adjusted[len(records) + i]
        units = record["seeds"] if record.get("unit") == "network" else record["items"]
        detectable = detectable_gain(record["difference_sd"], units, alpha, tests=max(record["checkpoints"], 1) * family)
        beats = bool(p <= alpha and record["step_index"] != 0)
        has_control = "p_control" in record
        record.update(p_adjusted=float(p), p_adjusted_control=float(p_both) if has_control else None, correction=method, alpha=float(alpha),
                      family_tests=family, detectable_gain=detectable, beats_dense=beats,
                      beats_control=bool(beats and p_both <= alpha) if has_control else None)
        floor = record.get("p_floor", float("nan"))
        where = f" [{scope(record)}]"
        if beats and record["beats_control"]:
            verdict = "beats dense and its retrained control" + where
        elif beats and has_control:
            verdict = f"beats dense, not its retrained control (adjusted p {p_both:.3g})" + where
        elif beats:
            verdict = "beats dense; no retrained control in the run" + where
        elif record["checkpoints_total"] == 0:
            verdict = "no pruned checkpoint to test"
        elif record["checkpoints"] == 0:
            verdict = "no checkpoint within the accuracy tolerance to claim"
        elif floor * family > alpha:
            verdict = (f"too few items for a claim among {family} tests (smallest p {floor:.3g}, "
                       f"times {family}: {floor * family:.3g})")
        elif np.isfinite(detectable):
            verdict = f"no gain detected (could have detected >= {detectable:.3g})"
        else:
            verdict = "no gain detected"
        record["verdict"] = verdict
    return records
