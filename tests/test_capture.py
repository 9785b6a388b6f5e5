"""capture(): batched, reduced activations equal a full run_with_cache, however it is batched."""

import pytest
import torch

from headscope.capture import CaptureError, Needs, capture
from headscope.scores import attention, direct_logit, evaluate, scatter
from headscope.tasks.builtin import builtin_tasks
from headscope.tasks.dataset import build_dataset
from tests.numerics import float_tolerance

EVERYTHING = Needs(
    resid0_keywords=True,
    pattern_end=True,
    pattern_roles=True,
    pattern_full=True,
    z_end=True,
    mlp_end=True,
    embed_end=True,
    scale_end=True,
)


def test_batches_of_different_widths_merge_like_one_batch(tiny_model):
    dataset = build_dataset(builtin_tasks()["recency"], tiny_model.tokens, 24, seed=5)
    assert len(set(dataset.lengths.tolist())) > 1  # prompts of 2-4 subjects differ in length
    whole = capture(tiny_model, dataset, EVERYTHING, batch_size=dataset.n)
    split = capture(tiny_model, dataset, EVERYTHING, batch_size=5)
    for name in ("resid0_keywords", "pattern_end", "pattern_roles", "z_end", "mlp_end", "scale_end"):
        torch.testing.assert_close(getattr(split, name), getattr(whole, name), atol=1e-5, rtol=1e-5)
    width = whole.pattern_full.shape[-1]
    torch.testing.assert_close(
        split.pattern_full[..., :width, :width], whole.pattern_full, atol=1e-5, rtol=1e-5
    )


def test_reduced_activations_equal_the_full_cache(tiny_model):
    dataset = build_dataset(builtin_tasks()["ioi"], tiny_model.tokens, 6, seed=6)
    kept = capture(tiny_model, dataset, EVERYTHING, batch_size=4)
    logits, cache = tiny_model.bridge.run_with_cache(dataset.tokens)
    rows = torch.arange(dataset.n)
    end = dataset.end
    for layer in range(tiny_model.n_layers):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]  # [batch, head, q, k]
        torch.testing.assert_close(kept.pattern_end[:, layer], pattern[rows, :, end], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(kept.z_end[:, layer], cache[f"blocks.{layer}.attn.hook_z"][rows, end])
        torch.testing.assert_close(kept.mlp_end[:, layer], cache[f"blocks.{layer}.hook_mlp_out"][rows, end])
    s1 = dataset.roles["S1"].index
    role = kept.role_names.index("S1")
    pattern0 = cache["blocks.0.attn.hook_pattern"]
    torch.testing.assert_close(kept.pattern_roles[:, 0, :, role], pattern0[rows, :, s1], atol=1e-5, rtol=1e-5)
    kw = dataset.keywords
    resid0 = cache["blocks.0.hook_resid_post"][kw.batch, kw.position]
    torch.testing.assert_close(kept.resid0_keywords, resid0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(kept.logits_end, logits[rows, end], atol=1e-4, rtol=1e-4)


READERS = {
    "role_attention reads capture.pattern_roles": lambda m, d, c: attention.role_attention(d, c),
    "head_detectors reads capture.pattern_full": lambda m, d, c: attention.head_detectors(d, c),
    "scatter_points reads capture.pattern_end": lambda m, d, c: scatter.scatter_points(
        m.weights, d, c, (0, 0), ["IO"]
    ),
    "direct_logit_attribution reads capture.z_end": lambda m, d, c: direct_logit.direct_logit_attribution(
        m.weights, d, c
    ),
    "evaluate reads capture.logits_end": lambda m, d, c: evaluate.evaluate(d, c),
}


@pytest.mark.parametrize("expected", list(READERS))
def test_a_score_given_a_capture_without_its_field_names_the_field_and_the_flag(tiny_model, expected):
    dataset = build_dataset(builtin_tasks()["ioi"], tiny_model.tokens, 4, seed=0)
    bare = capture(tiny_model, dataset, Needs(logits_end=False))  # a plain pass keeping nothing
    field = expected.split("capture.")[1]
    with pytest.raises(CaptureError) as error:
        READERS[expected](tiny_model, dataset, bare)
    assert str(error.value).startswith(expected)
    assert f"Needs({field}=True)" in str(error.value)


@pytest.mark.parametrize("family", ["gpt2", "gemma2"])
def test_logits_at_end_equal_the_full_forward_pass(tiny_model, family, tmp_path):
    """The unembedding runs on the end rows only (and Gemma 2's soft-cap after it): the model's own
    forward pass over every position, read at `end`, to within float32 rounding of the one product
    that differs (a product of another shape may sum in another order: d_model terms per logit,
    bounded by |unembedding input| @ |W_U|)."""
    from tests.models.families import BY_NAME, headscope_model, save_family

    model = tiny_model if family == "gpt2" else headscope_model(save_family(BY_NAME[family], tmp_path))
    dataset = build_dataset(builtin_tasks()["ioi"], model.tokens, 10, 0)
    assert dataset.lengths.unique().numel() > 1  # ends at different positions
    kept = capture(model, dataset, Needs(logits_end=True, scale_end=True), batch_size=4)
    with torch.no_grad():
        full, cache = model.bridge.run_with_cache(dataset.tokens, names_filter="unembed.hook_in")
    assert full.shape[:2] == dataset.tokens.shape  # [batch, pos, d_vocab]: the hook is gone again
    rows = torch.arange(dataset.n), dataset.end
    with torch.no_grad():
        terms = cache["unembed.hook_in"][rows].abs() @ model.bridge.unembed.W_U.abs()  # [batch, d_vocab]
    tol = float_tolerance(model.weights.d_model, float(terms.max()))
    torch.testing.assert_close(kept.logits_end, full[rows], rtol=0, atol=tol)
