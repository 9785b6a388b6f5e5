"""Within-set scores in a task's OV tables, and the successor label that reads them.

Against a plain loop (the full OV output of each head through the final layer norm and the whole
unembedding, every candidate's logit its best spelling, ties counted against the target) on a
random tiny GPT-2, and on a hand-built model (the atlas tests' planted construction,
tests/scores/test_atlas.py): head 0.0 writes each digit's successor; head 0.1 writes the same
fixed ranking of the digits for every source, 9 first (a digit-category head). The top-5 score
cannot tell them apart (0.1's next 0.56 beats its copy 0.50: the old `next >= 0.5 and next > copy`
rule named it a successor); the within-set score can (0.1: 1 of 9, chance 1/10).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from headscope.analyses.ov import label_tables
from headscope.models.loading import load_model
from headscope.models.organism.tokenizer import word_level_tokenizer
from headscope.scores.keywords import keyword_dataset
from headscope.scores.labels import LabelThresholds, threshold_failures
from headscope.scores.ov import OVOptions, ov_scores
from headscope.tasks.dataset import build_dataset
from headscope.tasks.registry import get_task
from tests.scores.test_atlas import D_MODEL, N_HEAD, _orthogonal_rows, _plant
from tests.scores.test_ov import _hf_ov

DIGITS = [str(d) for d in range(10)]
FILLERS = [f"w{i}" for i in range(20)]


def save_successor_beside_category(folder: Path) -> Path:
    """Layer 0: 0.0 successor of the digits, 0.1 the digits ranked 9, 8, ..., 0 for every digit;
    every other head writes nothing (MLPs off, unit layer norms, orthogonal embeddings)."""
    tokenizer = word_level_tokenizer(DIGITS + FILLERS)
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
            block.attn.c_attn.weight[:, 2 * D_MODEL :] = 0
            block.attn.c_attn.bias.zero_()
            block.attn.c_proj.bias.zero_()
            block.mlp.c_proj.weight.zero_()
            block.mlp.c_proj.bias.zero_()
        layer0 = model.transformer.h[0].attn
        _plant(layer0, 0, row(DIGITS[:-1]), row(DIGITS[1:]))
        ranking = torch.linspace(1.0, 0.8, 10)[:, None]  # 9 first, 0 last
        _plant(layer0, 1, row(DIGITS), (ranking * row(DIGITS[::-1])).sum(0).expand(10, -1))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    model = load_model(str(save_successor_beside_category(tmp_path_factory.mktemp("succession"))))
    data = keyword_dataset(DIGITS, model.tokens)
    return label_tables(model, data, LabelThresholds(), k=5, embedding="token")


def _row(table, layer, head, relation, sign=1):
    found = table[
        (table.layer == layer) & (table["head"] == head) & (table.relation == relation) & (table.sign == sign)
    ]
    assert len(found) == 1
    return found.iloc[0]


def test_within_set_scores_of_the_planted_heads(planted):
    ov = planted["ov_scores"]
    successor, category = _row(ov, 0, 0, "next"), _row(ov, 0, 1, "next")
    assert (successor.score, successor.within, successor.within_n) == (1.0, 1.0, 9)
    assert successor.within_chance == pytest.approx(0.1)
    # 0.1's top 5 are 9, 8, 7, 6, 5: next hits for 4..8 (5 of 9), copy for 5..9 (5 of 10) ...
    assert category.score == pytest.approx(5 / 9) and _row(ov, 0, 1, "copy").score == 0.5
    # ... but the successor is first among the digits only for 8 (-> 9): 1 of 9, chance 1/10.
    assert category.within == pytest.approx(1 / 9)
    silent = ov[(ov.layer == 1) | (ov["head"] > 1)]
    assert (silent.within == 0).all()  # every logit ties: a tie counts against the target


def test_the_successor_is_labelled_and_the_digit_category_head_is_not(planted):
    labels = planted["labels"]
    assert labels[["layer", "head", "label"]].values.tolist() == [[0, 0, "successor"]]
    row = labels.iloc[0]
    assert row.support == "weights only" and row.n == 9 and row.p_adjusted < 0.05
    assert row.p == pytest.approx(0.1**9)
    assert row.weights == "within-set next 1.00 >= 0.50 (chance 0.10); top-k next 1.00 >= 0.50 (beside)"
    args = (planted["ov_scores"], planted["role_attention"], planted["detectors"], None)
    assert threshold_failures(*args).empty  # nothing passes the thresholds yet fails the FDR test


def _plain_within(hf, x, words, family, step: int, sign: int, model) -> dict:
    """(layer, head) -> within-set hits by a plain loop over heads, instances and candidates."""
    t, hits = hf.transformer, {}
    spelled = [list(model.tokens.target_tokens(m)) for m in family]
    for layer in range(hf.config.n_layer):
        ln1 = t.h[layer].ln_1
        for head in range(hf.config.n_head):
            W_V, b_V, W_O = _hf_ov(hf, layer, head)
            v = torch.nn.functional.layer_norm(x, (x.shape[1],), ln1.weight, ln1.bias, ln1.eps) @ W_V + b_V
            logits = t.ln_f(sign * (v @ W_O)) @ hf.lm_head.weight.T  # [instance, vocab]
            count = 0
            for i, word in enumerate(words):
                target = family.index(word) + step
                if not 0 <= target < len(family):
                    continue
                best = torch.stack([logits[i, s].max() for s in spelled])  # [candidate]
                count += int((best >= best[target]).sum() == 1)
            hits[(layer, head)] = count
    return hits


def test_within_set_ranks_equal_a_plain_loop(tiny_dir):
    model = load_model(str(tiny_dir))
    data = build_dataset(get_task("seq-digits"), model.tokens, 6, seed=3)
    options = OVOptions(("copy", "next"), 5, "token", negative=True, precision="float64", within=True)
    table = ov_scores(model, data, options).table
    hf = GPT2LMHeadModel.from_pretrained(tiny_dir).double().eval()
    family = list(data.task.families[0].members)
    with torch.no_grad():
        x = hf.transformer.wte.weight[data.keywords.token]
        x = x + hf.transformer.h[0].mlp(hf.transformer.h[0].ln_2(x))  # the `token` embedding, by hand
        for relation, step in (("copy", 0), ("next", 1)):
            for sign in (1, -1):
                expected = _plain_within(hf, x, data.keywords.words, family, step, sign, model)
                for (layer, head), count in expected.items():
                    row = _row(table, layer, head, relation, sign)
                    assert row.within_hits == count and row.within_chance == pytest.approx(1 / len(family))
