"""Every architecture family, exactly: headscope's numbers against Hugging Face's own modules.

Each test runs on a tiny random model of each family (tests/models/families.py) and compares
what headscope reports with an independent computation written from HF's modules (a separately
loaded HF model, eager attention), never from the TransformerLens bridge or headscope's weights.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from headscope.capture import capture
from headscope.scores.ablation import AblationOptions, ablate, knockout_sweep
from headscope.scores.direct_logit import DLA_NEEDS, attribution_per_prompt, direct_logit_attribution
from headscope.scores.keywords import keyword_dataset
from headscope.scores.ov import OVOptions, ov_scores
from headscope.tasks.dataset import Dataset, build_dataset
from headscope.tasks.registry import get_task
from tests.models import families as fam
from tests.models.families import BY_NAME, NAMES, headscope_model
from tests.numerics import best_target_logit, ov_logit_tolerance, rank_window, report_ties

# Keywords for the OV test, next = the following one: number words are one token each (with the
# leading space) in every tokenizer kind; digits are one token after a space token of their own in
# the SentencePiece-style, Llama 3 and no-BOS kinds.
KEYWORDS = {
    "words": ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"],
    "digits": [str(i) for i in range(1, 10)],
}
# DLA there is the frozen-norm convention's (no plain sum of component terms)
DLA_UNDEFINED = {"gemma2": "post-attention norm, final soft-capping", "gemma3": "post-attention norm"}

# (test, family) pairs known to fail today; strict, so a fix shows up as XPASS and the mark goes.
KNOWN_FAILURES: dict[tuple[str, str], str] = {}


def families_for(test: str, names: tuple[str, ...] = NAMES) -> list:
    marks = lambda name: (  # noqa: E731
        [pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[test, name])]
        if (test, name) in KNOWN_FAILURES
        else []
    )
    return [pytest.param(name, marks=marks(name), id=name) for name in names]


@functools.cache
def _ioi(folder: Path) -> Dataset:
    return build_dataset(get_task("ioi"), headscope_model(folder).tokens, n=8, seed=0)


def hf_logit_diffs(hf, dataset: Dataset, hooks=()) -> torch.Tensor:
    """logit(answer) - logit(contrast) at each prompt's end, from HF's forward (right padding
    cannot reach `end` through causal attention), with forward pre-hooks `(module, fn)`."""
    handles = [module.register_forward_pre_hook(fn) for module, fn in hooks]
    try:
        with torch.no_grad():
            logits = hf(dataset.tokens).logits
    finally:
        for handle in handles:
            handle.remove()
    end = logits[torch.arange(dataset.n), dataset.end]  # [batch, vocab]
    return end.gather(1, dataset.answers[:, None])[:, 0] - end.gather(1, dataset.contrasts[:, None])[:, 0]


# ---- 1. the bridge computes what Hugging Face computes ---------------------------------------


@pytest.mark.parametrize("name", families_for("bridge"))
def test_bridge_logits_and_patterns_equal_hf(family_dir, name):
    folder = family_dir(name)
    model, hf = headscope_model(folder), fam.hf_model(str(folder))
    tokens = _ioi(folder).tokens[:3]
    patterns: dict[int, torch.Tensor] = {}
    hooks = [
        (
            f"blocks.{layer}.attn.hook_pattern",
            lambda a, hook, layer=layer: patterns.update({layer: a.detach()}),
        )
        for layer in range(model.n_layers)
    ]
    with torch.no_grad():
        logits = model.bridge.run_with_hooks(tokens, fwd_hooks=hooks)
        expected = hf(tokens, output_attentions=True)
    torch.testing.assert_close(logits, expected.logits, atol=1e-4, rtol=1e-4)
    for layer in range(model.n_layers):
        torch.testing.assert_close(patterns[layer], expected.attentions[layer], atol=1e-5, rtol=1e-4)


# ---- 2. OV ranks ------------------------------------------------------------------------------


def reference_ov_ranks(family: fam.Family, hf, tokens, words: list[str], targets) -> dict[tuple, tuple]:
    """(layer, head, relation, sign, keyword) -> (rank, lowest, highest), per head straight from HF's
    modules: the rank, and the ranks another float32 summation order could give (float ties)."""
    x = fam.token_vectors(family, hf, tokens)  # [word, d_model]
    values = fam.head_values(family, hf, x)  # per layer [word, H * d_head]
    n_heads = hf.config.num_attention_heads if hasattr(hf.config, "num_attention_heads") else hf.config.n_head
    ranks = {}
    for layer_index, layer in enumerate(family.hf_layers(hf)):
        d_head = values[layer_index].shape[1] // n_heads
        for head in range(n_heads):
            o = fam.head_output(
                family.hf_out_proj(layer), values[layer_index], head, d_head
            )  # [word, d_model]
            for sign in (1, -1):
                logits = fam.readout(family, hf, layer, sign * o)  # [word, vocab]
                tol = ov_logit_tolerance(x.shape[1], d_head, logits, n_upstream=5 * x.shape[1])  # + MLP0
                for relation, relation_targets in targets.items():
                    rows = [i for i, t in enumerate(relation_targets) if t]
                    wanted = [relation_targets[i] for i in rows]
                    found = fam.target_rank(logits[rows], wanted)
                    low, high = rank_window(logits[rows], best_target_logit(logits[rows], wanted), tol)
                    for i, rank, lo, hi in zip(rows, found, low.tolist(), high.tolist(), strict=True):
                        ranks[layer_index, head, relation, sign, words[i]] = (rank, lo, hi)
    return ranks


@pytest.mark.parametrize("keywords", list(KEYWORDS))
@pytest.mark.parametrize("name", families_for("ov"))
def test_ov_ranks_equal_a_per_head_computation_from_hf_modules(family_dir, name, keywords):
    folder, words = family_dir(name), KEYWORDS[keywords]
    model, hf = headscope_model(folder), fam.hf_model(str(folder))
    dataset = keyword_dataset(words, model.tokens)
    assert list(dataset.keywords.words) == words
    assert [model.tokens.decode(t).strip() for t in dataset.keywords.token.tolist()] == words
    options = OVOptions(relations=("copy", "next"), k=5, embedding="token", negative=True)
    table = ov_scores(model, dataset, options).per_token
    targets = {
        "copy": [model.tokens.target_tokens(w) for w in words],
        "next": [model.tokens.target_tokens(w) for w in words[1:]] + [()],
    }
    expected = reference_ov_ranks(BY_NAME[name], hf, dataset.keywords.token, words, targets)
    got = {
        (r.layer, r.head, r.relation, r.sign, r.keyword): int(r.rank)
        for r in table[["layer", "head", "relation", "sign", "keyword", "rank"]].itertuples()
    }
    assert got.keys() == expected.keys()
    wrong = [
        (key, got[key], expected[key])
        for key in expected
        if not expected[key][1] <= got[key] <= expected[key][2]
    ]
    assert not wrong, f"{len(wrong)} of {len(expected)} ranks differ, e.g. (key, headscope, HF): {wrong[:5]}"
    tied = sum(got[key] != expected[key][0] for key in expected)
    report_ties(f"{name}-{keywords}", tied, len(expected), "ranks")


# ---- 3. zero ablation of one head, by a hook on HF's output projection -----------------------


def _zero_head(head: int, d_head: int):
    def hook(module, args):
        z = args[0].clone()
        z[..., head * d_head : (head + 1) * d_head] = 0
        return (z, *args[1:])

    return hook


@pytest.mark.parametrize("name", families_for("ablate"))
def test_zero_ablation_equals_hooking_hf_output_projection(family_dir, name):
    folder, family = family_dir(name), BY_NAME[name]
    model, hf = headscope_model(folder), fam.hf_model(str(folder))
    dataset = _ioi(folder)
    table = ablate(model, dataset, AblationOptions(method="zero", components=("heads",), positions=("all",)))
    assert table.attrs["clean"] == pytest.approx(float(hf_logit_diffs(hf, dataset).mean()), abs=1e-4)
    metrics = table.set_index("component")["metric"]
    for layer_index, layer in enumerate(family.hf_layers(hf)):
        out_proj = family.hf_out_proj(layer)
        d_head = _projection_width(out_proj) // model.n_heads
        for head in range(model.n_heads):
            expected = hf_logit_diffs(hf, dataset, [(out_proj, _zero_head(head, d_head))]).mean()
            assert metrics[f"{layer_index}.{head}"] == pytest.approx(float(expected), abs=1e-4), (
                layer_index,
                head,
            )


def _projection_width(out_proj) -> int:
    """The input width of an output projection: nn.Linear (in_features) or GPT-2's Conv1D (nx)."""
    return out_proj.in_features if hasattr(out_proj, "in_features") else out_proj.nx


