"""The architecture record of each family, the per-query-head weights, and the load-time check.

Expected records are written from each family's Hugging Face modelling code and config
documentation (not from headscope); the weights are compared with the HF modules' own tensors.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from headscope.models import architecture
from headscope.models.architecture import FamilyFacts
from headscope.models.loading import load_model
from headscope.models.weights import ArchitectureError
from tests.models import families as fam

# family: positional, norm, gain offset, post-norms, parallel, embedding norm, scaled, n_kv, softcap, tied
EXPECTED = {
    "gpt2": ("learned", "LN", 0.0, False, False, False, False, 4, None, True),
    "opt": ("learned", "LN", 0.0, False, False, False, False, 4, None, True),
    "llama": ("rotary", "RMS", 0.0, False, False, False, False, 2, None, False),
    "mistral": ("rotary", "RMS", 0.0, False, False, False, False, 2, None, False),
    "qwen2": ("rotary", "RMS", 0.0, False, False, False, False, 2, None, False),
    "qwen3": ("rotary", "RMS", 0.0, False, False, False, False, 2, None, False),
    "gemma": ("rotary", "RMS", 1.0, False, False, False, True, 2, None, True),
    "gemma2": ("rotary", "RMS", 1.0, True, False, False, True, 2, 30.0, True),
    "gemma3": ("rotary", "RMS", 1.0, True, False, False, True, 2, None, True),
    "neox": ("rotary", "LN", 0.0, False, True, False, False, 4, None, False),
    "gptj": ("rotary", "LN", 0.0, False, True, False, False, 4, None, False),
    "gptneo": ("learned", "LN", 0.0, False, False, False, False, 4, None, True),
    "phi": ("rotary", "LN", 0.0, False, True, False, False, 4, None, False),
    "falcon": ("rotary", "LN", 0.0, False, True, False, False, 1, None, True),
    "bloom": ("alibi", "LN", 0.0, False, False, True, False, 4, None, True),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    made: dict[str, str] = {}

    def folder(name: str) -> str:
        if name not in made:
            made[name] = str(fam.save_family(fam.BY_NAME[name], tmp_path_factory.mktemp(name)))
        return made[name]

    return folder


@pytest.mark.parametrize("name", list(EXPECTED))
def test_the_record_says_what_the_family_does(saved, name):
    arch = load_model(saved(name)).arch
    positional, norm, offset, post, parallel, embed_norm, scaled, n_kv, cap, tied = EXPECTED[name]
    assert (arch.positional, arch.norm, arch.gain_offset) == (positional, norm, offset)
    assert (arch.attn_out_norm, arch.mlp_out_norm, arch.parallel) == (post, post, parallel)
    assert arch.embedding_norm == embed_norm
    assert arch.embedding_scale == (math.sqrt(fam.HIDDEN) if scaled else 1.0)
    assert (arch.n_heads, arch.n_kv_heads, arch.logit_softcap) == (fam.HEADS, n_kv, cap)
    assert arch.tied_unembedding == tied
    assert arch.convention == ("linear" if not post and cap is None else "frozen-norm")
    assert arch.dla_refusal is None


@pytest.mark.parametrize("name", ["llama", "falcon"])
def test_each_query_head_reads_its_key_value_group(saved, name):
    """W_V[l, h] is the HF value projection's rows of group h // (H / H_kv) (HF's repeat_kv)."""
    model = load_model(saved(name))
    hf = fam.hf_model(saved(name))
    arch, d_head = model.arch, model.weights.d_head
    for layer_index, layer in enumerate(fam.BY_NAME[name].hf_layers(hf)):
        if name == "falcon":  # fused query_key_value: H query heads, then one key and one value head
            v_rows = layer.self_attention.query_key_value.weight[(fam.HEADS + 1) * d_head :]
        else:
            v_rows = layer.self_attn.v_proj.weight
        for head in range(fam.HEADS):
            group = head // (fam.HEADS // arch.n_kv_heads)
            expected = v_rows[group * d_head : (group + 1) * d_head].T  # [d_model, d_head]
            torch.testing.assert_close(model.weights.W_V[layer_index, head], expected.detach())


@pytest.mark.parametrize("name", ["gemma", "gemma2"])
def test_norm_gains_are_effective_gains(saved, name):
    """Gemma's RMSNorm multiplies by 1 + w: the record's gains are 1 + the stored weights."""
    model = load_model(saved(name))
    hf = fam.hf_model(saved(name))
    layer = fam.BY_NAME[name].hf_layers(hf)[0]
    torch.testing.assert_close(model.weights.ln1_w[0], 1 + layer.input_layernorm.weight.detach())
    torch.testing.assert_close(model.weights.lnf_w, 1 + hf.model.norm.weight.detach())
    if name == "gemma2":
        torch.testing.assert_close(
            model.weights.attn_out_w[0], 1 + layer.post_attention_layernorm.weight.detach()
        )


def test_a_wrong_gain_convention_is_refused_at_load(saved, monkeypatch):
    """Reading Gemma's norms as plain gains would give wrong OV ranks: the load-time check refuses it."""
    monkeypatch.setitem(
        architecture.FAMILY_FACTS, "gemma", replace(FamilyFacts(), embedding_scale="sqrt_d_model")
    )
    with pytest.raises(
        ArchitectureError, match=r"headscope reads gemma models wrongly \(the attention's input norm"
    ):
        load_model(saved("gemma"))


def test_bias_free_projections_read_as_zeros(saved):
    weights = load_model(saved("llama")).weights
    assert not weights.b_V.any() and not weights.b_O.any() and not weights.ln1_b.any()
    assert weights.attn_out_w is None
