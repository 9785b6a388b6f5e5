"""Head labels (docs/methods.md §7): a label when a head's scores pass named thresholds, each rule
one row of data (`RULES`), each label row with its lines of evidence and their `support`.

Three kinds of evidence: `weights` (the OV scores: top-k and within-set), `attention` (role
attention, the detectors) and `behaviour` (knockout effect, DLA, edge scores). A head is named from
weights and attention (`label_heads`, before the knockouts run); a share of hits with a chance level
must also beat chance by a one-sided exact binomial test after Benjamini–Hochberg over every test
the step makes (`significance`). `with_support` then reads the behaviour tables and writes which
kinds agree: a label whose behaviour contradicts it shows as "weights only" (or the kinds that do
agree), not as a finding. The cast from the circuit (S-inhibition, backup name mover, the feeders of
S-inhibition) is named later from the edges and knockouts, by the rows whose `step` is "circuit"
(`scores.cast`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import pandas as pd

from headscope.heads import Component
from headscope.scores import significance
from headscope.tasks.task import Task

Kind = Literal["weights", "attention", "behaviour"]
Comparison = Literal[">=", ">"]
KINDS: tuple[Kind, ...] = ("weights", "attention", "behaviour")
STAT_COLUMNS = ("n", "p", "p_adjusted", "ci_low", "ci_high")  # the label's tested share
LABEL_COLUMNS = [
    "layer", "head", "label", "support", "weights", "attention", "behaviour",
    "n", "p", "p_adjusted", "ci_low", "ci_high", "evidence",
]  # fmt: skip


@dataclass(frozen=True)
class LabelThresholds:
    """The thresholds of every label; scores are shares in [0, 1]."""

    copy: float = 0.5  # name mover: copy score at least this
    negative_copy: float = 0.5  # negative name mover, copy suppression: negative copy score at least this
    answer_attention: float = 0.3  # movers: attention end -> answer (contrast for copy suppression)
    next: float = 0.5  # successor, predecessor: the top-k next / prev score shown beside (not required)
    within: float = 0.5  # successor, predecessor: within-set next / prev score at least this
    detector: float = 0.4  # induction / previous-token / duplicate-token share at least this
    knockout: float = 0.1  # behaviour: |1 - knocked out / clean| of the task's metric at least this
    dla: float = 0.2  # behaviour: |DLA| at least this share of the task's largest head |DLA|
    edge: float = 0.2  # behaviour: the head's largest |edge| at least this share of the task's largest
    # the cast from the circuit (scores/cast.py): roles read from the edges into labelled heads
    inhibition_edge: float = 0.2  # S-inhibition: its largest |q-edge| into a mover over the task's largest
    attention_shift: float = 0.1  # S-inhibition: patched with its twin's output, the movers' attention
    # end -> answer minus end -> contrast group falls by at least this
    composition: float = 0.2  # Q- (into a mover) or K-/V-composition (into S-inhibition), beside
    backup: float = 0.1  # backup mover: knockout effect with the movers knocked out, minus alone
    feed_edge: float = 0.2  # feeders: the largest |k/v-edge| into an S-inhibition head over the largest

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Rule:
    """One condition of one label: `column` (of the head's wide score table) compared with a
    threshold (a LabelThresholds field) or with another column (`other`: skipped where missing).
    `chance`: the column of the binomial test's chance level (None: the score is a mean, no test).
    `required` False: shown beside the label's evidence, not a condition; it adds its kind to
    `support` where it holds and the kind has no required rows (`kind_agrees`). `step`: "scores"
    (named by `label_heads` from weights and attention) or "circuit" (the cast, named by
    `cast.cast_labels` after the edges and knockouts: its required rows name it, the others add
    their kind to support where every row of the kind holds)."""

    label: str
    kind: Kind
    column: str
    text: str
    threshold: str | None = None
    comparison: Comparison = ">="
    other: str | None = None
    chance: str | None = None
    required: bool = True
    step: Literal["scores", "circuit"] = "scores"


def _behaviour(label: str, dla: bool = True) -> tuple[Rule, ...]:
    """A label's behaviour rows: agrees when any one holds (`with_support`)."""
    return (
        Rule(label, "behaviour", "knockout_effect", "knockout effect", "knockout"),
        *((Rule(label, "behaviour", "dla_share", "|DLA| / largest", "dla"),) if dla else ()),
        Rule(label, "behaviour", "edge_share", "|edge| / largest", "edge"),
    )


# Every label's rule, as data. `{A}` / `{C}`: the answer role and the contrast group (IOI: IO, S);
# a `*_chance` column makes the condition a binomial test of the share against that chance level.
# fmt: off
RULES: tuple[Rule, ...] = (
    Rule("name mover", "weights", "copy", "copy", "copy", chance="copy_chance"),
    Rule("name mover", "attention", "answer_attention", "attention end->{A}", "answer_attention"),
    Rule("name mover", "attention", "answer_attention", "end->{A} > end->{C}", None, ">",
         "contrast_attention"),
    *_behaviour("name mover"),
    Rule("negative name mover", "weights", "negative_copy", "negative copy", "negative_copy",
         chance="negative_copy_chance"),
    Rule("negative name mover", "attention", "answer_attention", "attention end->{A}", "answer_attention"),
    Rule("negative name mover", "attention", "answer_attention", "end->{A} > end->{C}", None, ">",
         "contrast_attention"),
    *_behaviour("negative name mover"),
    Rule("copy suppression", "weights", "negative_copy", "negative copy", "negative_copy",
         chance="negative_copy_chance"),
    Rule("copy suppression", "attention", "contrast_attention", "attention end->{C}", "answer_attention"),
    Rule("copy suppression", "attention", "contrast_attention", "end->{C} > end->{A}", None, ">",
         "answer_attention"),
    *_behaviour("copy suppression"),
    Rule("successor", "weights", "next_within", "within-set next", "within", chance="next_within_chance"),
    Rule("successor", "weights", "next", "top-k next", "next", required=False),
    Rule("successor", "attention", "contrast_attention", "attention end->{C}", "answer_attention",
         required=False),  # the sequence tasks' C is x4, the item whose successor is the answer
    *_behaviour("successor"),
    Rule("predecessor", "weights", "prev_within", "within-set prev", "within", chance="prev_within_chance"),
    Rule("predecessor", "weights", "prev", "top-k prev", "next", required=False),
    Rule("predecessor", "attention", "contrast_attention", "attention end->{C}", "answer_attention",
         required=False),
    *_behaviour("predecessor"),
    Rule("induction", "attention", "induction", "induction", "detector"),
    *_behaviour("induction", dla=False),
    Rule("previous-token", "attention", "previous_token", "previous-token", "detector"),
    *_behaviour("previous-token", dla=False),
    Rule("duplicate-token", "attention", "duplicate_token", "duplicate-token", "detector"),
    *_behaviour("duplicate-token", dla=False),
    # The cast from the circuit ({M}: the task's labelled movers; scores/cast.py measures each column).
    Rule("S-inhibition", "behaviour", "inhibition_edge_share", "|q-edge| into {M} / largest",
         "inhibition_edge", step="circuit"),
    Rule("S-inhibition", "behaviour", "attention_shift", "patched, {M}'s end->{A} - end->{C} falls by",
         "attention_shift", step="circuit"),
    Rule("S-inhibition", "weights", "q_composition", "Q-composition into {M}", "composition",
         required=False, step="circuit"),
    Rule("S-inhibition", "attention", "contrast_attention", "attention end->{C}", "answer_attention",
         required=False, step="circuit"),
    Rule("S-inhibition", "attention", "contrast_attention", "end->{C} > end->{A}", None, ">",
         "answer_attention", required=False, step="circuit"),
    Rule("backup name mover", "weights", "copy", "copy", "copy", chance="copy_chance", step="circuit"),
    Rule("backup name mover", "behaviour", "backup_growth", "knockout effect with {M} out, minus alone",
         "backup", step="circuit"),
    Rule("backup name mover", "attention", "backup_attention", "attention end->{A} with {M} out",
         "answer_attention", required=False, step="circuit"),
    Rule("feeds S-inhibition", "behaviour", "feed_edge_share", "|k/v-edge| into {S} / largest", "feed_edge",
         step="circuit"),
    Rule("feeds S-inhibition", "weights", "feed_composition", "K/V-composition into {S}", "composition",
         required=False, step="circuit"),
)
# fmt: on
LABELS: tuple[str, ...] = tuple(dict.fromkeys(r.label for r in RULES if r.step == "scores"))
CAST_LABELS: tuple[str, ...] = tuple(dict.fromkeys(r.label for r in RULES if r.step == "circuit"))


def rules_of(label: str, kind: Kind | None = None) -> list[Rule]:
    return [r for r in RULES if r.label == label and (kind is None or r.kind == kind)]


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


def ov_tests(ov_table: pd.DataFrame) -> pd.DataFrame:
    """Every binomial test the OV table holds: one row per head x relation x sign x score (top-k
    against its chance; within-set against 1/|set| where the table has it), with `name` (the wide
    table's column), hits, n, chance, p and the Wilson interval."""
    columns = ["layer", "head", "name", "hits", "n", "chance"]
    if ov_table.empty or "chance" not in ov_table.columns:
        return pd.DataFrame(columns=[*columns, "p", "ci_low", "ci_high"])
    names = pd.Series(signed_relations(ov_table), index=ov_table.index)
    parts = [ov_table.assign(name=names)[columns]]
    if "within" in ov_table.columns:
        within = ov_table[ov_table["within_n"].notna()]
        parts.append(
            within.assign(
                name=names[within.index] + "_within",
                hits=within["within_hits"],
                n=within["within_n"],
                chance=within["within_chance"],
            )[columns]
        )
    tests = pd.concat(parts, ignore_index=True)
    return tests.assign(**significance.share_test(tests["hits"], tests["n"], tests["chance"]))


def _ov_wide(ov_table: pd.DataFrame, tests: pd.DataFrame) -> pd.DataFrame:
    """[layer, head] -> per signed relation its score (copy, next_within, ...) and, where tested,
    `<name>_chance`, `_n`, `_p`, `_p_adjusted`, `_ci_low`, `_ci_high`."""
    if ov_table.empty:
        return pd.DataFrame(columns=["layer", "head"])
    table = ov_table.assign(name=signed_relations(ov_table))
    wide = table.pivot_table(index=["layer", "head"], columns="name", values="score").reset_index()
    wide.columns.name = None
    if "within" in table.columns and table["within"].notna().any():
        within = table.dropna(subset=["within"]).assign(name=lambda t: t["name"] + "_within")
        more = within.pivot_table(index=["layer", "head"], columns="name", values="within").reset_index()
        wide = wide.merge(more, how="left")
    for stat in ("chance", "n", "p", "p_adjusted", "ci_low", "ci_high"):
        if not tests.empty:
            more = tests.pivot_table(index=["layer", "head"], columns="name", values=stat).reset_index()
            more.columns = [c if c in ("layer", "head") else f"{c}_{stat}" for c in more.columns]
            wide = wide.merge(more, how="left")
    return wide


def _end_attention(role_attention: pd.DataFrame, role: str | None, column: str) -> pd.DataFrame:
    """[layer, head, column]: mean attention from `end` to `role` (a group sums its members)."""
    if role_attention.empty or role is None:
        return pd.DataFrame(columns=["layer", "head", column])
    rows = role_attention[(role_attention["query_role"] == "end") & (role_attention["key_role"] == role)]
    return rows[["layer", "head", "attention"]].rename(columns={"attention": column})


def value_of(row, column: str) -> float | None:
    value = row.get(column) if hasattr(row, "get") else None
    return None if value is None or pd.isna(value) else float(value)


def holds(rule: Rule, row, t: LabelThresholds) -> bool | None:
    """Whether the row meets the rule (None: its value, or a comparison's other side, is missing)."""
    value = value_of(row, rule.column)
    bound = getattr(t, rule.threshold) if rule.threshold else value_of(row, rule.other or "")
    if value is None or bound is None:
        return None
    return value >= bound if rule.comparison == ">=" else value > bound


def significant(rule: Rule, row) -> bool:
    """A tested rule's adjusted p below significance.ALPHA; a rule without a test passes (a mean,
    or a score table without the counts and chance level a test needs: its p shows as missing)."""
    if rule.chance is None or value_of(row, f"{rule.column}_n") is None:
        return True
    p = value_of(row, f"{rule.column}_p_adjusted")
    return p is not None and p < significance.ALPHA


def rule_text(rule: Rule, row, t: LabelThresholds, roles: dict[str, str], beside: bool = True) -> str:
    value, held = value_of(row, rule.column), holds(rule, row, t)
    name = rule.text.format(**roles)
    if rule.threshold is None:
        return f"{name} {value_of(row, rule.other or ''):.2f}" if held is not None else ""
    if value is None:  # a required value missing says so; a missing beside value is not shown
        return f"{name} missing" if rule.required else ""
    text = f"{name} {value:.2f} {rule.comparison if held else '<'} {getattr(t, rule.threshold):.2f}"
    chance = value_of(row, f"{rule.column}_chance") if rule.chance is not None else None
    text += f" (chance {chance:.2f})" if chance is not None else ""
    return text + ("" if rule.required or not beside else " (beside)")


def _naming_rules(label: str) -> list[Rule]:
    return [r for r in RULES if r.label == label and r.kind != "behaviour"]


def _passes(label: str, row, t: LabelThresholds, tested: bool = True) -> bool:
    rules = [r for r in _naming_rules(label) if r.required]
    held = [holds(r, row, t) for r in rules]
    compared = [h for r, h in zip(rules, held, strict=True) if r.threshold is not None]
    if not compared or not all(compared):  # every threshold met (a missing value fails)
        return False
    others = [h for r, h in zip(rules, held, strict=True) if r.threshold is None]
    return all(h is not False for h in others) and (not tested or all(significant(r, row) for r in rules))


def support_of(kinds: list[str]) -> str:
    """'weights+attention+behaviour', or 'weights only' where one kind agrees."""
    return "+".join(kinds) + (" only" if len(kinds) == 1 else "")


def support_kinds(support: str) -> list[str]:
    """The kinds a `support` text lists: support_kinds(support_of(kinds)) == kinds."""
    return [kind for kind in str(support).removesuffix(" only").split("+") if kind in KINDS]


def _kind_text(label: str, kind: Kind, row, t: LabelThresholds, roles: dict[str, str]) -> str:
    """Every value of one kind of a label's rule with its threshold, '; '-joined."""
    return "; ".join(filter(None, (rule_text(r, row, t, roles) for r in rules_of(label, kind))))


def kind_agrees(label: str, kind: Kind, row, t: LabelThresholds) -> bool:
    """Whether one kind of a label's evidence agrees: its required rows hold (every threshold met,
    no comparison False) where it has any; else at least one of its rows (all shown beside) holds.
    A failing beside row stays in the kind's text but adds nothing; a kind without rows never agrees."""
    rules = rules_of(label, kind)
    required = [r for r in rules if r.required]
    if not required:
        return any(holds(r, row, t) for r in rules)
    held = [holds(r, row, t) for r in required]
    compared = [h for r, h in zip(required, held, strict=True) if r.threshold is not None]
    return bool(compared) and all(compared) and all(h is not False for h in held)


def _label_row(label: str, row, t: LabelThresholds, roles: dict[str, str]) -> dict:
    texts = {kind: _kind_text(label, kind, row, t, roles) for kind in ("weights", "attention")}
    tested = [r for r in _naming_rules(label) if r.chance is not None and r.required]
    stats = {s: value_of(row, f"{tested[0].column}_{s}") if tested else None for s in STAT_COLUMNS}
    kinds = [kind for kind in texts if kind_agrees(label, kind, row, t)]
    return {
        "layer": int(row["layer"]),
        "head": int(row["head"]),
        "label": label,
        "support": support_of(kinds),
        **texts,
        "behaviour": "not measured",
        **{s: np.nan if v is None else v for s, v in stats.items()},
        "evidence": "; ".join(texts[kind] for kind in texts if texts[kind]),
    }


def head_scores(
    ov_table: pd.DataFrame,
    role_attention: pd.DataFrame,
    detectors: pd.DataFrame,
    answer_role: str | None,
    contrast_role: str | None = None,
) -> pd.DataFrame:
    """[layer, head] -> every score a rule reads: the OV scores and their tests (BH over every
    test of the OV table), the attention end -> answer / contrast, the detectors."""
    tests = ov_tests(ov_table)
    if not tests.empty:
        tests = tests.assign(p_adjusted=significance.adjusted(tests["p"]))
    scores = _ov_wide(ov_table, tests)
    for role, column in ((answer_role, "answer_attention"), (contrast_role, "contrast_attention")):
        scores = scores.merge(_end_attention(role_attention, role, column), how="outer")
    if not detectors.empty:
        scores = scores.merge(detectors, how="outer")
    return scores


def label_heads(
    ov_table: pd.DataFrame,
    role_attention: pd.DataFrame,
    detectors: pd.DataFrame,
    answer_role: str | None,
    thresholds: LabelThresholds = LabelThresholds(),
    contrast_role: str | None = None,
    tested: bool = True,
) -> pd.DataFrame:
    """One row per (head, label): the naming evidence by kind, `support` (the kinds that agree:
    weights and attention here; `with_support` adds behaviour), the binomial test of the label's
    share (n, p, p_adjusted, Wilson interval; NaN where the label reads only means).

    A rule (`RULES`) passes when every required value meets its threshold, a comparison with a
    missing other side is left out (a task without a contrast role), and a tested share's adjusted
    p is below 0.05 (BH over every test of the OV table; `tested` False: thresholds alone).
    Empty inputs give no such labels.
    """
    t = thresholds
    scores = head_scores(ov_table, role_attention, detectors, answer_role, contrast_role)
    roles = {"A": str(answer_role), "C": str(contrast_role)}
    rows = []
    for label in LABELS:
        movers = label in ("name mover", "negative name mover", "copy suppression")
        if (movers and answer_role is None) or (label == "copy suppression" and contrast_role is None):
            continue
        rows += [
            _label_row(label, row, t, roles) for _, row in scores.iterrows() if _passes(label, row, t, tested)
        ]
    table = pd.DataFrame(rows, columns=LABEL_COLUMNS)
    return table.sort_values(["layer", "head", "label"], kind="stable").reset_index(drop=True)


def threshold_failures(
    ov_table: pd.DataFrame,
    role_attention: pd.DataFrame,
    detectors: pd.DataFrame,
    answer_role: str | None,
    thresholds: LabelThresholds = LabelThresholds(),
    contrast_role: str | None = None,
) -> pd.DataFrame:
    """The (head, label) pairs that meet every threshold but not the FDR test: `label_heads` with
    the tests left out, less `label_heads` itself."""
    loose = label_heads(ov_table, role_attention, detectors, answer_role, thresholds, contrast_role, False)
    strict = label_heads(ov_table, role_attention, detectors, answer_role, thresholds, contrast_role)
    keys = set(zip(strict["layer"], strict["head"], strict["label"], strict=True))
    kept = [
        (la, h, lb) not in keys
        for la, h, lb in zip(loose["layer"], loose["head"], loose["label"], strict=True)
    ]
    return loose.loc[kept, ["layer", "head", "label", "evidence"]].reset_index(drop=True)


# ---- behaviour: added after the knockouts, DLA and edges have run -------------------------------


def behaviour_scores(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """[layer, head, knockout_effect, dla_share, edge_share] of one task's run (columns it lacks
    are missing): |1 - pct_of_clean / 100| of each head's knockout, |DLA| over the task's largest
    head |DLA|, the largest |edge| touching the head (exact where patched) over the task's largest."""
    parts = [_knockout(tables.get("knockout")), _dla(tables.get("dla")), _edges(tables.get("edges"))]
    merged = None
    for part in [p for p in parts if p is not None]:
        merged = part if merged is None else merged.merge(part, how="outer")
    return pd.DataFrame(columns=["layer", "head"]) if merged is None else merged


def _heads_only(table: pd.DataFrame) -> pd.DataFrame:
    heads = table[table["head"].notna()]
    return heads.assign(layer=heads["layer"].astype(int), head=heads["head"].astype(int))


def _knockout(table: pd.DataFrame | None) -> pd.DataFrame | None:
    if table is None or table.empty or "pct_of_clean" not in table.columns:
        return None
    heads = _heads_only(table)
    effect = (1 - heads["pct_of_clean"] / 100).abs()
    return heads.assign(knockout_effect=effect)[["layer", "head", "knockout_effect"]].drop_duplicates(
        ["layer", "head"]
    )


def _dla(table: pd.DataFrame | None) -> pd.DataFrame | None:
    if table is None or table.empty or "dla" not in table.columns:
        return None
    heads = _heads_only(table)
    size = heads["dla"].abs()
    return heads.assign(dla_share=size / max(float(size.max()), 1e-12))[["layer", "head", "dla_share"]]


def _edges(table: pd.DataFrame | None) -> pd.DataFrame | None:
    """Each head's largest |edge| over the largest (a head absent from a truncated table is absent)."""
    if table is None or table.empty:
        return None
    value = table["exact"].where(table["exact"].notna(), table["score"]).abs()
    ends = pd.concat(
        [pd.DataFrame({"name": table[end], "value": value}) for end in ("source", "target")],
        ignore_index=True,
    )
    heads = [Component.named(str(name)) for name in ends["name"]]
    keep = [c is not None and c.head is not None for c in heads]
    ends = ends[keep].assign(
        layer=[c.layer for c in heads if c is not None and c.head is not None],
        head=[c.head for c in heads if c is not None and c.head is not None],
    )
    best = ends.groupby(["layer", "head"], as_index=False)["value"].max()
    return best.assign(edge_share=best["value"] / max(float(value.max()), 1e-12))[
        ["layer", "head", "edge_share"]
    ]


def with_support(
    labels: pd.DataFrame, tables: dict[str, pd.DataFrame], thresholds: LabelThresholds = LabelThresholds()
) -> pd.DataFrame:
    """The labels with their behaviour evidence (knockout effect, DLA, edge scores: those of
    `tables` present) and `support` rewritten: behaviour agrees when one of its values present
    meets its threshold, contradicts when values are present and none does (the label then shows
    the kinds that do agree: "weights only", "weights+attention", "attention only"), and is "not
    measured" without any. One task's tables (as the report's step holds them); pure."""
    if labels.empty:
        return labels.copy()
    scores = behaviour_scores(tables).set_index(["layer", "head"])
    scores = scores[~scores.index.duplicated()]
    rows = []
    for row in labels.to_dict("records"):
        head = (row["layer"], row["head"])
        values = scores.loc[head] if head in scores.index else pd.Series(dtype=float)
        verdict, behaviour = _behaviour_of(row["label"], values, thresholds)
        named = [k for k in support_kinds(row["support"]) if k != "behaviour"]  # `label_heads`'s
        kinds = named + ["behaviour"] * (verdict == "agrees")
        measured = behaviour if verdict != "not measured" else ""
        evidence = "; ".join(filter(None, (row.get("weights"), row.get("attention"), measured)))
        rows.append(row | {"support": support_of(kinds), "behaviour": behaviour, "evidence": evidence})
    return pd.DataFrame(rows, columns=labels.columns)


def _behaviour_of(label: str, values: pd.Series, thresholds: LabelThresholds) -> tuple[str, str]:
    """('agrees' | 'contradicts' | 'not measured', the verdict with each value and threshold)."""
    rules = rules_of(label, "behaviour")
    held = [holds(r, values, thresholds) for r in rules]
    measured = [h for h in held if h is not None]
    if not measured:
        return "not measured", "not measured"
    verdict = "agrees" if any(measured) else "contradicts"
    texts = [rule_text(r, values, thresholds, {}) for r, h in zip(rules, held, strict=True) if h is not None]
    return verdict, f"{verdict}: {'; '.join(texts)}"