# ---- 4. the fast knockout sweep equals the reference sweep ------------------------------------


@pytest.mark.parametrize("name", families_for("sweep"))
def test_fast_knockout_sweep_equals_reference_sweep(family_dir, name):
    folder = family_dir(name)
    model, dataset = headscope_model(folder), _ioi(folder)
    options = AblationOptions(method="mean", components=("heads", "mlps"))  # one batch: a full pass per site
    sites, fast, clean = knockout_sweep(model, dataset, options, fast=True, progress=False)
    _, plain, plain_clean = knockout_sweep(model, dataset, options, fast=False, progress=False)
    assert len(sites) == model.n_layers * (model.n_heads + 1)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-5)
    assert clean == pytest.approx(plain_clean, abs=1e-5)
    assert (fast - clean).abs().max() > 1e-3  # the knockouts do change the metric


# ---- 5. DLA sums to the logit difference, or is refused ---------------------------------------


@pytest.mark.parametrize("name", families_for("dla", tuple(n for n in NAMES if n not in DLA_UNDEFINED)))
def test_dla_sums_to_hf_logit_difference(family_dir, name):
    folder = family_dir(name)
    model, hf = headscope_model(folder), fam.hf_model(str(folder))
    dataset = _ioi(folder)
    taken = capture(model, dataset, DLA_NEEDS)
    per_prompt = attribution_per_prompt(model.weights, dataset, taken)
    expected = hf_logit_diffs(hf, dataset)
    torch.testing.assert_close(per_prompt.sum(1).double(), expected.double(), atol=1e-4, rtol=0)
    table = direct_logit_attribution(model.weights, dataset, taken)
    assert table.dla.sum() == pytest.approx(float(expected.mean()), abs=1e-4)


