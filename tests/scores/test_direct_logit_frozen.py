"""Direct logit attribution under the frozen-norm convention (Gemma 2/3), against Hugging Face.

The reference reads Hugging Face's modules only: the pre-cap logits are the output embedding's
own output (before Gemma 2's `final_logit_softcapping`), and each head's frozen-norm term is its
slice of `o_proj`, times the post-attention norm's gain over that norm's clean-run scale (the
norm's own input statistics), through the final norm with its clean-run scale, dotted with
W_U[:, answer] - W_U[:, contrast].
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from headscope.capture import capture
from headscope.scores.direct_logit import DLA_NEEDS, attribution_per_prompt, direct_logit_attribution
from headscope.tasks.dataset import Dataset, build_dataset
from headscope.tasks.registry import get_task
from tests.models import families as fam
from tests.numerics import float_tolerance

FROZEN = ("gemma2", "gemma3")


def _dataset(folder: Path) -> Dataset:
    return build_dataset(get_task("ioi"), fam.headscope_model(folder).tokens, n=8, seed=0)


def _hf_run(hf, tokens: torch.Tensor) -> dict[str, list[torch.Tensor] | torch.Tensor]:
    """HF's forward with the values the reference reads: pre-cap logits, each layer's o_proj input
    and post-attention-norm input, the final norm's input, and the capped logits."""
    kept: dict = {"z": [], "o": [], "final": [], "precap": []}
    layers = fam.BY_NAME["gemma2"].hf_layers(hf)
    handles = [hf.get_output_embeddings().register_forward_hook(lambda m, a, out: kept["precap"].append(out))]
    handles.append(hf.model.norm.register_forward_hook(lambda m, a, out: kept["final"].append(a[0])))
    for layer in layers:
        handles.append(layer.self_attn.o_proj.register_forward_hook(lambda m, a, out: kept["z"].append(a[0])))
        handles.append(
            layer.post_attention_layernorm.register_forward_hook(lambda m, a, o: kept["o"].append(a[0]))
        )
    try:
        with torch.no_grad():
            kept["capped"] = hf(tokens).logits
    finally:
        for handle in handles:
            handle.remove()
    return kept


def _at_end(x: torch.Tensor, dataset: Dataset) -> torch.Tensor:
    return x[torch.arange(dataset.n), dataset.end]


def _diff(logits: torch.Tensor, dataset: Dataset) -> torch.Tensor:
    end = _at_end(logits, dataset)
    return end.gather(1, dataset.answers[:, None])[:, 0] - end.gather(1, dataset.contrasts[:, None])[:, 0]


def _rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    return (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()


@pytest.mark.parametrize("name", FROZEN)
def test_the_terms_sum_to_the_pre_cap_logit_difference(family_dir, name):
    folder = family_dir(name)
    model, hf = fam.headscope_model(folder), fam.hf_model(str(folder))
    assert model.arch.convention == "frozen-norm"
    dataset = _dataset(folder)
    per_prompt = attribution_per_prompt(model.weights, dataset, capture(model, dataset, DLA_NEEDS))
    run = _hf_run(hf, dataset.tokens)
    expected = _diff(run["precap"][0], dataset)
    magnitude = float(per_prompt.abs().sum(1).max())
    assert (per_prompt.sum(1).double() - expected.double()).abs().max() <= float_tolerance(
        per_prompt.shape[1] * fam.HIDDEN, magnitude
    )
    table = direct_logit_attribution(model.weights, dataset, capture(model, dataset, DLA_NEEDS))
    assert set(table["convention"]) == {"frozen-norm"}
    assert table.dla.sum() == pytest.approx(float(expected.mean()), abs=1e-4)
    if model.arch.logit_softcap is not None:  # the capped difference is another number
        assert (expected - _diff(run["capped"], dataset)).abs().max() > 1e-3


@pytest.mark.parametrize("name", FROZEN)
def test_each_head_term_is_its_o_proj_slice_through_both_frozen_norms(family_dir, name):
    folder = family_dir(name)
    model, hf = fam.headscope_model(folder), fam.hf_model(str(folder))
    dataset = _dataset(folder)
    per_prompt = attribution_per_prompt(model.weights, dataset, capture(model, dataset, DLA_NEEDS))
    run = _hf_run(hf, dataset.tokens)
    eps = float(hf.config.rms_norm_eps)
    w_u = hf.get_output_embeddings().weight  # [vocab, d_model]
    direction = w_u[dataset.answers] - w_u[dataset.contrasts]  # [batch, d_model]
    final = _at_end(run["final"][0], dataset)
    u = direction * (1 + hf.model.norm.weight) / _rms(final, eps)  # through the frozen final norm
    d_head = model.weights.d_head
    column = 1
    for index, layer in enumerate(fam.BY_NAME[name].hf_layers(hf)):
        z, o = _at_end(run["z"][index], dataset), _at_end(run["o"][index], dataset)
        gain = (1 + layer.post_attention_layernorm.weight) / _rms(o, eps)  # [batch, d_model]
        for head in range(fam.HEADS):
            written = fam.head_output(layer.self_attn.o_proj, z, head, d_head) * gain
            expected = (written * u).sum(-1)
            got = per_prompt[:, column + head]
            assert (got.double() - expected.double()).abs().max() <= float_tolerance(
                2 * fam.HIDDEN, float((written.abs().sum(-1).max() * u.abs().max()).detach())
            ), (name, index, head)
        column += fam.HEADS + 1  # the layer's heads and its MLP
