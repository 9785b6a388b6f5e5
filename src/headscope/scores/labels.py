"""Head labels (docs/methods.md §7): a label when a head's scores pass named thresholds.

Every label row carries its evidence: each score with the threshold it passed, so the
thresholds are printed next to every label.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd

from headscope.tasks.task import Task

LABEL_COLUMNS = ["layer", "head", "label", "evidence"]
Rule = tuple[str, str, float]  # (column, text, threshold): the column at least the threshold
Above = tuple[str, str, str]  # (column, other column, text "a > b"): the column above the other


@dataclass(frozen=True)
class LabelThresholds:
    """The thresholds of every label; scores are shares in [0, 1]."""

    copy: float = 0.5  # name mover: copy score at least this
    negative_copy: float = 0.5  # negative name mover, copy suppression: negative copy score at least this
    answer_attention: float = 0.3  # movers: attention end -> answer (contrast for copy suppression)
    next: float = 0.5  # successor: next score at least this, and above its copy score
    detector: float = 0.4  # induction / previous-token / duplicate-token share at least this

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def contrast_group(task: Task) -> str | None:
    """The key role of the contrast comparison: the group holding the contrast role (IOI: S)."""
    groups = [group for group, members in task.role_groups.items() if task.contrast_role in members]
    return groups[0] if groups else task.contrast_role


def signed_relation(relation: str, sign: int) -> str:
    """A relation's name for its sign: 'copy' (sign 1) or 'negative_copy' (sign -1)."""
    return f"negative_{relation}" if sign < 0 else str(relation)


def signed_relations(ov_table: pd.DataFrame) -> list[str]:
    """`signed_relation` of each row of an OV score table."""
    return [signed_relation(r, s) for r, s in zip(ov_table["relation"], ov_table["sign"], strict=True)]


def _ov_wide(ov_table: pd.DataFrame) -> pd.DataFrame:
    """[layer, head] -> columns copy, next, negative_copy (those the table has)."""
    if ov_table.empty:
        return pd.DataFrame(columns=["layer", "head"])
    table = ov_table.assign(name=signed_relations(ov_table))
    return table.pivot_table(index=["layer", "head"], columns="name", values="score").reset_index()


def _end_attention(role_attention: pd.DataFrame, role: str | None, column: str) -> pd.DataFrame:
    """[layer, head, column]: mean attention from `end` to `role` (a group sums its members)."""
    if role_attention.empty or role is None:
        return pd.DataFrame(columns=["layer", "head", column])
    rows = role_attention[(role_attention["query_role"] == "end") & (role_attention["key_role"] == role)]
    return rows[["layer", "head", "attention"]].rename(columns={"attention": column})


def _has(row, column: str) -> bool:
    return column in row and not pd.isna(row[column])


def _passes(row, rules: list[Rule], above: Above | None) -> bool:
    if not all(_has(row, column) and row[column] >= threshold for column, _, threshold in rules):
        return False
    return above is None or not _has(row, above[1]) or bool(row[above[0]] > row[above[1]])


def _evidence(row, rules: list[Rule], above: Above | None) -> str:
    text = "; ".join(f"{name} {row[column]:.2f} >= {threshold:.2f}" for column, name, threshold in rules)
    if above is not None and _has(row, above[1]):
        text += f"; {above[2]} {row[above[1]]:.2f}"
    return text


def _rule_rows(scores: pd.DataFrame, label: str, rules: list[Rule], above: Above | None = None) -> list[dict]:
    """Heads meeting every rule and `above` (which is skipped where the other column is missing)."""
    if any(column not in scores.columns for column, _, _ in rules):
        return []
    return [
        {
            "layer": int(row["layer"]),
            "head": int(row["head"]),
            "label": label,
            "evidence": _evidence(row, rules, above),
        }
        for _, row in scores.iterrows()
        if _passes(row, rules, above)
    ]


def _successor_rows(scores: pd.DataFrame, t: LabelThresholds) -> list[dict]:
    if "copy" not in scores.columns:
        return []
    return _rule_rows(scores, "successor", [("next", "next", t.next)], ("next", "copy", "next > copy"))


def _mover_rows(scores: pd.DataFrame, t: LabelThresholds, answer: str, contrast: str | None) -> list[dict]:
    """Name movers and negative name movers (answer role), copy suppression (contrast role)."""
    to_answer: Rule = ("answer_attention", f"attention end->{answer}", t.answer_attention)
    copy: Rule = ("copy", "copy", t.copy)
    negative: Rule = ("negative_copy", "negative copy", t.negative_copy)
    answer_first: Above = ("answer_attention", "contrast_attention", f"end->{answer} > end->{contrast}")
    rows = _rule_rows(scores, "name mover", [copy, to_answer], answer_first)
    rows += _rule_rows(scores, "negative name mover", [negative, to_answer], answer_first)
    if contrast is not None:
        to_contrast: Rule = ("contrast_attention", f"attention end->{contrast}", t.answer_attention)
        contrast_first: Above = ("contrast_attention", "answer_attention", f"end->{contrast} > end->{answer}")
        rows += _rule_rows(scores, "copy suppression", [negative, to_contrast], contrast_first)
    return rows


def label_heads(
    ov_table: pd.DataFrame,
    role_attention: pd.DataFrame,
    detectors: pd.DataFrame,
    answer_role: str | None,
    thresholds: LabelThresholds = LabelThresholds(),
    contrast_role: str | None = None,
) -> pd.DataFrame:
    """One row per (head, label) with the evidence; empty inputs simply give no such labels.

    A is the attention from `end` to the answer role, C to `contrast_role` (pass the group that
    holds the contrast, e.g. IOI's S = S1 + S2); without a contrast role the A > C and C > A
    comparisons are left out.
    - name mover: copy >= t.copy, A >= t.answer_attention and A > C (the IOI paper's 9.9, 9.6);
    - negative name mover: negative copy >= t.negative_copy, A >= t.answer_attention and A > C
      (the IOI paper's 10.7, 11.10: they attend to the answer and write against it);
    - copy suppression: negative copy >= t.negative_copy, C >= t.answer_attention and C > A
      (a head that attends to the contrast and writes against it: the organism's 3.0, 3.1);
    - successor: next >= t.next and next > copy;
    - induction, previous-token, duplicate-token: the detector share >= t.detector.
    """
    t = thresholds
    scores = _ov_wide(ov_table)
    for role, column in ((answer_role, "answer_attention"), (contrast_role, "contrast_attention")):
        scores = scores.merge(_end_attention(role_attention, role, column), how="outer")
    rows = _mover_rows(scores, t, answer_role, contrast_role) if answer_role is not None else []
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
