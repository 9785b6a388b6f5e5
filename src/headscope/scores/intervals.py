"""Confidence intervals (docs/methods.md §C): how sure each number of a table is, over which units.

Pure functions on numpy arrays (a pandas Series or column works too), vectorised over cells;
95% by default (`level`). Each returns `(low, high)` arrays shaped like the statistic, NaN where
the units are too few for an interval (no unit for a share, fewer than two for a mean).

- `wilson`: a share k of n independent units (Wilson score interval).
- `clopper_pearson`: the same share, the exact binomial interval (coverage at least `level`).
- `t_interval`: the mean of per-unit values (Student's t over the units).
- `paired_t_interval`: the mean difference of two statistics measured on the same units.
- `cluster_bootstrap_share`: a share whose rows group into clusters (prompts): the percentile
  bootstrap that resamples clusters, not rows.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import stats

CiKind = Literal["wilson", "cluster-wilson", "exact", "t", "cluster-bootstrap", "none"]
LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


def _z(level: float) -> float:
    """The standard normal quantile with (1 - level) / 2 above it (1.96 at 95%)."""
    return float(stats.norm.ppf(0.5 + level / 2))


def wilson(k, n, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of the share k / n: the shares p whose score test |p̂ − p| /
    sqrt(p (1 − p) / n) ≤ z does not reject, i.e.

        (p̂ + z²/2n ± z sqrt(p̂ (1 − p̂) / n + z² / 4n²)) / (1 + z² / n),

    no continuity correction (scipy's `binomtest(...).proportion_ci(method="wilson")`). It never
    leaves [0, 1] and keeps its coverage near `level` at small n and shares near 0 or 1."""
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    z = _z(level)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = k / n
        denominator = 1 + z**2 / n
        centre = (share + z**2 / (2 * n)) / denominator
        half = z * np.sqrt(share * (1 - share) / n + z**2 / (4 * n**2)) / denominator
    low = np.where(k <= 0, 0.0, np.clip(centre - half, 0, 1))  # exact 0 and 1 at the ends, not 1e-18
    high = np.where(k >= n, 1.0, np.clip(centre + half, 0, 1))
    empty = n <= 0
    return np.where(empty, np.nan, low), np.where(empty, np.nan, high)


