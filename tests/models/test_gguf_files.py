"""GGUF files: a llama.cpp file loads as the same model as its safetensors twin; bad files fail in one line.

The files are written by tests/models/gguf_build.py from the tiny family models, as llama.cpp's
converter writes them (tensor names, metadata keys, Llama's permuted q/k rows, GPT-2's transposed
Conv1D weights, the tokenizer as a token list with merges). A quantised file is compared with a
safetensors twin holding the numbers the file holds (each weight's quantise -> dequantise round
trip, computed by the gguf package).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import headscope as hs
from headscope.models.gguf_files import dequantisable
from headscope.models.loading import ModelError, load_model
from tests.cli.runner import run_cli
from tests.models.families import BY_NAME, save_family
from tests.models.gguf_build import (
    GGUF_FAMILIES,
    Q,
    kquant_pair,
    quantized_copy,
    save_gguf_family,
    write_gguf,
)

TEXTS = ["When Mary and John went to the store, John gave a drink to", "1 2 3 4", " 12 13 14", "Monday"]
N = 20


@pytest.fixture(scope="session")
def gguf_twin(tmp_path_factory):
    """(safetensors twin folder, GGUF file) of a family, in a quantisation type."""

    @functools.cache
    def build(name: str, qtype: Q = Q.F32, permute: bool = True) -> tuple[Path, Path]:
        spec = GGUF_FAMILIES[name]
        out = tmp_path_factory.mktemp(f"gguf-{name}-{qtype.name}")
        folder = save_gguf_family(name, out / "original")
        twin = folder if qtype == Q.F32 else quantized_copy(folder, out / "twin", spec, qtype)
        return twin, write_gguf(folder, out / f"tiny-{name}.gguf", spec, qtype, permute)

    return build


def _logits(model: hs.Model, text: str) -> torch.Tensor:
    with torch.no_grad():
        return model.bridge(model.to_tokens(text)).float()  # [1, pos, vocab]


def _same_model(gguf_model: hs.Model, twin: hs.Model) -> None:
    """Same tokens, logits, weights as scores read them, OV ranks and task metrics."""
    for text in TEXTS:
        assert torch.equal(gguf_model.to_tokens(text), twin.to_tokens(text)), text
        torch.testing.assert_close(_logits(gguf_model, text), _logits(twin, text), rtol=1e-5, atol=1e-5)
    for field in ("W_V", "W_O", "ln1_w", "lnf_w", "W_U", "b_V"):
        torch.testing.assert_close(getattr(gguf_model.weights, field), getattr(twin.weights, field))
    ours = hs.ov_scores(gguf_model, "seq-digits", relations="copy,next", n=N)
    theirs = hs.ov_scores(twin, "seq-digits", relations="copy,next", n=N)
    pd.testing.assert_frame_equal(ours, theirs, check_exact=False, rtol=1e-6)
    pd.testing.assert_frame_equal(
        ours.attrs["per_token"].drop(columns="top_k", errors="ignore"),
        theirs.attrs["per_token"].drop(columns="top_k", errors="ignore"),
    )
    metrics = [hs.evaluate(m, "ioi", n=N).drop(columns="task").iloc[0] for m in (gguf_model, twin)]
    pd.testing.assert_series_equal(*metrics, check_exact=False, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(GGUF_FAMILIES))
def test_a_gguf_file_loads_as_its_safetensors_twin(name, gguf_twin):
    folder, path = gguf_twin(name)
    model = load_model(str(path))
    assert model.identity.source == "gguf" and model.identity.weights_sha256 is not None
    assert model.arch.family == load_model(str(folder)).arch.family
    _same_model(model, load_model(str(folder)))


QUANTISED = [("llama", Q.F16), ("llama", Q.BF16), ("llama", Q.Q8_0), ("llama", Q.Q4_0), ("gpt2", Q.Q8_0)]
QUANTISED += [("qwen2", Q.Q5_1)]


@pytest.mark.parametrize(("name", "qtype"), QUANTISED, ids=[f"{n}-{q.name}" for n, q in QUANTISED])
def test_a_quantised_file_loads_as_its_dequantised_twin(name, qtype, gguf_twin):
    twin, path = gguf_twin(name, qtype)
    original = load_model(str(gguf_twin(name)[0]))
    model = load_model(str(path))
    assert not torch.equal(model.weights.W_V, original.weights.W_V)  # the file really is quantised
    _same_model(model, load_model(str(twin)))


def test_k_quant_blocks_load_as_transformers_own_dequantiser_reads_them(tmp_path):
    """Q4_K_M's mix (Q4_K, Q6_K) from random blocks on a Llama 256 wide; the twin holds the values of
    transformers' torch dequantiser, the loader uses the gguf package's."""
    import gguf

    llama = BY_NAME["llama"]
    wide = dataclasses.replace(
        llama, config_kwargs=llama.config_kwargs | dict(hidden_size=256, intermediate_size=512)
    )
    twin, path = kquant_pair(save_family(wide, tmp_path / "wide"), tmp_path, GGUF_FAMILIES["llama"])
    kinds = {tensor.tensor_type.name for tensor in gguf.GGUFReader(path).tensors}
    assert {"Q4_K", "Q6_K"} <= kinds
    _same_model(load_model(str(path)), load_model(str(twin)))


def test_the_chosen_dtype_is_applied(gguf_twin):
    folder, path = gguf_twin("llama")
    model = load_model(str(path), dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    twin = load_model(str(folder), dtype="bfloat16")
    torch.testing.assert_close(_logits(model, TEXTS[0]), _logits(twin, TEXTS[0]))


def test_a_gguf_file_splits_with_accelerate_but_not_to_disk(gguf_twin):
    folder, path = gguf_twin("llama")
    split = load_model(str(path), device_map="auto")
    torch.testing.assert_close(_logits(split, TEXTS[0]), _logits(load_model(str(folder)), TEXTS[0]))
    with pytest.raises(ModelError) as caught:
        load_model(str(path), device_map="auto", max_memory="cpu=20KB")  # the rest would go to disk
    assert "\n" not in str(caught.value) and f"cannot load the GGUF file {path}" in str(caught.value)


def test_llama_rows_left_unpermuted_give_another_model(gguf_twin):
    """The comparison sees a layout mistake: without llama.cpp's q/k permutation the logits differ."""
    folder, path = gguf_twin("llama", permute=False)
    difference = (_logits(load_model(str(path)), TEXTS[0]) - _logits(load_model(str(folder)), TEXTS[0])).abs()
    assert float(difference.max()) > 1e-2