@pytest.mark.parametrize("name", families_for("dla_frozen", tuple(DLA_UNDEFINED)))
def test_dla_where_the_sum_is_not_linear_is_labelled_frozen_norm(family_dir, name):
    """Post-norms and soft-capping: DLA is the frozen-norm convention's (its sum is checked
    against HF's pre-cap logits in tests/scores/test_direct_logit_frozen.py), and says so."""
    folder = family_dir(name)
    model = headscope_model(folder)
    dataset = _ioi(folder)
    table = direct_logit_attribution(model.weights, dataset, capture(model, dataset, DLA_NEEDS))
    assert set(table["convention"]) == {"frozen-norm"}
    note = model.arch.convention_note
    assert "\n" not in note and "frozen-norm" in note
    assert "norm" in note.lower() or "soft" in note.lower(), note


# ---- the reference itself, against the formulas written out by hand --------------------------

LLAMA_LIKE = ("llama", "llama3", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3")


def _mlp0_by_hand(name: str, hf, e: torch.Tensor) -> torch.Tensor:
    """Block 0 with no position and no attention, written out per family from its HF modules."""
    layer = BY_NAME[name].hf_layers(hf)[0]
    if name in ("gemma2", "gemma3"):
        return e + layer.post_feedforward_layernorm(layer.mlp(layer.pre_feedforward_layernorm(e)))
    if name in LLAMA_LIKE:
        return e + layer.mlp(layer.post_attention_layernorm(e))
    if name == "opt":
        return e + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(e))))
    if name == "bloom":
        return e + layer.mlp(layer.post_attention_layernorm(e), torch.zeros_like(e))
    reads = {  # the norm each block's MLP reads (parallel blocks: the block input's)
        "gpt2": "ln_2", "gptneo": "ln_2", "neox": "post_attention_layernorm",
        "gptj": "ln_1", "phi": "input_layernorm", "falcon": "input_layernorm",
    }  # fmt: skip
    return e + layer.mlp(getattr(layer, reads[name])(e))


def _embedding_by_hand(name: str, hf, tokens: torch.Tensor) -> torch.Tensor:
    e = hf.get_input_embeddings()(tokens)  # Gemma's module multiplies by sqrt(d_model) itself
    if name.startswith("gemma"):
        torch.testing.assert_close(e, hf.get_input_embeddings().weight[tokens] * HIDDEN_SQRT)
    if name == "bloom":
        e = hf.transformer.word_embeddings_layernorm(e)
    return e


HIDDEN_SQRT = fam.HIDDEN**0.5


@pytest.mark.parametrize("name", NAMES)
def test_reference_token_vectors_are_embedding_plus_mlp0_by_hand(family_dir, name):
    hf = fam.hf_model(str(family_dir(name)))
    tokens = torch.arange(3, 9)
    with torch.no_grad():
        expected = _mlp0_by_hand(name, hf, _embedding_by_hand(name, hf, tokens))
    torch.testing.assert_close(fam.token_vectors(BY_NAME[name], hf, tokens), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", LLAMA_LIKE)
def test_reference_values_are_the_value_projection_of_each_heads_group(family_dir, name):
    """Query head h reads key/value group h // (H / H_kv) (HF's repeat_kv), after the input norm."""
    hf = fam.hf_model(str(family_dir(name)))
    x = torch.randn(5, fam.HIDDEN, generator=torch.Generator().manual_seed(0))
    values = fam.head_values(BY_NAME[name], hf, x)
    d_head, per_group = values[0].shape[1] // fam.HEADS, fam.HEADS // fam.KV_HEADS
    for layer_index, layer in enumerate(BY_NAME[name].hf_layers(hf)):
        with torch.no_grad():
            grouped = layer.self_attn.v_proj(layer.input_layernorm(x))  # [n, H_kv * d_head]
        for head in range(fam.HEADS):
            group = head // per_group
            torch.testing.assert_close(
                values[layer_index][:, head * d_head : (head + 1) * d_head],
                grouped[:, group * d_head : (group + 1) * d_head],
            )
