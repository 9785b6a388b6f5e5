"""A GGUF file streamed tensor by tensor against its dequantised safetensors twin.

The files are written by tests/models/gguf_build.py from the tiny family models, as llama.cpp's
converter writes them (tensor names, metadata, Llama's permuted q/k rows, GPT-2's transposed
Conv1D weights, Gemma's norms stored as 1 + w), in F32, F16, BF16 and quantised types. Two
references: transformers' own GGUF loader (`read_gguf`, every tensor dequantised at once) saved
as a safetensors twin and streamed, and, independent of transformers' mapping, the model the file
was written from (F32) or its quantise -> dequantise round trip (`quantized_copy`). The Weights
and block 0's rows agree within float32 rounding, the atlas's ranks tie-aware.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from pathlib import Path

import gguf
import numpy as np
import pandas as pd
import pytest
import torch

from headscope.models import gguf_files
from headscope.models.checks import ModelError
from headscope.models.loading import _sha256
from headscope.models.streamed import StreamedModel, stream_model
from headscope.models.weights import Weights
from tests.cli.runner import run_cli
from tests.models import families as fam
from tests.models.gguf_build import (
    GGUF_FAMILIES,
    Q,
    quantized_copy,
    save_gguf_family,
    transformers_twin,
    write_gguf,
)
from tests.models.test_streamed import assert_atlas_matches
from tests.numerics import assert_float_close

BF16_HALF_ULP = torch.finfo(torch.bfloat16).eps / 2
SCORE_TOLERANCE = 1e-6
FILES = [(name, Q.F32) for name in sorted(GGUF_FAMILIES)]
FILES += [("llama", Q.Q8_0), ("gpt2", Q.Q8_0), ("qwen2", Q.F16), ("gemma2", Q.BF16), ("gemma3", Q.Q4_0)]
FILES += [("qwen3", Q.Q5_1), ("bloom", Q.Q8_0)]
IDS = [f"{name}-{qtype.name}" for name, qtype in FILES]


@dataclasses.dataclass(frozen=True)
class Built:
    original: Path  # the Hugging Face folder the file was written from
    path: Path  # the GGUF file
    twin: Path  # transformers' loading of the file, saved as safetensors
    rounded: Path  # the original with each 2-D weight quantised and dequantised (the original for F32)


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    @functools.cache
    def build(name: str, qtype: Q = Q.F32) -> Built:
        spec, out = GGUF_FAMILIES[name], tmp_path_factory.mktemp(f"stream-gguf-{name}-{qtype.name}")
        original = save_gguf_family(name, out / "original")
        path = write_gguf(original, out / f"tiny-{name}.gguf", spec, qtype)
        rounded = original if qtype == Q.F32 else quantized_copy(original, out / "rounded", spec, qtype)
        return Built(original, path, transformers_twin(path, out / "twin"), rounded)

    return build


@functools.cache
def streamed(source: Path, dtype: str = "float32") -> StreamedModel:
    return stream_model(str(source), dtype)


def _tensors(weights: Weights) -> dict[str, torch.Tensor]:
    return {
        f.name: getattr(weights, f.name)
        for f in dataclasses.fields(weights)
        if isinstance(getattr(weights, f.name), torch.Tensor)
    }


def _same_weights(got: Weights, want: Weights, what: str, same_config: bool = True) -> None:
    """The tensors within float32 rounding; with `same_config` (both read from one config, the
    file's) the architecture and eps too (the file holds eps in float32, not the original's)."""
    if same_config:
        assert got.arch == want.arch and (got.eps, got.normalization) == (want.eps, want.normalization)
    theirs = _tensors(want)
    assert set(_tensors(got)) == set(theirs)
    for field, tensor in _tensors(got).items():
        assert tensor.dtype == theirs[field].dtype, field
        assert_float_close(tensor.float(), theirs[field].float(), n_terms=1, what=f"{what} {field}")


@pytest.mark.parametrize(("name", "qtype"), FILES, ids=IDS)
def test_a_gguf_file_streams_to_its_dequantised_twins_weights(built, name, qtype):
    b = built(name, qtype)
    model = streamed(b.path)
    _same_weights(model.weights, streamed(b.twin).weights, f"{name} {qtype.name} against transformers")
    original = streamed(b.rounded).weights
    _same_weights(model.weights, original, f"{name} {qtype.name} against the original", same_config=False)
    tokens = torch.randperm(model.identity.d_vocab, generator=torch.Generator().manual_seed(0))[:50]
    for rows in ("token_vectors", "block0_vectors"):
        want = getattr(streamed(b.twin), rows)(tokens)
        n_terms = fam.INTERMEDIATE * 2 + fam.HIDDEN  # the widest sum on block 0's path
        assert_float_close(getattr(model, rows)(tokens), want, n_terms=n_terms, what=f"{name} {rows}")


@pytest.mark.parametrize(("name", "qtype"), FILES, ids=IDS)
def test_every_tensor_reads_as_transformers_loads_it(built, name, qtype):
    """Every parameter, q/k projections and MLPs included (Llama's rows un-permuted with the
    config's head counts), equals the one transformers loaded into the twin."""
    from safetensors.torch import load_file

    b = built(name, qtype)
    twin = load_file(str(b.twin / "model.safetensors"))
    checkpoint = gguf_files.GGUFCheckpoint(b.path, gguf_files.hf_config(b.path))
    read = [key for key in twin if checkpoint.has(key)]
    assert set(twin) - set(read) <= {"lm_head.weight"}  # tied: the file holds the embedding only
    for key in read:
        assert_float_close(checkpoint.read(key), twin[key], n_terms=1, what=f"{name} {key}")


def test_the_tensor_table_is_gguf_readers_without_the_vocabulary(built, monkeypatch):
    """The header read by transformers' reader gives the bytes `gguf.GGUFReader` gives (its
    fallback, where transformers has no such reader)."""
    path = built("gemma3", Q.Q4_0).path
    fast = gguf_files.stored_tensors(path)
    monkeypatch.setitem(sys.modules, "transformers.integrations.gguf.reader", None)
    slow = gguf_files.stored_tensors(path)
    assert fast.keys() == slow.keys()
    for key, tensor in fast.items():
        assert (tensor.shape, tensor.qtype) == (slow[key].shape, slow[key].qtype), key
        assert np.array_equal(tensor.data, slow[key].data), key


@pytest.mark.parametrize(("name", "qtype"), [("llama", Q.Q8_0), ("gemma2", Q.F32)], ids=["llama", "gemma2"])
def test_bfloat16_weights_are_the_dequantised_ones_rounded_once(built, name, qtype):
    b = built(name, qtype)
    want = _tensors(streamed(b.twin).weights)
    for field, tensor in _tensors(streamed(b.path, "bfloat16").weights).items():
        assert tensor.dtype == torch.bfloat16, field
        torch.testing.assert_close(tensor.float(), want[field], rtol=BF16_HALF_ULP, atol=0.0)


@pytest.mark.parametrize(("name", "qtype"), [("llama", Q.Q8_0), ("gpt2", Q.Q8_0), ("gemma2", Q.F32)])
def test_the_streamed_gguf_atlas_ranks_equal_the_twins(built, name, qtype):
    b = built(name, qtype)
    assert len(assert_atlas_matches(streamed(b.twin), streamed(b.path), name)) > 0


def test_the_unembedding_is_dequantised_a_block_of_rows_at_a_time(built, monkeypatch):
    """With blocks of 3 rows the streamed weights are the same, and no call dequantises more of the
    unembedding than a block (of the embedding, only the rows block 0 is checked on); a layer's
    tensors go whole."""
    b = built("llama", Q.Q8_0)
    seen: list[tuple[int, int]] = []
    dequantize = gguf.quants.dequantize

    def recording(data, qtype):
        seen.append(tuple(data.shape))
        return dequantize(data, qtype)

    monkeypatch.setattr(gguf_files, "CHUNK_BYTES", 3 * 4 * fam.HIDDEN)
    monkeypatch.setattr(gguf.quants, "dequantize", recording)
    model = stream_model(str(b.path))
    vocab = model.identity.d_vocab
    assert max(shape[0] for shape in seen if len(shape) == 2) < vocab  # nothing vocabulary-sized whole
    assert sum(1 for shape in seen if shape[0] == 3) >= vocab // 3  # output.weight (the embedding: rows)
    _same_weights(model.weights, streamed(b.path).weights, "read in blocks of 3 rows")


def test_the_identity_names_the_file(built):
    b = built("llama")
    identity = streamed(b.path).identity
    assert identity.source == "streamed" and identity.name == str(b.path)
    assert identity.weights_sha256 == _sha256(b.path)
    assert dataclasses.replace(identity, name="", weights_sha256=None) == dataclasses.replace(
        streamed(b.twin).identity, name="", weights_sha256=None
    )


def test_an_architecture_streaming_does_not_read_is_refused_in_one_line(tmp_path):
    """phi3: transformers reads it, headscope does not stream it."""
    path = tmp_path / "phi3.gguf"
    writer = gguf.GGUFWriter(str(path), "phi3")
    writer.add_tensor("token_embd.weight", np.zeros((4, 32), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ModelError) as caught:
        stream_model(str(path))
    message = str(caught.value)
    assert "\n" not in message and "architecture 'phi3'" in message and "drop --stream" in message


def test_a_file_that_is_not_gguf_is_refused_as_load_model_refuses_it(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"not a gguf file" * 10)
    with pytest.raises(ModelError, match="is not a readable GGUF file"):
        stream_model(str(path))


def test_the_command_line_streams_a_gguf_file(built, tmp_path):
    b = built("gpt2", Q.Q8_0)
    tables = {}
    for name, model in (("gguf", b.path), ("twin", b.twin)):
        out = tmp_path / name
        args = ("--model", str(model), "--relations", "algorithmic", "--stream", "--out", str(out))
        result = run_cli("atlas", *args)
        assert result.returncode == 0, result.stderr
        tables[name] = pd.read_csv(out / "atlas.csv")
    exact = [c for c in tables["twin"].columns if c not in ("score", "within")]
    pd.testing.assert_frame_equal(tables["gguf"][exact], tables["twin"][exact])
    for column in ("score", "within"):
        assert (tables["gguf"][column] - tables["twin"][column]).abs().max() <= SCORE_TOLERANCE
