"""The false discovery rate over every test a run makes (docs/methods.md §7, §10).

Each step tests on its own: the label step over its task's OV tests (`labels.label_heads`), the
atlas over heads x relations x signs (`atlas.with_tests`). A report makes all of them, so
`run_fdr` pools every test of the run — each task's OV tests (top-k and within-set, every head,
relation and sign) and the atlas's — in one Benjamini–Hochberg adjustment, writes the run's
adjusted p on the labels and the atlas, drops a label whose run-wide adjusted p is 0.05 or more,
and makes the atlas's cards again. Pure: the tables in, the tables out.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from headscope.scores import significance
from headscope.scores.atlas import function_cards
from headscope.scores.labels import ov_tests


def every_p(tables: dict[str, pd.DataFrame]) -> np.ndarray:
    """The raw p of every test of the run: the OV tests of every task, then the atlas's."""
    ov = tables.get("ov_scores", pd.DataFrame())
    parts = [ov_tests(ov)["p"].to_numpy(dtype=float)]
    atlas = tables.get("atlas")
    if atlas is not None and "p" in atlas.columns:
        parts.append(atlas["p"].to_numpy(dtype=float))
    return np.concatenate(parts)


def adjusted_in(raw: np.ndarray, p) -> np.ndarray:
    """The run-wide adjusted p of each of `p` (each one of the run's raw p-values: BH gives equal
    raw p-values equal adjusted ones, and its adjusted values rise with the raw ones)."""
    finite = raw[np.isfinite(raw)]
    order = np.argsort(finite, kind="stable")
    ranked, adjusted = finite[order], significance.adjusted(finite)[order]
    p = np.asarray(p, dtype=float)
    index = np.clip(np.searchsorted(ranked, p), 0, max(len(ranked) - 1, 0))
    found = np.isfinite(p) & (len(ranked) > 0)
    return np.where(found, adjusted[index] if len(ranked) else np.nan, np.nan)


def run_fdr(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The run's tables with `p_adjusted` of the labels and the atlas over every test of the run;
    labels whose adjusted p is 0.05 or more left out (an untested label, NaN p, stays), the atlas's
    cards made again from the run's adjusted p."""
    raw = every_p(tables)
    out = dict(tables)
    labels = tables.get("labels")
    if labels is not None and not labels.empty and "p" in labels.columns:
        labels = labels.assign(p_adjusted=adjusted_in(raw, labels["p"]))
        kept = labels["p"].isna() | (labels["p_adjusted"] < significance.ALPHA)
        out["labels"] = labels[kept].reset_index(drop=True)
    atlas = tables.get("atlas")
    if atlas is not None and not atlas.empty and "p" in atlas.columns:
        out["atlas"] = atlas.assign(p_adjusted=adjusted_in(raw, atlas["p"]))
        out["atlas_cards"] = function_cards(out["atlas"])
    return out
