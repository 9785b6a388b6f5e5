"""The memory model of loading: the config's count against the bridge's own tensors, the formula
against hand arithmetic, and the refusal's one line (the memory available stood in for)."""

from __future__ import annotations

import json

import pytest
import torch
import transformers as T

from headscope.models import memory
from headscope.models.checks import ModelError
from tests.models.families import headscope_model

FAMILIES = ("gpt2", "llama", "gemma2", "neox", "falcon", "bloom", "opt")
CPU = torch.device("cpu")
# Llama-3.1-8B's shape (config.json only: nothing is loaded), its files in bfloat16
LLAMA_8B = dict(
    architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=4096, intermediate_size=14336,
    num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
    max_position_embeddings=8192, rms_norm_eps=1e-5, tie_word_embeddings=False, dtype="bfloat16",
)  # fmt: skip


@pytest.fixture(scope="module")
def llama_8b(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama-8b")
    (folder / "config.json").write_text(json.dumps(LLAMA_8B))
    return folder


def _bridge_bytes(model) -> int:
    """Bytes of every tensor the loaded bridge holds as a parameter, each once."""
    held = {(p.data_ptr(), p.numel()): p.numel() * p.element_size() for p in model.bridge.parameters()}
    return sum(held.values())


@pytest.mark.parametrize("family", FAMILIES)
def test_the_config_predicts_the_tensors_the_bridge_holds(family, family_dir):
    """The config's count on the meta device, with the fused q|k|v copied once (GPT-2, GPT-NeoX,
    Falcon, BLOOM), is exactly what the loaded bridge holds."""
    folder = family_dir(family)
    shape = memory.config_shape(folder)
    assert memory.model_bytes(shape, "float32") == _bridge_bytes(headscope_model(folder))
    assert (shape.fused_qkv > 0) == (family in ("gpt2", "neox", "falcon", "bloom"))


@pytest.mark.parametrize("family", ("gpt2", "llama", "gemma2"))
def test_the_shape_is_the_config_s(family, family_dir):
    folder = family_dir(family)
    config = T.AutoConfig.from_pretrained(folder)
    built = T.AutoModelForCausalLM.from_config(config)  # real tensors: an independent count
    shape = memory.config_shape(folder)
    assert shape.params == sum(p.numel() for p in built.parameters())
    assert (shape.n_layers, shape.n_heads, shape.d_vocab) == (2, 4, config.vocab_size)
    assert shape.d_head == (8 if family == "gemma2" else 32 // 4)
    assert shape.file_dtype == "float32"
    assert memory.MemoryShape.of(headscope_model(folder)).params * 4 == memory.model_bytes(shape, "float32")


def test_the_load_peak_is_the_documented_sum():
    """By hand: 1B parameters, 10 layers x 8 heads of 64 on d_model 512, vocabulary 1000."""
    shape = memory.MemoryShape(10**9, 0, 10, 8, 512, 64, 1000, "bfloat16")
    heads = 4 * 2 * 10 * 8 * 512 * 64  # W_V and W_O per query head, float32
    in_bf16 = memory.BASE_BYTES + memory.LOAD_FACTOR * 2e9 + heads + 4 * 512 * 1000
    in_fp32 = memory.BASE_BYTES + memory.LOAD_FACTOR * 4e9 + heads + memory.CONVERT_SHARE * 2e9
    assert memory.load_peak(shape, "bfloat16") == pytest.approx(in_bf16, abs=1)
    assert memory.load_peak(shape, "float32") == pytest.approx(in_fp32, abs=1)


def test_the_8b_shape_needs_what_its_parameters_say(llama_8b):
    shape = memory.config_shape(llama_8b)
    assert shape.params == 8_030_261_248  # Llama-3.1-8B's published count
    assert (shape.n_heads, shape.d_head, shape.file_dtype) == (32, 128, "bfloat16")
    assert 45e9 < memory.load_peak(shape, "float32") < 55e9  # 32 GB of float32 weights and more


def test_a_model_that_fits_is_loaded(llama_8b):
    need = memory.load_peak(memory.config_shape(llama_8b), "float32")
    memory.check_fits(str(llama_8b), "float32", False, CPU, free=need)  # no error
    memory.check_fits(str(llama_8b), "float32", False, CPU, free=int(memory.FIT_SHARE * need) + 1)


@pytest.mark.parametrize(
    ("free_gb", "dtype", "streamable", "fix"),
    [
        (30, "float32", False, "add --dtype bfloat16 (about 24."),
        (20, "float32", False, "add --device-map auto --max-memory cpu="),
        (20, "bfloat16", False, "add --device-map auto --max-memory cpu="),
        (20, "float32", True, "add --stream"),
        (2, "float32", False, "it cannot run here"),
    ],
)
def test_a_model_that_cannot_fit_is_one_line_naming_the_fix(llama_8b, free_gb, dtype, streamable, fix):
    with pytest.raises(ModelError) as refused:
        memory.check_fits(str(llama_8b), dtype, False, CPU, streamable, free=int(free_gb * 1e9))
    said = str(refused.value)
    assert "\n" not in said and f"loading {llama_8b} in {dtype} needs about " in said
    assert f"{free_gb:.1f} GB is available: {fix}" in said


def test_the_offload_cap_leaves_room_for_the_rest(llama_8b):
    shape = memory.config_shape(llama_8b)
    said = memory.fix(shape, int(20e9), "float32", False)
    cap = int(said.split("cpu=")[1].split("GiB")[0])
    rest = memory.BASE_BYTES + memory.weights_bytes(shape, "float32")
    assert cap >= 1 and cap * memory.GIB + rest < 20e9


def test_a_split_model_a_gpu_and_a_gguf_file_are_not_checked(llama_8b, tmp_path):
    memory.check_fits(str(llama_8b), "float32", True, CPU, free=1)
    memory.check_fits(str(llama_8b), "float32", False, torch.device("cuda"), free=1)
    assert memory.model_folder(str(tmp_path / "model.gguf")) is None  # not read: its peak is not this


def test_a_config_the_loader_refuses_is_left_to_the_loader(tmp_path):
    (tmp_path / "config.json").write_text("{ not json")
    memory.check_fits(str(tmp_path), "float32", False, CPU, free=1)  # the loader says what is wrong
