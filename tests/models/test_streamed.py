"""Weights streamed from a checkpoint's files against the same model booted whole.

On every family's tiny test model (tests/models/families.py): the Weights read one tensor at a
time from the safetensors files equal `weights_from_bridge`'s (float32: the same numbers, copied
and reshaped; bfloat16: each the float32 value rounded once), the effective embedding rows of
block 0 alone equal `embedding.token_vectors` / `block0_vectors` of the booted model, and the head
atlas computed on the streamed model equals the booted model's (ranks tie-aware).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import transformers as T

import headscope as hs
from headscope.embedding import block0_vectors, token_vectors
from headscope.heads import all_heads
from headscope.models.checks import ModelError
from headscope.models.streamed import StreamedModel, plan_of, stream_model
from headscope.models.weights import ArchitectureError, Weights, normalize
from headscope.scores import ov_kernel
from headscope.scores.atlas import SIGNS, AtlasOptions, AtlasPass, atlas_inputs, atlas_scores, kernel_call
from headscope.scores.ov_kernel import RankCap, Targets, ov_ranks
from tests.models import families as fam
from tests.models.families import NAMES, headscope_model
from tests.numerics import assert_float_close, check_ranks, ov_logit_tolerance

ATLAS_FAMILIES = ("gpt2", "llama", "gemma2")
BF16_HALF_ULP = torch.finfo(torch.bfloat16).eps / 2  # one rounding to bfloat16, relative
SCORE_TOLERANCE = 1e-6


def _tensors(weights: Weights) -> dict[str, torch.Tensor]:
    return {
        f.name: getattr(weights, f.name)
        for f in dataclasses.fields(weights)
        if isinstance(getattr(weights, f.name), torch.Tensor)
    }


@functools.cache
def streamed(folder: Path, dtype: str = "float32") -> StreamedModel:
    return stream_model(str(folder), dtype)


@pytest.mark.parametrize("name", NAMES)
def test_streamed_weights_equal_the_bridges(family_dir, name):
    loaded, got = headscope_model(family_dir(name)).weights, streamed(family_dir(name)).weights
    assert got.arch == loaded.arch
    assert (got.eps, got.normalization) == (loaded.eps, loaded.normalization)
    want = _tensors(loaded)
    assert set(_tensors(got)) == set(want)  # attn_out_w where the bridge has it, only there
    for field, tensor in _tensors(got).items():
        assert tensor.dtype == torch.float32, field
        assert_float_close(tensor, want[field], n_terms=1, what=f"{name} {field}")


@pytest.mark.parametrize("name", NAMES)
def test_bfloat16_weights_are_the_float32_ones_rounded_once(family_dir, name):
    loaded, got = headscope_model(family_dir(name)).weights, streamed(family_dir(name), "bfloat16").weights
    want = _tensors(loaded)
    for field, tensor in _tensors(got).items():
        assert tensor.dtype == torch.bfloat16, field
        torch.testing.assert_close(
            tensor.float(),
            want[field],
            rtol=BF16_HALF_ULP,
            atol=0.0,
            msg=lambda m, f=field: f"{name} {f}: {m}",
        )


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", ["token", "block0"])
def test_block0_rows_equal_the_booted_models(family_dir, name, kind):
    loaded, got = headscope_model(family_dir(name)), streamed(family_dir(name))
    tokens = torch.randperm(loaded.identity.d_vocab, generator=torch.Generator().manual_seed(0))[:50]
    reference = (token_vectors if kind == "token" else block0_vectors)(loaded, tokens)
    rows = (token_vectors if kind == "token" else block0_vectors)(got, tokens)
    d_mlp = fam.INTERMEDIATE * 2  # the widest sum on block 0's path (GPT-2's 4 x d_model MLP)
    assert_float_close(rows, reference, n_terms=d_mlp + fam.HIDDEN, what=f"{name} {kind} rows")


def test_the_identity_is_the_booted_models_but_its_source(family_dir):
    loaded, got = headscope_model(family_dir("llama")), streamed(family_dir("llama"))
    assert got.identity.source == "streamed"
    assert dataclasses.replace(got.identity, source=loaded.identity.source) == loaded.identity


def test_a_sharded_checkpoint_streams_the_same_weights(family_dir, tmp_path):
    """Several safetensors files and their index: each tensor found in its own shard."""
    hf = fam.hf_model(str(family_dir("qwen2")))
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    fam.family_tokenizer(fam.BY_NAME["qwen2"].tokenizer_kind).save_pretrained(tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) > 1
    want = _tensors(streamed(family_dir("qwen2")).weights)
    for field, tensor in _tensors(stream_model(str(tmp_path)).weights).items():
        assert torch.equal(tensor, want[field]), field


def test_a_gain_read_wrongly_is_refused_at_load(family_dir, monkeypatch):
    """Gemma's `1 + w` gain forgotten: the check against block 0's own norm refuses the reading."""
    from headscope.models import architecture

    monkeypatch.setitem(architecture.FAMILY_FACTS, "gemma", architecture.FamilyFacts())
    with pytest.raises(ArchitectureError, match="gemma models wrongly.*input norm"):
        stream_model(str(family_dir("gemma")))


def test_heads_read_in_the_wrong_order_are_refused_at_load(family_dir, monkeypatch):
    from headscope.models import streamed as module

    reversed_heads = lambda *args, read=module._output: read(*args).flip(0)  # noqa: E731
    monkeypatch.setattr(module, "_output", reversed_heads)
    with pytest.raises(ArchitectureError, match="output projection"):
        stream_model(str(family_dir("gpt2")))


def test_a_family_without_a_layout_is_refused_in_one_line():
    with pytest.raises(ModelError, match="gpt_bigcode.*load it in memory") as error:
        plan_of(T.GPTBigCodeConfig(n_layer=1, n_embd=32, n_head=4))
    assert "\n" not in str(error.value)


def test_only_a_local_folder_streams():
    with pytest.raises(ModelError, match="local Hugging Face folder"):
        stream_model("someone/some-model-on-the-hub")


def test_an_unknown_precision_is_refused(family_dir):
    with pytest.raises(ModelError, match="float32 or bfloat16"):
        stream_model(str(family_dir("llama")), "float16")


# ---- the atlas --------------------------------------------------------------------------------


def _atlas_pass(model, options: AtlasOptions):
    inputs = atlas_inputs(model, None, options)
    call, s = kernel_call(model, inputs, options)
    ranks = ov_ranks(
        model.weights, call.x, call.targets, list(s.heads), s.k, s.signs, s.dtype, False, s.device
    )
    return AtlasPass(inputs, ranks), call.targets, list(s.heads)


def _head_logits(w: Weights, x: torch.Tensor, layer: int, head: int, sign: int) -> torch.Tensor:
    """Logits [row, vocab] of one head's OV output alone, the plain way (float64 weights given):
    input norm, W_V, W_O, the attention output norm where there is one, final norm, W_U."""
    v = normalize(x, w.ln1_w[layer], w.ln1_b[layer], w.eps, w.normalization) @ w.W_V[layer, head]
    o = sign * ((v + w.b_V[layer, head]) @ w.W_O[layer, head])
    if w.attn_out_w is not None:
        o = normalize(o, w.attn_out_w[layer], None, w.eps, w.normalization)
    return normalize(o, w.lnf_w, w.lnf_b, w.eps, w.normalization) @ w.W_U + w.b_U


def _check_differing_ranks(
    weights: Weights, x, targets, heads, a, b, cap: int | None = None
) -> set[tuple[int, int, int]]:
    """Where the two passes' ranks differ, both lie in the float-tie window of plain float64
    logits (capped at `cap`, for ranks capped there); returns the (head, sign, row) cells that differed."""
    wide = {k: v.double() for k, v in _tensors(weights).items()}
    w = dataclasses.replace(weights, **wide)
    cells = {tuple(i[:3]) for i in torch.nonzero((a != b) & targets.valid).tolist()}
    for h, s, row in cells:
        (layer, head), sign = heads[h], SIGNS[s]
        logits = _head_logits(w, x[row : row + 1].double(), layer, head, sign)
        tol = ov_logit_tolerance(weights.d_model, weights.d_head, logits, n_upstream=4 * weights.d_model)
        slots = torch.nonzero(targets.valid[row]).flatten().tolist()
        for ranks in (a, b):
            for slot in slots:
                wanted = [tuple(targets.tokens[row, slot].tolist())]
                check_ranks(ranks[h, s, row : row + 1, slot], logits, wanted, tol, f"head {heads[h]}", cap)
    return cells


@pytest.mark.parametrize("name", ATLAS_FAMILIES)
def test_the_streamed_atlas_equals_the_booted_models(family_dir, name):
    assert_atlas_matches(headscope_model(family_dir(name)), streamed(family_dir(name)), name)


def assert_atlas_matches(reference, got, name: str) -> pd.DataFrame:
    """`got`'s atlas is `reference`'s: the same source tokens and targets, every rank equal but at a
    float tie (`_check_differing_ranks`), the tables' exact columns equal and their scores within
    SCORE_TOLERANCE on the rows no tie touched. Returns the reference's table."""
    options = AtlasOptions()
    pass_a, targets, heads = _atlas_pass(reference, options)
    pass_b, targets_b, _ = _atlas_pass(got, options)
    assert torch.equal(pass_a.inputs.batch.tokens, pass_b.inputs.batch.tokens)
    assert torch.equal(targets.tokens, targets_b.tokens)
    differed = _check_differing_ranks(
        got.weights, pass_b.inputs.x, targets, heads, pass_a.ranks.rank, pass_b.ranks.rank
    )
    a = atlas_scores(reference, None, options, pass_a).table
    b = atlas_scores(got, None, options, pass_b).table
    exact = [c for c in a.columns if c not in ("score", "within")]
    assert a[exact].equals(b[exact])
    untouched = np.ones(len(a), dtype=bool)  # table rows none of whose pairs' ranks differed at a tie
    for h, s, _ in differed:
        untouched &= ~((a["layer"] == heads[h][0]) & (a["head"] == heads[h][1]) & (a["sign"] == SIGNS[s]))
    for column in ("score", "within"):
        worst = np.abs(a[column].to_numpy() - b[column].to_numpy())[untouched].max()
        assert worst <= SCORE_TOLERANCE, f"{name} {column} differs by {worst}"
    return a


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("name", NAMES)
def test_capped_ranks_are_the_full_ranks_capped(family_dir, name, dtype, monkeypatch):
    """The OV kernel's exact early exit on every family's weights, read in float32 and in bfloat16:
    the ranks capped at k are the full pass's capped (where they differ, both lie in the float-tie
    window), and a row is read to the end exactly where a head has a hit. The tiny vocabulary is
    taken 64 columns at a time, so rows leave early."""
    monkeypatch.setattr(ov_kernel, "COLUMNS", 64)
    model, k = streamed(family_dir(name), dtype), 5
    weights, heads = model.weights, all_heads(model.n_layers, model.n_heads)
    tokens = torch.randperm(weights.d_vocab - 1, generator=torch.Generator().manual_seed(0))[:40]
    x = model.token_vectors(tokens)  # copy and next of each token
    targets = Targets(torch.stack([tokens, tokens + 1], 1)[:, :, None], torch.ones(40, 2, dtype=torch.bool))
    full = ov_ranks(weights, x, targets, heads, k, SIGNS, with_topk=False)
    capped = ov_ranks(weights, x, targets, heads, k, SIGNS, with_topk=False, cap=RankCap(k))
    _check_differing_ranks(weights, x, targets, heads, full.rank.clamp(max=k), capped.rank, cap=k)
    hit, whole = (full.rank < k).any(-1).any(1), ov_kernel.n_blocks(weights.d_vocab)  # [head, row]
    assert (capped.blocks[hit] == whole).all() and (capped.blocks[~hit] < whole).any()


def test_hs_atlas_streams_a_folder(family_dir):
    folder = family_dir("gpt2")
    table = hs.atlas(folder, relations="algorithmic", stream=True)
    want = hs.atlas(headscope_model(folder), relations="algorithmic")
    assert table.attrs["model"] == str(folder)
    exact = [c for c in want.columns if c not in ("score", "within")]
    assert table[exact].equals(want[exact])
    assert (
        float((table[["score", "within"]] - want[["score", "within"]]).abs().max().max()) <= SCORE_TOLERANCE
    )


def test_hs_atlas_takes_the_kernel_precision(family_dir):
    table = hs.atlas(family_dir("gpt2"), relations="algorithmic", stream=True, kernel_dtype="bfloat16")
    assert table.attrs["kernel"]["line"] == "OV kernel products in bfloat16 (asked for)"


def test_stream_needs_a_folder(family_dir):
    with pytest.raises(ModelError, match="give the folder's path"):
        hs.atlas(headscope_model(family_dir("gpt2")), stream=True)


def test_no_tokens_no_rows(family_dir):
    assert streamed(family_dir("llama")).token_vectors(torch.zeros(0, dtype=torch.long)).shape == (
        0,
        fam.HIDDEN,
    )
