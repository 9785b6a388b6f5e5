"""Effective embeddings against Hugging Face's own GPT-2 forward pass."""

import torch
from transformers import GPT2LMHeadModel

from headscope.capture import Needs, capture
from headscope.embedding import effective_embeddings
from headscope.tasks.dataset import build_dataset
from headscope.tasks.registry import get_task


def _setup(tiny_model, tiny_dir):
    dataset = build_dataset(get_task("seq-digits"), tiny_model.tokens, 4, seed=1)
    return dataset, GPT2LMHeadModel.from_pretrained(tiny_dir).eval()


def test_context_is_block0_output_at_keywords(tiny_model, tiny_dir):
    dataset, hf = _setup(tiny_model, tiny_dir)
    got = effective_embeddings(tiny_model, dataset, "context")
    with torch.no_grad():
        hidden = hf(dataset.tokens, output_hidden_states=True).hidden_states[1]  # after block 0
    kw = dataset.keywords
    assert torch.allclose(got.vectors, hidden[kw.batch, kw.position], atol=1e-5)
    assert got.row.tolist() == list(range(len(kw.token)))


def test_context_reuses_a_capture(tiny_model, tiny_dir):
    dataset, _ = _setup(tiny_model, tiny_dir)
    taken = capture(tiny_model, dataset, Needs(resid0_keywords=True, logits_end=False))
    marked = taken.resid0_keywords + 1000.0
    got = effective_embeddings(tiny_model, dataset, "context", type(taken)(resid0_keywords=marked))
    assert torch.equal(got.vectors, marked)


def test_token_is_embedding_plus_mlp0(tiny_model, tiny_dir):
    dataset, hf = _setup(tiny_model, tiny_dir)
    got = effective_embeddings(tiny_model, dataset, "token")
    with torch.no_grad():
        e = hf.transformer.wte.weight[dataset.keywords.token]
        expected = e + hf.transformer.h[0].mlp(hf.transformer.h[0].ln_2(e))
    assert torch.allclose(got.vectors[got.row], expected, atol=1e-5)
    assert len(got.vectors) == len(set(dataset.keywords.token.tolist()))  # each distinct token once


def test_block0_is_block0_on_the_token_alone(tiny_model, tiny_dir):
    dataset, hf = _setup(tiny_model, tiny_dir)
    got = effective_embeddings(tiny_model, dataset, "block0")
    with torch.no_grad():
        alone = dataset.keywords.token[:, None]  # [instance, pos=1], no BOS
        expected = hf(alone, output_hidden_states=True).hidden_states[1][:, 0]
    assert torch.allclose(got.vectors[got.row], expected, atol=1e-5)
