"""Models a notebook already holds: a TransformerBridge, or a Hugging Face model with its tokenizer.

Every analysis given one of them returns what it returns for the same model loaded from its folder;
anything else is refused in one line naming what to pass.
"""

from __future__ import annotations

import inspect

import pandas as pd
import pytest
import torch
import transformers as T

import headscope as hs
from headscope import api
from headscope.models.loading import ModelError, as_model, load_model

N = 20


def _bridge(folder):
    from transformer_lens.model_bridge import TransformerBridge

    return TransformerBridge.boot_transformers(str(folder), device="cpu")


def _hf(folder):
    model = T.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model, T.AutoTokenizer.from_pretrained(folder)


def _same_results(given, reference: hs.Model) -> None:
    """OV scores, per-token ranks, detectors and task metrics equal the folder's."""
    ours, theirs = hs.ov_scores(given, "seq-digits", n=N), hs.ov_scores(reference, "seq-digits", n=N)
    pd.testing.assert_frame_equal(ours, theirs, check_exact=False, rtol=1e-6)
    pd.testing.assert_frame_equal(ours.attrs["per_token"], theirs.attrs["per_token"])
    pd.testing.assert_frame_equal(
        hs.head_detectors(given, "induction", n=N), hs.head_detectors(reference, "induction", n=N), rtol=1e-5
    )
    pd.testing.assert_frame_equal(
        hs.evaluate(given, "ioi", n=N), hs.evaluate(reference, "ioi", n=N), rtol=1e-5
    )


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_bridge_gives_the_folders_results(family, family_dir):
    folder = family_dir(family)
    bridge = _bridge(folder)
    reference = load_model(str(folder))
    _same_results(bridge, reference)
    loaded = load_model(bridge)
    assert loaded.bridge is bridge and loaded.identity.source == "memory"
    _same_results(loaded, reference)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_hugging_face_model_with_its_tokenizer_gives_the_folders_results(family, family_dir):
    folder = family_dir(family)
    hf_model, tokenizer = _hf(folder)
    ids = torch.tensor([tokenizer("When Mary and John went to the store").input_ids])
    with torch.no_grad():
        before = hf_model(ids).logits
    attention = hf_model.config._attn_implementation
    reference = load_model(str(folder))
    _same_results((hf_model, tokenizer), reference)
    _same_results(load_model(hf_model, tokenizer=tokenizer), reference)
    with torch.no_grad():  # wrapping it left the user's model as it was
        assert torch.equal(hf_model(ids).logits, before)
    assert not any(type(m).__module__.startswith("transformer_lens") for m in hf_model.modules())
    assert hf_model.config._attn_implementation == attention


def test_a_model_changed_in_place_is_read_again(family_dir, tmp_path):
    """A model fine-tuned after a first analysis: the next analysis reads its new weights."""
    hf_model, tokenizer = _hf(family_dir("llama"))
    first = hs.ov_scores((hf_model, tokenizer), "seq-digits", n=N)
    with torch.no_grad():
        for layer in hf_model.model.layers:
            layer.self_attn.v_proj.weight.mul_(-1.0)  # flips every head's copy into suppression
    hf_model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    changed = hs.ov_scores((hf_model, tokenizer), "seq-digits", n=N)
    assert not changed["score"].equals(first["score"])
    pd.testing.assert_frame_equal(
        changed, hs.ov_scores(load_model(str(tmp_path)), "seq-digits", n=N), rtol=1e-6
    )


# ---- refusals: one line each --------------------------------------------------------------------


def _refused(call, *fragments: str) -> None:
    with pytest.raises(ModelError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_wrong_objects_are_refused_naming_what_to_pass(family_dir):
    hf_model, tokenizer = _hf(family_dir("llama"))
    _refused(lambda: hs.ov_scores(3, "seq-digits"), "model=int", "TransformerBridge", "(hf_model, tokenizer)")
    _refused(lambda: hs.evaluate(hf_model, "ioi"), "needs its tokenizer", "tokenizer=tokenizer")
    _refused(
        lambda: hs.evaluate("organism", "ioi"), "model='organism' is not loaded", "hs.load_model('organism')"
    )
    _refused(lambda: hs.load_model(hf_model, tokenizer="gpt2"), "tokenizer=str")
    _refused(lambda: hs.load_model(object()), "model=object")
    _refused(lambda: hs.load_model("organism", tokenizer=tokenizer), "tokenizer= goes with")
    _refused(
        lambda: hs.load_model(hf_model, tokenizer=tokenizer, device="cpu"), "device= with a model in memory"
    )
    _refused(lambda: hs.load_model(hf_model, tokenizer=tokenizer, dtype="bfloat16"), "dtype= with a model")


def test_a_model_in_memory_gets_the_folders_load_checks(family_dir):
    """Checks of a folder's model apply: a tokenizer larger than the embedding, weights not loaded."""
    hf_model, _ = _hf(family_dir("llama"))
    _, larger = _hf(family_dir("gpt2"))  # 877 tokens for 546 embedding rows
    _refused(lambda: as_model((hf_model, larger)), "tokens but the embedding only")
    with torch.device("meta"):
        skeleton = T.AutoModelForCausalLM.from_config(hf_model.config)
    _refused(lambda: as_model((skeleton, larger)), "weights are not loaded", "meta device")


def test_a_bridge_without_a_tokenizer_is_refused(family_dir):
    bridge = _bridge(family_dir("gpt2"))
    bridge.tokenizer = None
    _refused(lambda: hs.load_model(bridge), "has no tokenizer")


def _takes_a_model(name: str) -> bool:
    function = getattr(api, name)
    return inspect.isfunction(function) and next(iter(inspect.signature(function).parameters)) == "model"


@pytest.mark.parametrize("name", [n for n in api.__all__ if _takes_a_model(n)])
def test_every_analysis_turns_its_model_argument_into_a_model(name):
    """Each function of headscope.api taking a model goes through as_model before any work."""
    _refused(lambda: getattr(api, name)(3, "seq-digits"), "model=int")


def test_weights_only_analyses_take_a_bridge(family_dir):
    """hs.atlas and hs.composition_scores of a bridge held in memory read the folder's weights."""
    folder = family_dir("llama")
    held, reference = _bridge(folder), load_model(str(folder))
    pd.testing.assert_frame_equal(hs.atlas(held), hs.atlas(reference), rtol=1e-6)
    pd.testing.assert_frame_equal(hs.composition_scores(held), hs.composition_scores(reference))
