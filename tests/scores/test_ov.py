"""OV relation scores against hand-built weights, a plain per-head loop, and folded layer norms."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from transformers import GPT2Config, GPT2LMHeadModel

from headscope.embedding import effective_embeddings
from headscope.errors import HeadscopeError
from headscope.heads import all_heads
from headscope.models.loading import load_model
from headscope.models.organism.tokenizer import word_level_tokenizer
from headscope.scores import ov_kernel
from headscope.scores.ov import OVOptions, keyword_dataset, ov_scores
from headscope.scores.relations import instance_targets, row_targets
from headscope.tasks.dataset import build_dataset
from headscope.tasks.registry import get_task
from tests.numerics import check_ov_ranks, float_tolerance, ov_inputs, rank_window

MEMBERS = [chr(c) for c in range(ord("a"), ord("j") + 1)]  # token ids 1..10, in order
FILLERS = [f"w{i}" for i in range(30)]  # token ids 11..40
D_MODEL, N_HEAD, D_HEAD = 64, 4, 16
COPY, NEXT, ANTI, RANDOM = 0, 1, 2, 3  # the heads of layer 1


def _member_ids() -> list[int]:
    return list(range(1, len(MEMBERS) + 1))


def _ov(kind: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """W_V [d, d_head] and W_O [d_head, d] of one hand-built head of layer 1."""
    if kind == RANDOM:
        return torch.randn(D_MODEL, D_HEAD, generator=generator), torch.randn(
            D_HEAD, D_MODEL, generator=generator
        )
    W_V, W_O = torch.zeros(D_MODEL, D_HEAD), torch.zeros(D_HEAD, D_MODEL)
    for slot, token in enumerate(_member_ids()):
        W_V[token, slot] = 1.0  # read token's basis direction into slot
        if kind == COPY:
            W_O[slot, token] = 1.0
        elif kind == ANTI:
            W_O[slot, token] = -1.0
        elif token < len(MEMBERS):  # NEXT: write the successor's direction
            W_O[slot, token + 1] = 1.0
    return W_V, W_O


def save_hand_built(directory: Path) -> Path:
    """2 layers: layer 0 writes nothing (so every embedding is W_E[t]); layer 1 is hand-built."""
    tokenizer = word_level_tokenizer(MEMBERS + FILLERS)
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=32, n_embd=D_MODEL, n_layer=2, n_head=N_HEAD,
        bos_token_id=0, eos_token_id=0,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        for name, param in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                param.fill_(1.0)
        model.transformer.wte.weight.copy_(torch.eye(len(tokenizer), D_MODEL))  # W_E[t] = e_t
        attn = model.transformer.h[1].attn
        for head in range(N_HEAD):
            W_V, W_O = _ov(head, generator)
            cols = slice(2 * D_MODEL + head * D_HEAD, 2 * D_MODEL + (head + 1) * D_HEAD)
            attn.c_attn.weight[:, cols] = W_V
            attn.c_proj.weight[head * D_HEAD : (head + 1) * D_HEAD] = W_O
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def hand_model(tmp_path_factory):
    return load_model(str(save_hand_built(tmp_path_factory.mktemp("hand"))))


def _score(table, layer, head, relation, sign=1) -> float:
    row = table[
        (table.layer == layer) & (table["head"] == head) & (table.relation == relation) & (table.sign == sign)
    ]
    assert len(row) == 1
    return float(row.score.iloc[0])


@pytest.mark.parametrize("embedding", ["context", "token", "block0"])
def test_hand_built_heads_are_found(hand_model, embedding):
    dataset = keyword_dataset(MEMBERS, hand_model.tokens)
    options = OVOptions(relations=("copy", "next"), k=3, embedding=embedding, negative=True)
    table = ov_scores(hand_model, dataset, options).table
    assert _score(table, 1, COPY, "copy") == 1.0
    assert _score(table, 1, NEXT, "next") == 1.0
    assert _score(table, 1, ANTI, "copy", sign=-1) == 1.0  # the anti-copy head is a negative copier
    assert _score(table, 1, COPY, "copy", sign=-1) == 0.0
    assert _score(table, 1, ANTI, "copy") == 0.0
    assert _score(table, 1, COPY, "next") == 0.0 and _score(table, 1, NEXT, "copy") == 0.0
    assert (table[table.layer == 0].score == 0.0).all()  # layer 0 writes nothing: all logits tie
    assert _score(table, 1, RANDOM, "copy") <= 0.5 and _score(table, 1, RANDOM, "next") <= 0.5
    next_n = table[table.relation == "next"].n.unique().tolist()
    assert next_n == [len(MEMBERS) - 1]  # the last member has no successor: left out of n


def test_the_score_table_alone_takes_the_exit_and_scores_the_same(hand_model, monkeypatch):
    """`detail=False` caps the kernel's ranks at k (`RankCap`): the same score table as with every
    rank and top-k read, and no per-token tables. The vocabulary is taken 8 columns at a time, so
    rows can leave early."""
    monkeypatch.setattr(ov_kernel, "COLUMNS", 8)
    found, ranks = [], ov_kernel.ov_ranks

    def spy(*args, **kwargs):
        found.append(ranks(*args, **kwargs))
        return found[-1]

    monkeypatch.setattr("headscope.scores.ov.ov_ranks", spy)
    dataset = keyword_dataset(MEMBERS, hand_model.tokens)
    options = OVOptions(relations=("copy", "next"), k=3, negative=True)
    whole, alone = (
        ov_scores(hand_model, dataset, options),
        ov_scores(hand_model, dataset, options, detail=False),
    )
    pd.testing.assert_frame_equal(alone.table, whole.table)
    assert alone.per_token.empty and alone.categories.empty and not whole.per_token.empty
    assert found[0].cap is None and found[1].cap.k == 3
    assert (found[1].blocks < ov_kernel.n_blocks(hand_model.weights.d_vocab)).any()


def test_per_token_and_categories(hand_model):
    dataset = keyword_dataset(MEMBERS, hand_model.tokens)
    result = ov_scores(hand_model, dataset, OVOptions(relations=("next",), k=2, heads=((1, NEXT),)))
    rows = result.per_token
    assert list(rows.keyword) == MEMBERS[:-1] and list(rows.target) == MEMBERS[1:]
    assert (rows["rank"] == 0).all() and rows.hit.all()
    assert [t.split(" | ")[0] for t in rows.topk] == MEMBERS[1:]
    assert result.categories.category.tolist() == ["other"] and result.categories.share.tolist() == [1.0]


def _hf_ov(model: GPT2LMHeadModel, layer: int, head: int) -> tuple[torch.Tensor, ...]:
    """W_V, b_V, W_O of one head, read straight from the Hugging Face GPT-2 weights."""
    d = model.config.n_embd
    dh = d // model.config.n_head
    attn = model.transformer.h[layer].attn
    cols = slice(2 * d + head * dh, 2 * d + (head + 1) * dh)
    return (
        attn.c_attn.weight[:, cols],
        attn.c_attn.bias[cols],
        attn.c_proj.weight[head * dh : (head + 1) * dh],
    )


def reference_ranks(model: GPT2LMHeadModel, x, targets: list[list[int]], k: int, sign: int):
    """The seed notes' loop for one head at a time: full OV output, final LN, full unembedding."""
    t = model.transformer
    results = {}
    for layer in range(model.config.n_layer):
        ln1 = t.h[layer].ln_1
        for head in range(model.config.n_head):
            W_V, b_V, W_O = _hf_ov(model, layer, head)
            v = torch.nn.functional.layer_norm(x, (x.shape[1],), ln1.weight, ln1.bias, ln1.eps) @ W_V + b_V
            logits = t.ln_f(sign * (v @ W_O)) @ model.lm_head.weight.T
            tol = float_tolerance(6 * x.shape[1], float(logits.abs().max()), torch.float64)
            ranks = []
            for i, tokens in enumerate(targets):
                best = logits[i, tokens].max()[None]
                low, high = rank_window(logits[i : i + 1], best, tol)
                ranks.append((int(low), int(high)) if tokens else None)
            results[(layer, head)] = ranks
    return results


