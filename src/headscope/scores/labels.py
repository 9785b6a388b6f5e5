"""Head labels (methods.md section 7): a label when a head's scores pass named thresholds.

Every label row carries its evidence: each score with the threshold it passed, so the
thresholds are printed next to every label.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

LABEL_COLUMNS = ["layer", "head", "label", "evidence"]


@dataclass(frozen=True)
class LabelThresholds:
    """The thresholds of every label; scores are shares in [0, 1]."""

    copy: float = 0.5  # name mover: copy score at least this
    negative_copy: float = 0.5  # negative name mover: negative copy score at least this
    answer_attention: float = 0.3  # (negative) name mover: attention end -> answer role at least this
    next: float = 0.5  # successor: next score at least this, and above its copy score
    detector: float = 0.4  # induction / previous-token / duplicate-token share at least this

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _ov_wide(ov_table: pd.DataFrame) -> pd.DataFrame:
    """[layer, head] -> columns copy, next, negative_copy (those the table has)."""
    if ov_table.empty:
        return pd.DataFrame(columns=["layer", "head"])
    table = ov_table.assign(
        name=[
            f"negative_{rel}" if sign == "negative" or sign == -1 else str(rel)
            for rel, sign in zip(ov_table["relation"], ov_table["sign"], strict=True)
        ]
    )
    return table.pivot_table(index=["layer", "head"], columns="name", values="score").reset_index()


def _answer_attention(role_attention: pd.DataFrame, answer_role: str | None) -> pd.DataFrame:
    if role_attention.empty or answer_role is None:
        return pd.DataFrame(columns=["layer", "head", "answer_attention"])
    rows = role_attention[
        (role_attention["query_role"] == "end") & (role_attention["key_role"] == answer_role)
    ]
    return rows[["layer", "head", "attention"]].rename(columns={"attention": "answer_attention"})


def _rule_rows(
    scores: pd.DataFrame, label: str, rules: list[tuple[str, str, float]], extra=None
) -> list[dict]:
    """Rows for heads meeting every (column, text, threshold) rule, plus `extra(row)` if given."""
    if any(column not in scores.columns for column, _, _ in rules):
        return []
    rows = []
    for _, row in scores.iterrows():
        if all(row[column] >= threshold for column, _, threshold in rules) and (extra is None or extra(row)):
            evidence = "; ".join(
                f"{text} {row[column]:.2f} >= {threshold:.2f}" for column, text, threshold in rules
            )
            rows.append(
                {"layer": int(row["layer"]), "head": int(row["head"]), "label": label, "evidence": evidence}
            )
    return rows


def _successor_rows(scores: pd.DataFrame, t: LabelThresholds) -> list[dict]:
    if "copy" not in scores.columns:
        return []
    rows = _rule_rows(scores, "successor", [("next", "next", t.next)], extra=lambda r: r["next"] > r["copy"])
    by_head = scores.set_index(["layer", "head"])
    for row in rows:
        row["evidence"] += f"; next > copy {by_head.loc[(row['layer'], row['head']), 'copy']:.2f}"
    return rows


def label_heads(
    ov_table: pd.DataFrame,
    role_attention: pd.DataFrame,
    detectors: pd.DataFrame,
    answer_role: str | None,
    thresholds: LabelThresholds = LabelThresholds(),
) -> pd.DataFrame:
    """One row per (head, label) with the evidence; empty inputs simply give no such labels.

    - name mover: copy >= t.copy and attention end -> answer role >= t.answer_attention;
    - negative name mover: negative copy >= t.negative_copy and the same attention rule;
    - successor: next >= t.next and next > copy;
    - induction, previous-token, duplicate-token: the detector share >= t.detector.
    """
    t = thresholds
    answer_rule = ("answer_attention", f"attention end->{answer_role}", t.answer_attention)
    scores = _ov_wide(ov_table).merge(_answer_attention(role_attention, answer_role), how="outer")
    rows = _rule_rows(scores, "name mover", [("copy", "copy", t.copy), answer_rule])
    rows += _rule_rows(
        scores, "negative name mover", [("negative_copy", "negative copy", t.negative_copy), answer_rule]
    )
    rows += _successor_rows(scores, t)
    for column, label in (
        ("induction", "induction"),
        ("previous_token", "previous-token"),
        ("duplicate_token", "duplicate-token"),
    ):
        if not detectors.empty:
            rows += _rule_rows(detectors, label, [(column, column.replace("_", "-"), t.detector)])
    table = pd.DataFrame(rows, columns=LABEL_COLUMNS)
    return table.sort_values(["layer", "head", "label"], kind="stable").reset_index(drop=True)
