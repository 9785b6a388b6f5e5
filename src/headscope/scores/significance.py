"""Significance of a share of hits (docs/methods.md §7, §10): an exact one-sided binomial test
against chance, the Wilson interval, and Benjamini–Hochberg over every test a run makes.

A score `hits / n` with chance level `p0` (1/|T| for a within-set score, the top-k score's
k x spellings / |vocabulary|) is tested one-sided: p = P(X >= hits) for X ~ Binomial(n, p0),
the p-value of `scipy.stats.binomtest(hits, n, p0, alternative="greater")`, computed for a whole
column at once as `binom.sf(hits - 1, n, p0)`. The false discovery rate is held at ALPHA by
`scipy.stats.false_discovery_control` (Benjamini–Hochberg) over every test passed together.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

ALPHA = 0.05  # the false discovery rate held over every test of a run
Z95 = float(stats.norm.ppf(0.975))


def binomial_p(hits, n, chance) -> np.ndarray:
    """One-sided exact binomial p-values, P(X >= hits), X ~ Binomial(n, chance); NaN where n is 0
    or the chance level is missing."""
    hits, n, chance = (np.asarray(v, dtype=float) for v in (hits, n, chance))
    ok = (n > 0) & np.isfinite(chance)
    p = stats.binom.sf(np.where(ok, hits, 1) - 1, np.where(ok, n, 1), np.where(ok, chance, 0.5))
    return np.where(ok, p, np.nan)


def wilson(hits, n) -> tuple[np.ndarray, np.ndarray]:
    """The 95% Wilson score interval of hits / n (NaN where n is 0)."""
    hits, n = np.asarray(hits, dtype=float), np.asarray(n, dtype=float)
    safe = np.where(n > 0, n, 1.0)
    share, z2 = hits / safe, Z95**2
    centre = (share + z2 / (2 * safe)) / (1 + z2 / safe)
    half = Z95 * np.sqrt(share * (1 - share) / safe + z2 / (4 * safe**2)) / (1 + z2 / safe)
    low, high = np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)
    return np.where(n > 0, low, np.nan), np.where(n > 0, high, np.nan)


def adjusted(p) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values of every finite p together (NaN stays NaN)."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        out[finite] = stats.false_discovery_control(p[finite], method="bh")
    return out


def share_test(hits, n, chance, prefix: str = "") -> dict[str, np.ndarray]:
    """`{prefix}p`, `{prefix}ci_low`, `{prefix}ci_high` of hits / n against `chance`."""
    low, high = wilson(hits, n)
    return {f"{prefix}p": binomial_p(hits, n, chance), f"{prefix}ci_low": low, f"{prefix}ci_high": high}


def adjust_together(tables: dict[str, pd.DataFrame], columns: dict[str, tuple[str, ...]]) -> dict:
    """`tables` with a `<p column>_adjusted` beside each named p column, Benjamini–Hochberg over
    every p of every table named in `columns` (table name -> its p columns) at once."""
    named = [(name, column) for name, cols in columns.items() if name in tables for column in cols]
    named = [(name, column) for name, column in named if column in tables[name].columns]
    parts = [tables[name][column].to_numpy(dtype=float) for name, column in named]
    if not parts:
        return dict(tables)
    every = adjusted(np.concatenate(parts))
    out, start = dict(tables), 0
    for (name, column), part in zip(named, parts, strict=True):
        out[name] = out[name].assign(**{f"{column}_adjusted": every[start : start + len(part)]})
        start += len(part)
    return out