def _digits(tiny_dir, n=6):
    model = load_model(str(tiny_dir))
    dataset = build_dataset(get_task("seq-digits"), model.tokens, n, seed=3)
    return model, dataset


def test_all_heads_equal_plain_loop(tiny_dir):
    model, dataset = _digits(tiny_dir)
    hf = GPT2LMHeadModel.from_pretrained(tiny_dir).double().eval()
    options = OVOptions(
        relations=("copy", "next"), k=5, embedding="token", negative=True, precision="float64"
    )
    result = ov_scores(model, dataset, options)
    with torch.no_grad():
        wte = hf.transformer.wte.weight
        x = wte[dataset.keywords.token]
        x = x + hf.transformer.h[0].mlp(hf.transformer.h[0].ln_2(x))  # the `token` embedding, by hand
        for relation, step in (("copy", 0), ("next", 1)):
            targets = [_word_targets(model, w, step) for w in dataset.keywords.words]
            for sign in (1, -1):
                expected = reference_ranks(hf, x, targets, 5, sign)
                rows = result.per_token[
                    (result.per_token.relation == relation) & (result.per_token.sign == sign)
                ]
                for (layer, head), ranks in expected.items():
                    got = rows[(rows.layer == layer) & (rows["head"] == head)]["rank"].tolist()
                    kept = [r for r in ranks if r is not None]  # (low, high): one rank but at a float64 tie
                    assert all(lo <= g <= hi for g, (lo, hi) in zip(got, kept, strict=True))
                    score = _score(result.table, layer, head, relation, sign)
                    assert math.isclose(score, sum(g < 5 for g in got) / len(got))