def clopper_pearson(k, n, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Clopper–Pearson ("exact") interval of k / n: the beta quantiles
    Beta(α/2; k, n − k + 1) and Beta(1 − α/2; k + 1, n − k), with 0 at k = 0 and 1 at k = n
    (α = 1 − level). Its coverage is at least `level` for every true share: conservative."""
    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    alpha = 1 - level
    with np.errstate(invalid="ignore"):
        low = np.where(k > 0, stats.beta.ppf(alpha / 2, k, n - k + 1), 0.0)
        high = np.where(k < n, stats.beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    empty = n <= 0
    return np.where(empty, np.nan, low), np.where(empty, np.nan, high)


def t_interval(values, axis: int = -1, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Student's t interval of the mean of per-unit values along `axis` (NaN values are not
    units): mean ± t(1 − α/2; n − 1) · s / √n, with s the sample standard deviation (ddof 1).
    Over prompts, which a task's generator draws independently. NaN where n < 2."""
    values = np.asarray(values, dtype=np.float64)
    present = ~np.isnan(values)
    n = present.sum(axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(present, values, 0).sum(axis=axis) / n
        deviation = np.where(present, values - np.expand_dims(mean, axis), 0)
        sd = np.sqrt((deviation**2).sum(axis=axis) / (n - 1))
    return t_from_summary(mean, sd, n, level)


def t_from_summary(mean, sd, n, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """`t_interval` from the mean, the sample standard deviation (ddof 1) and the count n."""
    mean, sd, n = (np.asarray(x, dtype=np.float64) for x in (mean, sd, n))
    with np.errstate(divide="ignore", invalid="ignore"):
        half = stats.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1)) * sd / np.sqrt(n)
    few = n < 2
    return np.where(few, np.nan, mean - half), np.where(few, np.nan, mean + half)


def paired_t_interval(first, second, axis: int = -1, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """t interval of mean(first − second) from the per-unit differences: two statistics measured
    on the same prompts (knocked out vs clean) are paired, and the pairing removes the
    prompt-to-prompt variation they share."""
    return t_interval(np.asarray(first, np.float64) - np.asarray(second, np.float64), axis, level)


def cluster_weights(n_clusters: int, resamples: int, seed: int) -> np.ndarray:
    """How often each cluster is drawn in each bootstrap resample, [resample, cluster]: `n_clusters`
    draws with replacement per resample, from `np.random.default_rng(seed).integers` (the draws
    `scipy.stats.bootstrap` makes with the same generator)."""
    draws = np.random.default_rng(seed).integers(0, n_clusters, (resamples, n_clusters))
    offset = draws + n_clusters * np.arange(resamples)[:, None]  # [resample, draw]
    return np.bincount(offset.ravel(), minlength=resamples * n_clusters).reshape(resamples, n_clusters)


def cluster_bootstrap_share(
    hits,
    rows,
    level: float = LEVEL,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap of the share sum(hits) / sum(rows) over clusters (prompts).

    `hits` is [..., cluster] (each cell's hits in each prompt), `rows` the rows each cluster
    holds, [cluster] (the same for every cell) or shaped like `hits`. Each resample draws the
    clusters with replacement (seeded, the same draws for every cell) and recomputes the share
    over the rows of the drawn clusters; the interval is the (α/2, 1 − α/2) percentiles of the
    resampled shares. Rows of one prompt may depend on each other (they share a context); the
    prompts do not, so their spread is the share's. With one row per cluster it is
    `scipy.stats.bootstrap(..., method="percentile")` of the mean."""
    hits = np.asarray(hits, dtype=np.float64)
    rows = np.asarray(rows, dtype=np.float64)
    weights = cluster_weights(hits.shape[-1], resamples, seed).astype(np.float64)  # [resample, cluster]
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = (hits @ weights.T) / (rows @ weights.T)  # [..., resample]
    alpha = 1 - level
    percentile = np.nanpercentile if np.isnan(shares).any() else np.percentile  # NaN: drew no row
    low, high = percentile(shares, [100 * alpha / 2, 100 * (1 - alpha / 2)], axis=-1)
    empty = rows.sum(-1) <= 0
    return np.where(empty, np.nan, low), np.where(empty, np.nan, high)


def cluster_wilson(hits, rows, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Wilson's interval of the share sum(hits) / sum(rows) at the effective number of rows of
    clustered data (Kish's design effect): `hits` [..., cluster], `rows` [cluster] or like `hits`.

    The share's variance over clusters (the ratio estimator's, `m / (m - 1) · Σ (h_c − p r_c)² /
    R²` for m clusters of r_c rows and h_c hits, R = Σ r_c) against the binomial variance
    `p (1 − p) / R` is the design effect `d` (at least 1); Wilson's interval is taken for `p · R / d`
    hits of `R / d` rows. It keeps Wilson's coverage near 0 and 1, where a percentile bootstrap of a
    few hits covers too little, and widens it where the rows of a cluster agree; with one row per
    cluster and independent rows `d` is 1, about."""
    hits = np.asarray(hits, dtype=np.float64)
    rows = np.broadcast_to(np.asarray(rows, dtype=np.float64), hits.shape)
    total, m = rows.sum(-1), np.count_nonzero(rows, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = hits.sum(-1) / total
        spread = ((hits - p[..., None] * rows) ** 2).sum(-1) * m / np.maximum(m - 1, 1) / total**2
        design = np.where((p > 0) & (p < 1), spread / (p * (1 - p) / total), 1.0)
    effective = total / np.maximum(np.nan_to_num(design, nan=1.0), 1.0)
    low, high = wilson(p * effective, effective, level)
    return np.where(total > 0, low, np.nan), np.where(total > 0, high, np.nan)
