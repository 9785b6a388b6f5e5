"""The head atlas on a hand-built model with planted heads: each is named, and the within-set score
tells a successor head from a head that writes any digit.

The model is a GPT-2 with a word-level tokenizer whose embeddings are orthogonal, centred rows of
norm sqrt(d_model) (tied unembedding, unit layer norms, MLPs off), so a head's OV circuit can be
set to send each source's embedding to any target's: W_V = X^T / d_model (the sources' rows), W_O
= the targets' rows. Planted: 0.0 successor of digits, 0.1 writes any digit (the same fixed
ranking of the digits for every source), 0.2 next month, 0.3 previous day with the sign flipped
(a suppression head), 1.0 lower to upper case; the other heads write nothing.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import headscope as hs
from headscope.models.organism.tokenizer import word_level_tokenizer

DIGITS = [str(d) for d in range(10)]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
LOWER = [chr(c) for c in range(ord("a"), ord("z") + 1)]
UPPER = [c.upper() for c in LOWER]
D_MODEL, N_HEAD = 128, 4
D_HEAD = D_MODEL // N_HEAD


def _orthogonal_rows(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """n orthogonal rows of mean 0 and norm sqrt(d): a unit layer norm leaves each as it is."""
    rows = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    rows = rows - rows.mean(1, keepdim=True)
    q, _ = torch.linalg.qr(rows.T)  # [d, n]: orthonormal columns spanning the centred rows
    return (q.T * d**0.5).float()


def _plant(attn, head: int, sources: torch.Tensor, targets: torch.Tensor) -> None:
    """Head `head` sends each source row to its target row: W_V = X^T / d, W_O = Y."""
    n = sources.shape[0]
    v_cols = slice(2 * D_MODEL + head * D_HEAD, 2 * D_MODEL + head * D_HEAD + n)
    attn.c_attn.weight[:, v_cols] = sources.T / D_MODEL  # [d, n]
    attn.c_proj.weight[head * D_HEAD : head * D_HEAD + n] = targets  # [n, d]


def save_planted(folder: Path) -> Path:
    tokenizer = word_level_tokenizer(DIGITS + MONTHS + DAYS + LOWER + UPPER)
    vocab = tokenizer.get_vocab()
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=32, n_embd=D_MODEL, n_layer=2, n_head=N_HEAD,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    E = _orthogonal_rows(len(tokenizer), D_MODEL)
    row = lambda words: E[[vocab[w] for w in words]]  # noqa: E731
    with torch.no_grad():
        model.transformer.wte.weight.copy_(E)
        for block in model.transformer.h:
            block.attn.c_attn.weight[:, 2 * D_MODEL :] = 0  # every head writes nothing ...
            block.attn.c_attn.bias.zero_()
            block.attn.c_proj.bias.zero_()
            block.mlp.c_proj.weight.zero_()
            block.mlp.c_proj.bias.zero_()
        layer0, layer1 = model.transformer.h[0].attn, model.transformer.h[1].attn
        _plant(layer0, 0, row(DIGITS[:-1]), row(DIGITS[1:]))  # ... but the planted ones
        ranking = torch.linspace(1.0, 0.8, 10)[:, None]  # digit 0 first, 9 last, for every source
        _plant(layer0, 1, row(DIGITS), (ranking * row(DIGITS)).sum(0).expand(10, -1))
        _plant(layer0, 2, row(MONTHS), row(MONTHS[1:] + MONTHS[:1]))
        _plant(layer0, 3, row(DAYS), -row(DAYS[-1:] + DAYS[:-1]))
        _plant(layer1, 0, row(LOWER), row(UPPER))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> pd.DataFrame:
    model = hs.load_model(str(save_planted(tmp_path_factory.mktemp("planted"))))
    return hs.atlas(model, relations="algorithmic", k=10)


def _row(table, layer: int, head: int, relation: str, sign: int = 1):
    found = table[
        (table.layer == layer) & (table["head"] == head) & (table.relation == relation) & (table.sign == sign)
    ]
    assert len(found) == 1
    return found.iloc[0]


def _card(table, layer: int, head: int):
    cards = table.attrs["cards"]
    return cards[(cards.layer == layer) & (cards["head"] == head)].iloc[0]


@pytest.mark.parametrize(
    ("head", "relation", "sign"),
    [
        ((0, 0), "number_next", 1),
        ((0, 2), "month_next", 1),
        ((0, 3), "day_prev", -1),
        ((1, 0), "to_upper", 1),
    ],
)
def test_each_planted_head_is_named_by_its_card(planted, head, relation, sign):
    card = _card(planted, *head)
    assert (card.relation, card.sign, card.kind) == (relation, sign, "maps")
    assert card.within == 1.0 and card.score == 1.0


def test_within_set_score_separates_successor_from_any_digit_head(planted):
    successor, any_digit = _row(planted, 0, 0, "number_next"), _row(planted, 0, 1, "number_next")
    assert successor.score == 1.0 and any_digit.score == 1.0  # top-10: both fill it with digits
    assert successor.within == 1.0
    assert any_digit.within == pytest.approx(1 / 9)  # only the source whose target is "1" (ranked first)
    assert any_digit.chance == pytest.approx(1 / 9)
    card = _card(planted, 0, 1)
    assert card.kind == "writes the set" and card.relation in ("number_next", "number_prev")


def test_dropped_pairs_are_counted_per_relation(planted):
    relations = planted.attrs["relations"].set_index("relation")
    assert relations.loc["number_next", "kept"] == 9  # "9" -> "10": no token "10" in this vocabulary
    assert relations.loc["number_next", "dropped"] == 31
    assert relations.loc["to_upper", "kept"] == 26 and relations.loc["to_upper", "dropped"] == 14
    assert not relations.loc["number_word_next", "scored"]  # no number word is a token here
    assert set(planted.relation) == set(relations.index[relations.scored])
    row = _row(planted, 1, 0, "to_upper")
    assert (row.n, row.dropped, row.group) == (26, 14, "algorithmic")


def test_heads_that_write_nothing_map_no_relation(planted):
    cards = planted.attrs["cards"]
    silent = cards[cards.layer.eq(1) & cards["head"].isin([1, 2, 3])]
    assert len(silent) == 3 and (silent.kind != "maps").all()


def test_a_model_held_in_memory_gives_the_same_atlas(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = save_planted(tmp_path / "planted")
    held = (AutoModelForCausalLM.from_pretrained(folder), AutoTokenizer.from_pretrained(folder))
    from_memory = hs.atlas(held, relations=["month_next", "day_prev"])
    from_folder = hs.atlas(hs.load_model(str(folder)), relations="month_next,day_prev")
    pd.testing.assert_frame_equal(from_memory, from_folder)
    assert _row(from_memory, 0, 2, "month_next").within == 1.0


def test_within_set_scores_carry_their_binomial_test_and_the_cards_show_it(planted):
    from scipy import stats

    from headscope.scores.significance import adjusted

    row = _row(planted, 0, 3, "day_prev", -1)  # 7 of 7 days against chance 1/7
    assert row.within_hits == 7 and row.p == pytest.approx(stats.binomtest(7, 7, 1 / 7, "greater").pvalue)
    interval = stats.binomtest(7, 7).proportion_ci(method="wilson")
    assert (row.ci_low, row.ci_high) == pytest.approx((interval.low, interval.high))
    assert planted["p_adjusted"].to_numpy() == pytest.approx(
        adjusted(planted["p"])
    )  # heads x relations x signs
    card = _card(planted, 0, 3)
    assert card.p_adjusted == row.p_adjusted and card.card.startswith(
        f"-day_prev 1.00 [{row.ci_low:.2f}, 1.00] (chance 0.14, p_adj {row.p_adjusted:.2g}; top-k 1.00)"
    )


def test_a_card_maps_only_where_the_adjusted_p_is_below_five_percent():
    from headscope.scores.atlas import card_kind

    # the 135M checkpoint's best number_next head: 6 of 10 digits (chance 1/9): big, yet few items
    assert card_kind(0.9, 0.6, 1 / 9, 0.049) == "maps"
    assert card_kind(0.9, 0.6, 1 / 9, 0.05) == "writes the set"
    assert card_kind(0.2, 0.6, 1 / 9, 0.2) == ""
    assert card_kind(0.9, 0.45, 1 / 9, 1e-9) == "writes the set"  # significant, but below the size


def test_the_atlas_without_per_source_ranks_takes_the_exit(tmp_path, monkeypatch):
    """Without the per-source table the kernel's ranks stop at k (`RankCap`: rows leave once
    decided); with it every rank is read to the end. The planted heads' logits tie to the last bit
    (orthogonal embeddings: most logits are 0 up to rounding), so the two passes' capped ranks are
    each checked against float64 logits, tie-aware, and the columns no rank moves are equal. The
    vocabulary is taken 16 columns at a time, so rows can leave early."""
    from headscope.scores import atlas as atlas_module
    from headscope.scores import ov_kernel
    from tests.numerics import check_ov_ranks

    monkeypatch.setattr(ov_kernel, "COLUMNS", 16)
    found = []

    def spy(*args, **kwargs):
        found.append((args, ranks(*args, **kwargs)))
        return found[-1][1]

    ranks = atlas_module.ov_ranks
    monkeypatch.setattr(atlas_module, "ov_ranks", spy)
    model = hs.load_model(str(save_planted(tmp_path / "planted")))
    capped = hs.atlas(model, relations="algorithmic", k=10)
    whole = hs.atlas(model, relations="algorithmic", k=10, per_source=True)
    settled = [c for c in capped.columns if c != "score"]  # the top-k score is the kernel's
    pd.testing.assert_frame_equal(capped[settled], whole[settled])
    (args, exit_ranks), (_, full_ranks) = found
    assert exit_ranks.cap is not None and exit_ranks.cap.k == 10 and full_ranks.cap is None
    weights, x, targets, heads, _, signs = args[:6]
    check_ov_ranks(weights, x, targets, heads, signs, exit_ranks, n_upstream=4 * D_MODEL, what="capped")
    blocks = ov_kernel.n_blocks(model.weights.d_vocab)
    assert (exit_ranks.blocks < blocks).any() and (full_ranks.blocks == blocks).all()