def _word_targets(model, word: str, step: int) -> list[int]:
    target = str(int(word) + step)
    return list(model.tokens.target_tokens(target)) if int(target) <= 20 else []


def _fold_layer_norms(source: Path, target: Path) -> Path:
    """The same network with every LN gain and bias folded into the weights that follow it."""
    model = GPT2LMHeadModel.from_pretrained(source)
    config = model.config
    config.tie_word_embeddings = False
    folded = GPT2LMHeadModel(config)
    folded.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        folded.lm_head.weight.copy_(model.transformer.wte.weight)
        for block in folded.transformer.h:
            for ln, linear in ((block.ln_1, block.attn.c_attn), (block.ln_2, block.mlp.c_fc)):
                linear.bias.add_(ln.bias @ linear.weight)  # Conv1D: y = x W + b
                linear.weight.mul_(ln.weight[:, None])
                ln.weight.fill_(1.0)
                ln.bias.zero_()
        ln_f = folded.transformer.ln_f
        folded.lm_head.weight.mul_(ln_f.weight[None, :])  # logits = LN(x) W_U: gain into W_U
        ln_f.bias.div_(ln_f.weight)  # b_f W_U = (b_f / g_f)(g_f W_U)
        ln_f.weight.fill_(1.0)
    folded.save_pretrained(target)
    word_level_tokenizer(_vocab(source)).save_pretrained(target)
    return target


def _vocab(directory: Path) -> list[str]:
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(directory).get_vocab()
    return [word for word, _ in sorted(vocab.items(), key=lambda item: item[1]) if word != "<|endoftext|>"]


def test_scores_unchanged_when_layer_norms_folded(tiny_dir, tmp_path):
    model, dataset = _digits(tiny_dir, n=10)
    folded_dir = _fold_layer_norms(tiny_dir, tmp_path / "folded")
    folded = load_model(str(folded_dir))
    tokens = dataset.tokens[:, :8]
    with torch.no_grad():  # the folding itself is right: same logits
        a = GPT2LMHeadModel.from_pretrained(tiny_dir)(tokens).logits
        b = GPT2LMHeadModel.from_pretrained(folded_dir)(tokens).logits
    assert torch.allclose(a, b, atol=1e-4)
    assert not torch.allclose(model.weights.ln1_w, folded.weights.ln1_w)  # really folded
    relations, signs = ("copy", "next"), (1, -1)
    x, targets, heads = ov_inputs(model, dataset, relations)  # block 0's output: float32 either way
    d = model.weights.d_model
    for each in (model, folded):  # ranks of either equal the unfolded model's, but at float ties
        x_each = ov_inputs(each, dataset, relations)[0]
        ranks = ov_kernel.ov_ranks(each.weights, x_each, targets, heads, 5, signs, torch.float64)
        check_ov_ranks(model.weights, x, targets, heads, signs, ranks, n_upstream=6 * d, what="folded")


