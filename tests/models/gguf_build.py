"""Tiny GGUF files written from a saved Hugging Face folder, as llama.cpp's converter writes them.

`write_gguf(folder, path, qtype)` reads the folder's weights and tokenizer and writes one GGUF
file with the `gguf` package: llama.cpp's tensor names (gguf's own HF -> GGUF name map), its
metadata keys (the GGUFWriter's `add_*` methods), and its layout changes — the rows of Llama's
q/k projections permuted for llama.cpp's rotary convention (`convert_hf_to_gguf.py`,
`LlamaModel.permute`), GPT-2's Conv1D weights transposed to [out, in]. The tokenizer goes in as
llama.cpp stores it: the token list, the merges, the token types (CONTROL for specials), and
the special token ids.

`quantized_copy(folder, out, qtype)` saves the folder's model with every tensor the file would
quantise replaced by its quantise -> dequantise round trip, so a quantised file has a safetensors
twin holding exactly the numbers the file holds.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np
import torch
import transformers as T

from tests.models.families import BY_NAME, save_family
from tests.tokenizer_kinds import ASCII_TEXT, _adds_bos, _texts, _train

Q = gguf.GGMLQuantizationType


@dataclass(frozen=True)
class GGUFFamily:
    """How llama.cpp writes one architecture: its name, tokenizer model and pre-tokenizer."""

    arch: str  # gguf's architecture name (general.architecture)
    tokenizer_model: str  # tokenizer.ggml.model: "llama" (sentencepiece) or "gpt2" (byte-level BPE)
    tokenizer_pre: str  # tokenizer.ggml.pre: the pre-tokenizer's split
    family: str  # tests.models.families name of the HF twin


GGUF_FAMILIES: dict[str, GGUFFamily] = {
    "llama": GGUFFamily("llama", "llama", "default", "llama"),
    "gpt2": GGUFFamily("gpt2", "gpt2", "gpt-2", "gpt2"),
    "qwen2": GGUFFamily("qwen2", "gpt2", "qwen2", "qwen2"),
    "qwen3": GGUFFamily("qwen3", "gpt2", "qwen2", "qwen3"),
    "gemma2": GGUFFamily("gemma2", "llama", "default", "gemma2"),
    "gemma3": GGUFFamily("gemma3", "llama", "default", "gemma3"),
    "bloom": GGUFFamily("bloom", "gpt2", "bloom", "bloom"),
}
GEMMA = ("gemma2", "gemma3")  # norms written as 1 + w (convert_hf_to_gguf.py, `Gemma2Model`, `Gemma3Model`)


def gemma_style(words: list[str]) -> T.PreTrainedTokenizerFast:
    """Gemma's sentencepiece convention: `sentencepiece_style` with no `▁` put before a text's first
    word (every word also trained bare) and Gemma's special tokens (<pad> <eos> <bos> <unk> <mask>,
    ids 0-4), as transformers' Gemma tokenizer reads a GGUF file (it adds those tokens where the
    vocabulary lacks them)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never", split=True),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    core.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never", split=True)
    _train(core, _texts(words, None), ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"], ["▁", *ASCII_TEXT])
    _adds_bos(core, "<bos>")
    special = dict(
        bos_token="<bos>", eos_token="<eos>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>"
    )
    return T.PreTrainedTokenizerFast(tokenizer_object=core, add_bos_token=True, **special)


def save_gguf_family(name: str, directory: Path) -> Path:
    """The tiny model of GGUF family `name` saved as a Hugging Face folder, with a tokenizer
    transformers reads back from a GGUF file as it was (Gemma's special tokens for Gemma), and
    Qwen3's head width 128 (a Qwen3 GGUF file holds no head width; transformers takes the default)."""
    from headscope.tasks.vocabulary import task_vocabulary

    family = BY_NAME[GGUF_FAMILIES[name].family]
    if name == "qwen3":
        family = dataclasses.replace(family, config_kwargs=family.config_kwargs | dict(head_dim=128))
    tokenizer = gemma_style(task_vocabulary()) if name in GEMMA else None
    return save_family(family, directory, tokenizer=tokenizer)


def _permute(weights: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    """llama.cpp's `LlamaModel.permute`: each head's rows from (half, pair) to (pair, half) order."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    shape = weights.shape
    split = weights.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:])  # [head, 2, d_head/2, ...]
    return split.swapaxes(1, 2).reshape(shape)


def _file_tensor(arch: str, name: str, value: np.ndarray, config, permute: bool = True) -> np.ndarray:
    """A Hugging Face tensor as llama.cpp stores it (`permute=False`: Llama's q/k rows left as they are,
    the mistake a converter could make)."""
    if arch == "llama" and permute and name.endswith("q_proj.weight"):
        return _permute(value, config.num_attention_heads, config.num_attention_heads)
    if arch == "llama" and permute and name.endswith("k_proj.weight"):
        return _permute(value, config.num_attention_heads, config.num_key_value_heads)
    conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    if arch == "gpt2" and name.endswith(conv1d):
        return value.T.copy()  # Conv1D [in, out] -> [out, in]
    if arch in GEMMA and name.endswith("norm.weight"):
        return value + 1
    if arch == "bloom" and name.endswith("query_key_value.weight"):
        return _bloom_qkv(value, config.n_head)
    if arch == "bloom" and name.endswith("query_key_value.bias"):
        return _bloom_qkv(value[:, None], config.n_head)[:, 0]
    return value


def _bloom_qkv(value: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's `BloomModel.modify_tensors`: BLOOM's rows (per head: its q, k, v) as all the
    heads' q, then k, then v."""
    split = value.reshape(n_head, 3, value.shape[0] // n_head // 3, -1)  # [head, qkv, d_head, in]
    return split.swapaxes(0, 1).reshape(value.shape)


def _encoded(value: np.ndarray, qtype: Q) -> tuple[np.ndarray, Q]:
    """The array the writer stores and its type: 2-D weights in `qtype`, the rest F32."""
    kind = qtype if value.ndim == 2 else Q.F32
    return gguf.quants.quantize(value.astype(np.float32), kind), kind


def round_trip(value: np.ndarray, qtype: Q) -> np.ndarray:
    """`value` as a file of type `qtype` holds it (quantised, then dequantised by gguf)."""
    data, kind = _encoded(value, qtype)
    return gguf.quants.dequantize(data, kind).reshape(value.shape)


def _merges(tokenizer) -> list[str]:
    found = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    return [m if isinstance(m, str) else " ".join(m) for m in found]


def _write_tokenizer(writer: gguf.GGUFWriter, spec: GGUFFamily, tokenizer) -> None:
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    tokens = [token for token, _ in vocab]
    assert [i for _, i in vocab] == list(range(len(tokens)))
    special = set(tokenizer.all_special_ids)
    writer.add_tokenizer_model(spec.tokenizer_model)
    writer.add_tokenizer_pre(spec.tokenizer_pre)
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(len(tokens))]
    )
    writer.add_token_scores([-float(i) for i in range(len(tokens))])
    writer.add_token_merges(_merges(tokenizer))
    ids = {
        "bos": tokenizer.bos_token_id,
        "eos": tokenizer.eos_token_id,
        "unk": tokenizer.unk_token_id,
        "pad": tokenizer.pad_token_id,
    }
    for kind, token_id in ids.items():
        if token_id is not None:
            getattr(writer, f"add_{kind}_token_id")(token_id)
    adds_bos = tokenizer.bos_token_id is not None and tokenizer("a").input_ids[:1] == [tokenizer.bos_token_id]
    writer.add_add_bos_token(adds_bos)  # what the tokenizer does (its post-processor), not its flag


def _write_config(writer: gguf.GGUFWriter, arch: str, config) -> None:
    if arch == "bloom":  # convert_hf_to_gguf.py, `BloomModel.set_gguf_parameters`
        writer.add_context_length(config.hidden_size)
        writer.add_embedding_length(config.hidden_size)
        writer.add_feed_forward_length(4 * config.hidden_size)
        writer.add_block_count(config.n_layer)
        writer.add_head_count(config.n_head)
        writer.add_head_count_kv(config.n_head)
        writer.add_layer_norm_eps(config.layer_norm_epsilon)
        return
    if arch == "gpt2":
        writer.add_context_length(config.n_positions)
        writer.add_embedding_length(config.n_embd)
        writer.add_block_count(config.n_layer)
        writer.add_feed_forward_length(config.n_inner or 4 * config.n_embd)
        writer.add_head_count(config.n_head)
        writer.add_layer_norm_eps(config.layer_norm_epsilon)
        return
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    rope = config.rope_parameters
    writer.add_rope_freq_base(float(rope.get("full_attention", rope)["rope_theta"]))
    if arch == "llama":
        writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    if arch in ("qwen3", *GEMMA):
        writer.add_key_length(config.head_dim)
        writer.add_value_length(config.head_dim)
    if arch in GEMMA:
        writer.add_sliding_window(config.sliding_window)
    if arch == "gemma2":
        writer.add_attn_logit_softcapping(config.attn_logit_softcapping)
        writer.add_final_logit_softcapping(config.final_logit_softcapping)
    writer.add_vocab_size(config.vocab_size)


def write_gguf(
    folder: Path,
    path: Path,
    spec: GGUFFamily,
    qtype: Q = Q.F32,
    permute: bool = True,
    raw: dict | None = None,
) -> Path:
    """The Hugging Face model in `folder` as a GGUF file at `path` (2-D weights in `qtype`); `raw`:
    file tensor name -> (bytes, type) written as they are instead."""
    model = T.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = T.AutoTokenizer.from_pretrained(folder)
    config = model.config
    names = gguf.get_tensor_name_map(
        next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == spec.arch), config.num_hidden_layers
    )
    writer = gguf.GGUFWriter(str(path), spec.arch)
    writer.add_name(f"headscope tiny {spec.arch}")
    _write_config(writer, spec.arch, config)
    _write_tokenizer(writer, spec, tokenizer)
    state = model.state_dict()
    tied = config.tie_word_embeddings
    for name, tensor in state.items():
        base, suffix = name.rsplit(".", 1)
        target = names.get_name(base) or names.get_name(base.split(".", 1)[-1])  # or the base model's
        if target is None or (tied and target == "output"):
            continue  # buffers (GPT-2's causal mask), and the tied unembedding llama.cpp leaves out
        value = _file_tensor(spec.arch, name, tensor.numpy(), config, permute)
        data, kind = (raw or {}).get(f"{target}.{suffix}") or _encoded(value, qtype)
        writer.add_tensor(f"{target}.{suffix}", data, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def quantized_copy(folder: Path, out: Path, spec: GGUFFamily, qtype: Q) -> Path:
    """The folder's model, each 2-D weight replaced by its `qtype` round trip, saved to `out`.

    Quantisation blocks run along the file's rows: GPT-2's Conv1D weights are quantised
    transposed, as the file holds them (Llama's q/k row permutation moves whole rows, so it
    commutes with the round trip).
    """
    model = T.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    conv1d = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() != 2:
                continue
            value = param.detach().numpy()
            if spec.arch == "gpt2" and name.endswith(conv1d):
                param.copy_(torch.from_numpy(round_trip(value.T.copy(), qtype).T.copy()))
            else:
                param.copy_(torch.from_numpy(round_trip(value, qtype)))
    model.save_pretrained(out)
    T.AutoTokenizer.from_pretrained(folder).save_pretrained(out)
    return out


# ---- K-quant files: random valid blocks (the gguf package dequantises K-quants but cannot make them) --

K_BLOCK = 256  # elements per K-quant block: a row must be a multiple of it
_SCALE_BYTES = {Q.Q4_K: (0, 2), Q.Q6_K: (208,)}  # where each block's f16 super-scales (d, dmin) sit
_SCALE = {Q.Q4_K: 0.2 / (63 * 15), Q.Q6_K: 0.2 / (127 * 32)}  # values of about +-0.2


def _unpermute(weights: np.ndarray, n_head: int, n_head_kv: int) -> np.ndarray:
    """The inverse of `_permute`."""
    if n_head != n_head_kv:
        n_head = n_head_kv
    shape = weights.shape
    split = weights.reshape(n_head, shape[0] // n_head // 2, 2, *shape[1:])  # [head, d_head/2, 2, ...]
    return split.swapaxes(1, 2).reshape(shape)


def _random_blocks(shape: tuple[int, int], qtype: Q, generator: np.random.Generator) -> np.ndarray:
    """Random bytes of a [rows, cols] tensor in `qtype`, with small positive f16 super-scales."""
    _, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    blocks = generator.integers(0, 256, (shape[0] * shape[1] // K_BLOCK, block_bytes), dtype=np.uint8)
    for start in _SCALE_BYTES[qtype]:
        scale = generator.uniform(0.5, 1.0, blocks.shape[0]) * _SCALE[qtype]
        blocks[:, start : start + 2] = scale.astype(np.float16).view(np.uint8).reshape(-1, 2)
    return blocks.reshape(shape[0], -1)  # [rows, bytes per row]


def _dequantised(raw: np.ndarray, qtype: Q, shape: tuple[int, int]) -> np.ndarray:
    """transformers' own torch dequantiser (not the gguf package the loader calls)."""
    from transformers.integrations.gguf.dequant import dequantize

    return dequantize(torch.from_numpy(raw.reshape(-1)), int(qtype)).reshape(shape).numpy()


def _hf_layout(arch: str, name: str, value: np.ndarray, config) -> np.ndarray:
    """The inverse of `_file_tensor` on a 2-D weight."""
    if arch == "llama" and name.endswith("q_proj.weight"):
        return _unpermute(value, config.num_attention_heads, config.num_attention_heads)
    if arch == "llama" and name.endswith("k_proj.weight"):
        return _unpermute(value, config.num_attention_heads, config.num_key_value_heads)
    return _file_tensor(arch, name, value, config)  # the transposes are their own inverse


def kquant_pair(folder: Path, out: Path, spec: GGUFFamily, seed: int = 0) -> tuple[Path, Path]:
    """(safetensors twin, GGUF file) in Q4_K_M's mix: ffn_down and the unembedding in Q6_K, the other
    weight matrices in Q4_K, each from random blocks; the twin holds their dequantised values."""
    model = T.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    config, generator, raw = model.config, np.random.default_rng(seed), {}
    names = gguf.get_tensor_name_map(
        next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == spec.arch), config.num_hidden_layers
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            target = names.get_name(name.rsplit(".", 1)[0])
            shape = _file_tensor(spec.arch, name, param.detach().numpy(), config).shape
            if param.dim() != 2 or shape[1] % K_BLOCK or target is None:
                continue
            qtype = Q.Q6_K if target in ("output",) or target.endswith("ffn_down") else Q.Q4_K
            raw[f"{target}.weight"] = (_random_blocks(shape, qtype, generator), qtype)
            value = _dequantised(raw[f"{target}.weight"][0], qtype, shape)
            param.copy_(torch.from_numpy(_hf_layout(spec.arch, name, value, config)))
    model.save_pretrained(out / "twin")
    T.AutoTokenizer.from_pretrained(folder).save_pretrained(out / "twin")
    return out / "twin", write_gguf(out / "twin", out / "kquant.gguf", spec, raw=raw)


def transformers_twin(path: Path, out: Path) -> Path:
    """The GGUF file as transformers loads it (headscope's in-memory path, `read_gguf`: every tensor
    dequantised to float32), saved as a safetensors folder with the tokenizer read from the file."""
    import copy

    from headscope.models.gguf_files import read_gguf

    model, tokenizer = read_gguf(path, torch.float32, {"device": "cpu"})
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):  # a GGUF-loaded model refuses save_pretrained
        del config.quantization_config
    plain = T.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), strict=True)
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
