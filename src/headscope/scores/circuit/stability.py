"""How stable a circuit is under resampling of its prompts (Méloux et al. 2025, arXiv 2510.00845).

A circuit of E edges is the top E of a ranking of the edges by |mean over the n prompts| of a
per-prompt value (the approximation's score, or exact patching's effect). For each of B bootstrap
resamples of the prompts (n drawn with replacement, seeded), the resampled circuit is the top E by
|mean over the resample| (ties: table order; an edge without a value last, as the ranking that
chose the circuit), and its Jaccard overlap with the circuit is |C & C_b| / |C | C_b|.

- stability: the mean Jaccard over the B resamples; 1 when every resample picks the circuit;
- stability_low: the 5th percentile of the B values (numpy's linear interpolation);
- stable: stability >= STABLE, Méloux et al.'s line (their IOI circuits on GPT-2 small: 0.67).

An edge's score is the mean over the prompts of its per-prompt value, so a resample's mean is the
score the method gives on the resampled prompts (with the per-position mean donor, that donor held
at the full sample's); the size E is held at the circuit's, not re-chosen from a resample's own
curve (that would cost MIB's curve runs per resample). Méloux et al. compare circuits found on
bootstrap resamples by their Jaccard overlap; here each resample's circuit is compared with the one
found on every prompt. With fewer than 2 prompts nothing can be resampled: NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Bool, Float, Int

STABLE = 0.8  # Méloux et al. 2025: a circuit is stable only above a mean Jaccard of 0.8
RESAMPLES = 200  # bootstrap resamples of the prompts
LOW_PERCENTILE = 5  # stability_low: this percentile of the Jaccard over the resamples


@dataclass(frozen=True)
class Stability:
    """The circuit's mean Jaccard over the resamples, its 5th percentile, and the resamples."""

    mean: float
    low: float
    resamples: int

    @property
    def stable(self) -> bool:
        return bool(self.mean >= STABLE)

    def row(self) -> dict:
        """The circuit summary's columns."""
        return {
            "stability": self.mean,
            "stability_low": self.low,
            "stability_resamples": self.resamples,
            "stable": self.stable,
        }


def verdict(value: float, stable: bool) -> str:
    """In words, for a page or a console: 'stable (Méloux et al. 0.8)', 'unstable: below Méloux et
    al.'s 0.8', or 'not measured' (NaN: fewer than 2 prompts, or a run from before stability)."""
    if value != value:
        return "not measured"
    return f"stable (Méloux et al. {STABLE:g})" if stable else f"unstable: below Méloux et al.'s {STABLE:g}"


def jaccard(a: set, b: set) -> float:
    """|a & b| / |a | b|; 1.0 for two empty sets."""
    union = a | b
    return len(a & b) / len(union) if union else 1.0


def resample_indices(n: int, resamples: int, seed: int) -> Int[np.ndarray, "resample prompt"]:
    """Each resample's n prompts, drawn with replacement (numpy's default_rng(seed))."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def in_top(means: Float[np.ndarray, "edge resample"], size: int) -> Bool[np.ndarray, "resample edge"]:
    """Per resample, whether each edge is among the `size` largest |mean|: ties in row order and NaN
    last, as a stable sort by -|mean| takes them (one partition per resample, not a sort)."""
    key = np.nan_to_num(-np.abs(means.T), nan=np.inf)  # [resample, edge]; ascending = best first
    kth = np.partition(key, size - 1, axis=1)[:, size - 1 : size]  # [resample, 1]: the size-th key
    ahead, tied = key < kth, key == kth
    room = size - ahead.sum(axis=1, keepdims=True)  # places left for the ties, first rows first
    return ahead | (tied & (np.cumsum(tied, axis=1) <= room))


def resampled_means(
    values: Float[np.ndarray, "edge prompt"], indices: Int[np.ndarray, "resample prompt"]
) -> Float[np.ndarray, "edge resample"]:
    """Each edge's mean over each resample's prompts (NaN for an edge with a NaN value)."""
    n = values.shape[1]
    weights = np.stack([np.bincount(row, minlength=n) for row in indices]) / n  # [resample, prompt]
    missing = np.isnan(values).any(axis=1)
    means = np.nan_to_num(values, nan=0.0) @ weights.T  # [edge, resample]
    means[missing] = np.nan
    return means


def stability(
    values: Float[np.ndarray, "edge prompt"],
    chosen: Int[np.ndarray, " size"],
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> Stability:
    """The stability of the circuit of rows `chosen` (the top len(chosen) of `values`' ranking)."""
    size, n = len(chosen), values.shape[1]
    if n < 2 or size == 0:
        return Stability(float("nan"), float("nan"), 0)
    top = in_top(resampled_means(values, resample_indices(n, resamples, seed)), size)  # [resample, edge]
    shared = top[:, chosen].sum(axis=1)  # [resample]
    overlap = shared / (2 * size - shared)  # both sets hold `size` edges
    return Stability(float(overlap.mean()), float(np.percentile(overlap, LOW_PERCENTILE)), resamples)