def test_bad_options_are_one_clear_error(tiny_model):
    dataset = build_dataset(get_task("seq-digits"), tiny_model.tokens, 2, seed=0)
    vocab = tiny_model.weights.d_vocab
    with pytest.raises(HeadscopeError, match="at least 1"):
        ov_scores(tiny_model, dataset, OVOptions(k=0))
    with pytest.raises(HeadscopeError, match="larger than the vocabulary"):
        ov_scores(tiny_model, dataset, OVOptions(k=vocab + 1))
    with pytest.raises(HeadscopeError, match="unknown relation 'sideways'"):
        ov_scores(tiny_model, dataset, OVOptions(relations=("sideways",)))
    with pytest.raises(HeadscopeError, match="head 7.0 does not exist"):
        ov_scores(tiny_model, dataset, OVOptions(heads=((7, 0),)))
    with pytest.raises(HeadscopeError, match="no target token"):
        ov_scores(
            tiny_model,
            build_dataset(get_task("ioi"), tiny_model.tokens, 2, 0),
            OVOptions(relations=("next",)),
        )
    with pytest.raises(HeadscopeError, match="not in the model's vocabulary"):
        keyword_dataset(["1", "zzzqqq"], tiny_model.tokens)


def test_heads_taken_a_block_at_a_time_give_the_same_ranks(tiny_model, monkeypatch):
    """The memory bound (heads in blocks of HEAD_BLOCK_BYTES) changes no number."""

    dataset = build_dataset(get_task("seq-digits"), tiny_model.tokens, n=6, seed=0)
    options = OVOptions(relations=("copy", "next"), negative=True)
    whole = ov_scores(tiny_model, dataset, options).per_token
    assert ov_kernel.head_block(tiny_model.weights) >= tiny_model.n_layers * tiny_model.n_heads
    monkeypatch.setattr(ov_kernel, "HEAD_BLOCK_BYTES", 1)  # one head at a time
    assert ov_kernel.head_block(tiny_model.weights) == 1
    blocked = ov_scores(tiny_model, dataset, options).per_token
    assert whole.drop(columns=["rank", "hit", "topk"]).equals(blocked.drop(columns=["rank", "hit", "topk"]))
    vectors = effective_embeddings(tiny_model, dataset, "context").vectors  # what ov_scores read
    per_relation = [instance_targets(dataset, tiny_model.tokens, r)[1] for r in options.relations]
    targets = row_targets(per_relation, torch.arange(vectors.shape[0]), vectors.shape[0])
    heads = all_heads(tiny_model.n_layers, tiny_model.n_heads)
    for block_bytes in (ov_kernel.HEAD_BLOCK_BYTES, 10**12):  # one head at a time, then all at once
        monkeypatch.setattr(ov_kernel, "HEAD_BLOCK_BYTES", block_bytes)
        ranks = ov_kernel.ov_ranks(tiny_model.weights, vectors, targets, heads, 5, options.signs)
        check_ov_ranks(tiny_model.weights, vectors, targets, heads, options.signs, ranks)


def test_target_logits_taken_a_few_rows_at_a_time_rank_as_the_plain_loop(tiny_model, monkeypatch):
    """Target logits (the thresholds) made TARGET_ROWS rows at a time, the last chunk short: every
    rank and top-k list agrees with float64 logits computed head by head (tie-aware)."""
    dataset = build_dataset(get_task("seq-digits"), tiny_model.tokens, n=6, seed=0)
    vectors, targets, heads = ov_inputs(tiny_model, dataset, ("copy", "next"))
    monkeypatch.setattr(ov_kernel, "TARGET_ROWS", 5)
    assert vectors.shape[0] > 10 and vectors.shape[0] % 5  # several chunks, the last one short
    ranks = ov_kernel.ov_ranks(tiny_model.weights, vectors, targets, heads, 5, (1, -1))
    check_ov_ranks(tiny_model.weights, vectors, targets, heads, (1, -1), ranks)