def test_the_stated_quantisation_types_dequantise():
    """The types the README lists as loading are the ones the gguf package dequantises."""
    stated = [
        "F32",
        "F16",
        "BF16",
        "Q4_0",
        "Q4_1",
        "Q5_0",
        "Q5_1",
        "Q8_0",
        "Q2_K",
        "Q3_K",
        "Q4_K",
        "Q5_K",
        "Q6_K",
    ]
    stated += [
        "IQ1_S",
        "IQ1_M",
        "IQ2_XXS",
        "IQ2_XS",
        "IQ2_S",
        "IQ3_XXS",
        "IQ3_S",
        "IQ4_NL",
        "IQ4_XS",
        "TQ1_0",
        "TQ2_0",
        "MXFP4",
    ]
    assert all(dequantisable(Q[name]) for name in stated)
    assert not any(dequantisable(Q[name]) for name in ("F64", "I32", "Q8_K"))


# ---- refusals: one line each --------------------------------------------------------------------


def _one_line(spec: str, *fragments: str) -> None:
    with pytest.raises(ModelError) as caught:
        load_model(spec)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def _tiny_file(path: Path, arch: str, tensor: np.ndarray) -> Path:
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_tensor("token_embd.weight", tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_missing_gguf_package_names_the_extra(gguf_twin, monkeypatch):
    monkeypatch.setitem(sys.modules, "gguf", None)  # `import gguf` raises ImportError
    _one_line(str(gguf_twin("llama")[1]), "pip install 'headscope[gguf]'")


def test_a_missing_file_is_refused(tmp_path):
    _one_line(str(tmp_path / "absent.gguf"), "does not exist", "absent.gguf")


def test_a_file_that_is_not_gguf_is_refused(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"not a gguf file" * 10)
    _one_line(str(path), "is not a readable GGUF file")


def test_an_architecture_transformers_cannot_read_is_named(tmp_path):
    path = _tiny_file(tmp_path / "bert.gguf", "bert", np.zeros((4, 32), np.float32))
    _one_line(str(path), "architecture 'bert'", "known: ")


def test_a_tensor_type_that_cannot_be_dequantised_is_named(tmp_path):
    path = _tiny_file(tmp_path / "f64.gguf", "llama", np.zeros((4, 32), np.float64))
    _one_line(str(path), "F64 tensors", "cannot be dequantised")


# ---- the command line ---------------------------------------------------------------------------


def test_the_command_line_takes_a_gguf_file(gguf_twin, tmp_path):
    folder, path = gguf_twin("gpt2")
    out = tmp_path / "eval.json"
    args = ("--model", str(path), "--task", "seq-digits", "--n", "12", "--seed", "3", "--out", str(out))
    result = run_cli("evaluate", *args)
    assert result.returncode == 0, result.stderr
    expected = hs.evaluate(load_model(str(folder)), "seq-digits", n=12, seed=3).iloc[0]
    data = json.loads(out.read_text())
    for key in ("accuracy", "logit_diff", "answer_prob"):
        assert data[key] == pytest.approx(expected[key], abs=1e-6)


def test_the_command_line_refuses_a_bad_gguf_file_in_one_line(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF but not really" * 4)
    result = run_cli("evaluate", "--model", str(path))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "is not a readable GGUF file" in lines[0], result.stderr


def test_a_folder_holding_a_gguf_file_names_the_file(gguf_twin, tmp_path):
    path = gguf_twin("llama")[1]
    (tmp_path / path.name).write_bytes(path.read_bytes())
    _one_line(str(tmp_path), "holds a GGUF file", f"give the file itself: {tmp_path / path.name}")