def test_the_kernel_runs_where_the_model_runs(tiny_model):
    """`kernel_device`: the OV kernel follows a model on one device; a CPU model's is the CPU."""
    from headscope.scores.ov import kernel_device

    assert kernel_device(tiny_model) == torch.device("cpu") == tiny_model.device


def test_score_intervals_count_rows_at_their_effective_number_over_prompts(tiny_dir):
    """Each score's interval: Wilson's at the effective rows of the prompts' clusters (by a plain
    loop over the prompts here), or Wilson over the rows where every row agrees."""
    model, dataset = _digits(tiny_dir, n=24)
    result = ov_scores(model, dataset, OVOptions(relations=("copy",), k=5, negative=True))
    table, per_token = result.table, result.per_token
    prompt = dataset.keywords.batch.numpy()
    assert (table.n == len(prompt)).all()  # every digit copies to a one-token target
    assert set(table.ci_kind) <= {"cluster-wilson", "wilson"} and "cluster-wilson" in set(table.ci_kind)
    cells = per_token.groupby(["layer", "head", "sign"], sort=False)
    for (layer, head, sign), rows in cells:
        row = table[(table.layer == layer) & (table["head"] == head) & (table.sign == sign)].iloc[0]
        hits = np.bincount(prompt, weights=rows.hit.to_numpy(float), minlength=dataset.n)
        counts = np.bincount(prompt, minlength=dataset.n).astype(float)
        if row.ci_kind == "wilson":
            assert row.score in (0.0, 1.0)
            theirs = stats.binomtest(int(row.hits), int(row.n)).proportion_ci(method="wilson")
            expected = (theirs.low, theirs.high)
        else:
            p, total, m = hits.sum() / counts.sum(), counts.sum(), len(counts)
            spread = sum((h - p * c) ** 2 for h, c in zip(hits, counts, strict=True)) * m / (m - 1) / total**2
            effective = total / max(1.0, spread / (p * (1 - p) / total))
            z = stats.norm.ppf(0.975)
            centre = (p + z**2 / (2 * effective)) / (1 + z**2 / effective)
            half = z * np.sqrt(p * (1 - p) / effective + z**2 / (4 * effective**2)) / (1 + z**2 / effective)
            expected = (centre - half, centre + half)
        assert (row.ci_low, row.ci_high) == pytest.approx(expected, abs=1e-9)
        assert row.ci_low <= row.score <= row.ci_high


@pytest.fixture(scope="module")
def organism():
    return load_model("organism")


def _detail_mask(model, dataset, options: OVOptions, heads: int, prompts: int) -> np.ndarray:
    """Which rows of the whole per-token table are the first `prompts` prompts' instances: the table
    is relation by relation, head by head, sign by sign, each keyword instance with a target."""
    batch = dataset.keywords.batch.numpy()
    parts = []
    for relation in options.relations:
        _, tokens = instance_targets(dataset, model.tokens, relation)
        valid = np.array([bool(t) for t in tokens])
        parts.append(np.tile(batch[valid] < prompts, heads * len(options.signs)))
    return np.concatenate(parts)


@pytest.mark.parametrize("which", ["organism", "tiny"])
@pytest.mark.parametrize("embedding", ["context", "token"])
def test_a_detail_sample_gives_the_same_scores_and_the_first_prompts_detail(
    which, embedding, organism, tiny_model, monkeypatch
):
    """`detail_prompts`: the rows of the later prompts are capped at k (the exact early exit), so
    the score table (hits) is the full pass's to the bit; the per-token table is the full one's rows
    of the first prompts, and the categories are those of the first prompts scored alone. The
    vocabulary is taken 16 columns at a time, so capped rows can leave early."""
    monkeypatch.setattr(ov_kernel, "COLUMNS", 16)
    found, ranks = [], ov_kernel.ov_ranks

    def spy(*args, **kwargs):
        found.append(ranks(*args, **kwargs))
        return found[-1]

    monkeypatch.setattr("headscope.scores.ov.ov_ranks", spy)
    model = organism if which == "organism" else tiny_model
    prompts = 5
    for task in ("ioi", "seq-digits"):
        dataset = build_dataset(get_task(task), model.tokens, 16, seed=2)
        options = OVOptions(tuple(dataset.task.relations), k=5, embedding=embedding, negative=True)
        whole = ov_scores(model, dataset, options)
        sampled = ov_scores(model, dataset, options, detail_prompts=prompts)
        alone = ov_scores(model, dataset.subset(prompts), options)
        pd.testing.assert_frame_equal(sampled.table, whole.table, check_exact=True)
        heads = model.n_layers * model.n_heads
        mask = _detail_mask(model, dataset, options, heads, prompts)
        expected = whole.per_token[mask].reset_index(drop=True)
        pd.testing.assert_frame_equal(sampled.per_token, expected, check_exact=True)
        pd.testing.assert_frame_equal(sampled.per_token, alone.per_token, check_exact=True)
        pd.testing.assert_frame_equal(sampled.categories, alone.categories, check_exact=True)
        assert (sampled.categories.n < whole.categories.n).all()
        cap = found[-2].cap  # the sampled pass: the later prompts' rows capped, and some left early
        assert found[-2].topk.shape[-1] == 5 and cap is not None and cap.rows is not None
        assert bool(cap.rows.any()) and not bool(cap.rows.all())
        assert (found[-2].blocks[:, cap.rows] < ov_kernel.n_blocks(model.weights.d_vocab)).any()
        assert found[-3].cap is None and found[-1].cap is None


def test_every_prompt_in_the_detail_sample_is_the_full_pass(organism):
    """`detail_prompts` of every prompt or more (or None) caps nothing: the same three tables."""
    dataset = build_dataset(get_task("ioi"), organism.tokens, 8, seed=1)
    options = OVOptions(("copy",), k=5, negative=True)
    whole = ov_scores(organism, dataset, options)
    for prompts in (None, 8, 50):
        again = ov_scores(organism, dataset, options, detail_prompts=prompts)
        pd.testing.assert_frame_equal(again.table, whole.table, check_exact=True)
        pd.testing.assert_frame_equal(again.per_token, whole.per_token, check_exact=True)
        pd.testing.assert_frame_equal(again.categories, whole.categories, check_exact=True)
    assert (whole.categories.n == whole.table.n.iloc[0]).all()  # every instance with a target


def test_a_detail_sample_of_no_prompt_keeps_the_scores_and_gives_no_table_of_ranks(organism):
    """`detail_prompts=0` (what a tight budget asks for): every row capped at k, the scores the
    full pass's to the bit, the per-token and category tables empty with their columns."""
    dataset = build_dataset(get_task("ioi"), organism.tokens, 8, seed=1)
    options = OVOptions(("copy",), k=5, negative=True)
    whole = ov_scores(organism, dataset, options)
    none = ov_scores(organism, dataset, options, detail_prompts=0)
    pd.testing.assert_frame_equal(none.table, whole.table, check_exact=True)
    assert none.per_token.empty and list(none.per_token.columns) == list(whole.per_token.columns)
    assert none.categories.empty and list(none.categories.columns) == list(whole.categories.columns)


def test_a_capped_pass_handed_to_the_detail_tables_is_refused(organism):
    """Ranks capped on rows the per-token table reads: one clear error, not wrong ranks."""
    from headscope.scores.ov import ov_inputs as inputs_of
    from headscope.scores.ov import run_kernel

    dataset = build_dataset(get_task("ioi"), organism.tokens, 8, seed=1)
    options = OVOptions(("copy",), k=5)
    capped = run_kernel(organism, inputs_of(organism, dataset, options), options, detail=False)
    with pytest.raises(HeadscopeError, match="exact ranks and top-k"):
        ov_scores(organism, dataset, options, computed=capped, detail_prompts=2)
    with pytest.raises(HeadscopeError, match="detail_prompts=-1: give 0 or more"):
        ov_scores(organism, dataset, options, detail_prompts=-1)
