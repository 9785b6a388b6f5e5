"""Tiny random models of every architecture family headscope supports, and Hugging Face reference code.

Each family is built from its own transformers Config class (hidden 32, 2 layers, 4 heads), made
non-trivial (weights of std 0.2, every norm weight and bias perturbed, random biases wherever the
architecture has them, so gain conventions and biases matter), saved with `save_pretrained`
(safetensors) next to a tokenizer of the family's kind.

The reference side reads Hugging Face's modules only — never the TransformerLens bridge, never
headscope's weights. What it needs per family is where HF keeps four things: the decoder layers,
each layer's attention output projection, the learned position embedding (if any), and the final
norm; plus the Gemma 2/3 norm on the attention output. Everything else (norm gains, embedding
scales, repeat_kv, which norm a parallel block's MLP reads) comes from running HF's own forward.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path

import torch
import transformers as T
from jaxtyping import Float, Int
from torch import Tensor, nn

from headscope.models.loading import Model, load_model
from headscope.tasks.vocabulary import task_vocabulary
from tests.tokenizer_kinds import TOKENIZER_KINDS

HIDDEN, LAYERS, HEADS, KV_HEADS, INTERMEDIATE, POSITIONS = 32, 2, 4, 2, 64, 64
WEIGHT_STD = 0.2  # larger than HF's 0.02: attention far from uniform, logits well apart
NORM_NOISE = 0.3
BIAS_NOISE = 0.2

_DECODER = dict(
    hidden_size=HIDDEN,
    num_hidden_layers=LAYERS,
    num_attention_heads=HEADS,
    intermediate_size=INTERMEDIATE,
    max_position_embeddings=POSITIONS,
)
_GQA = _DECODER | dict(num_key_value_heads=KV_HEADS)
_GPT2_NAMES = dict(n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=POSITIONS)


@dataclass(frozen=True)
class Family:
    """One architecture family: its config, tokenizer kind, and where HF keeps what the reference reads."""

    name: str
    label: str  # the supported-architectures table's row name
    config_class: type
    config_kwargs: dict
    tokenizer_kind: str
    layers: str  # attribute path from the CausalLM to the decoder layers
    out_proj: str  # attribute path from a layer to the attention output projection
    final_norm: str  # attribute path from the CausalLM to the final norm
    position: str | None = None  # learned position embedding module (zeroed for `token`)
    post_attention_norm: str | None = None  # a norm on the attention output (Gemma 2/3)

    def hf_layers(self, model: nn.Module) -> list[nn.Module]:
        return list(attrgetter(self.layers)(model))

    def hf_out_proj(self, layer: nn.Module) -> nn.Module:
        return attrgetter(self.out_proj)(layer)

    def hf_final_norm(self, model: nn.Module) -> nn.Module:
        return attrgetter(self.final_norm)(model)

    def hf_post_attention_norm(self, layer: nn.Module) -> nn.Module | None:
        return None if self.post_attention_norm is None else attrgetter(self.post_attention_norm)(layer)

    def hf_position(self, model: nn.Module) -> nn.Module | None:
        return None if self.position is None else attrgetter(self.position)(model)


_LLAMA_LIKE = dict(layers="model.layers", out_proj="self_attn.o_proj", final_norm="model.norm")
_GPT_LIKE = dict(layers="transformer.h", final_norm="transformer.ln_f")
_OPT = dict(
    hidden_size=HIDDEN,
    num_hidden_layers=LAYERS,
    num_attention_heads=HEADS,
    ffn_dim=INTERMEDIATE,
    max_position_embeddings=POSITIONS,
    word_embed_proj_dim=HIDDEN,
)
_GPT_NEO = dict(
    hidden_size=HIDDEN,
    num_layers=LAYERS,
    num_heads=HEADS,
    max_position_embeddings=POSITIONS,
    attention_types=[[["global", "local"], 1]],
    window_size=8,
)
_FALCON = dict(
    hidden_size=HIDDEN,
    num_hidden_layers=LAYERS,
    num_attention_heads=HEADS,
    multi_query=True,
    new_decoder_architecture=False,
    parallel_attn=True,
    bias=True,
)
_BLOOM = dict(hidden_size=HIDDEN, n_layer=LAYERS, n_head=HEADS)
_HEAD_DIM = dict(head_dim=8)
_SP, _BPE = "sentencepiece_style", "gpt2_bpe"
_SA_DENSE = "self_attention.dense"
_GEMMA_POST = dict(post_attention_norm="post_attention_layernorm", **_LLAMA_LIKE)

FAMILIES: tuple[Family, ...] = (
    Family(
        "gpt2", "GPT-2", T.GPT2Config, _GPT2_NAMES, _BPE, out_proj="attn.c_proj", position="transformer.wpe",
        **_GPT_LIKE,
    ),
    Family(
        "opt", "OPT", T.OPTConfig, _OPT, _BPE, layers="model.decoder.layers", out_proj="self_attn.out_proj",
        final_norm="model.decoder.final_layer_norm", position="model.decoder.embed_positions",
    ),
    Family("llama", "Llama (GQA)", T.LlamaConfig, _GQA, _SP, **_LLAMA_LIKE),
    Family("llama3", "Llama 3 (GQA, Llama 3 tokenizer)", T.LlamaConfig, _GQA, "llama3_style", **_LLAMA_LIKE),
    Family("mistral", "Mistral (GQA)", T.MistralConfig, _GQA, _SP, **_LLAMA_LIKE),
    Family("qwen2", "Qwen2 (GQA, v bias)", T.Qwen2Config, _GQA, "no_bos", **_LLAMA_LIKE),
    Family("qwen3", "Qwen3 (GQA, q/k norms)", T.Qwen3Config, _GQA | _HEAD_DIM, "no_bos", **_LLAMA_LIKE),
    Family("gemma", "Gemma", T.GemmaConfig, _GQA | _HEAD_DIM, _SP, **_LLAMA_LIKE),
    Family("gemma2", "Gemma 2", T.Gemma2Config, _GQA | _HEAD_DIM, _SP, **_GEMMA_POST),
    Family("gemma3", "Gemma 3 (text)", T.Gemma3TextConfig, _GQA | _HEAD_DIM, _SP, **_GEMMA_POST),
    Family(
        "neox", "GPT-NeoX / Pythia", T.GPTNeoXConfig, _DECODER | dict(rotary_pct=0.25), _BPE,
        layers="gpt_neox.layers", out_proj="attention.dense", final_norm="gpt_neox.final_layer_norm",
    ),
    Family(
        "gptj", "GPT-J", T.GPTJConfig, _GPT2_NAMES | dict(rotary_dim=4), _BPE, out_proj="attn.out_proj",
        **_GPT_LIKE,
    ),
    Family(
        "gptneo", "GPT-Neo", T.GPTNeoConfig, _GPT_NEO, _BPE, out_proj="attn.attention.out_proj",
        position="transformer.wpe", **_GPT_LIKE,
    ),
    Family(
        "phi", "Phi", T.PhiConfig, _DECODER, _BPE, layers="model.layers", out_proj="self_attn.dense",
        final_norm="model.final_layernorm",
    ),
    Family("falcon", "Falcon (multi-query)", T.FalconConfig, _FALCON, _BPE, out_proj=_SA_DENSE, **_GPT_LIKE),
    Family("bloom", "BLOOM (ALiBi)", T.BloomConfig, _BLOOM, _BPE, out_proj=_SA_DENSE, **_GPT_LIKE),
)  # fmt: skip

BY_NAME: dict[str, Family] = {f.name: f for f in FAMILIES}
NAMES: tuple[str, ...] = tuple(BY_NAME)


# ---- building and saving -------------------------------------------------------------------


@functools.cache
def family_tokenizer(kind: str):
    """A tiny tokenizer of the family's convention, trained on the built-in tasks' words."""
    return TOKENIZER_KINDS[kind](task_vocabulary())


def _perturbed(model: nn.Module, seed: int) -> None:
    """Weights of std WEIGHT_STD; every norm weight, every bias moved off its initial value."""
    generator = torch.Generator().manual_seed(seed)
    noise = lambda p, std: std * torch.randn(p.shape, generator=generator)  # noqa: E731
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                param.copy_(noise(param, WEIGHT_STD))
            elif name.endswith("bias"):
                param.add_(noise(param, BIAS_NOISE))
            else:  # a norm gain (or Gemma's offset from 1)
                param.add_(noise(param, NORM_NOISE))


def build_config(family: Family, tokenizer):
    special = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    ids = dict(bos_token_id=special, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return family.config_class(**family.config_kwargs, vocab_size=len(tokenizer), **ids)


def save_family(family: Family, directory: Path, seed: int = 0, tokenizer=None) -> Path:
    """A tiny random model of `family` with its tokenizer (or `tokenizer`), saved as a Hugging Face
    directory."""
    tokenizer = tokenizer or family_tokenizer(family.tokenizer_kind)
    torch.manual_seed(seed)
    model = T.AutoModelForCausalLM.from_config(build_config(family, tokenizer))
    _perturbed(model, seed)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


_loaded: dict[str, Model] = {}


def headscope_model(folder: Path) -> Model:
    """headscope's model of the folder, loaded once (a failed load is retried, so each test fails)."""
    if str(folder) not in _loaded:
        _loaded[str(folder)] = load_model(str(folder))
    return _loaded[str(folder)]


@functools.cache
def hf_model(directory: str) -> nn.Module:
    """The saved model as Hugging Face loads it: eager attention, float32, eval mode."""
    model = T.AutoModelForCausalLM.from_pretrained(
        directory, attn_implementation="eager", dtype=torch.float32
    )
    return model.eval()


# ---- the reference: Hugging Face's forward with hooks --------------------------------------


def _first(output):
    return output[0] if isinstance(output, tuple) else output


def _replace_hidden(value: Tensor) -> Callable:
    """A forward pre-hook that feeds `value` to a decoder layer in place of its input."""

    def hook(module, args, kwargs):
        if args:
            return (value, *args[1:]), kwargs
        return args, kwargs | {"hidden_states": value}

    return hook


def _zero_output(module, args, output):
    return torch.zeros_like(output)


def _run(model: nn.Module, tokens: Tensor, hooks: list[tuple[nn.Module, str, Callable]]) -> None:
    handles = []
    try:
        for module, kind, fn in hooks:
            if kind == "pre":
                handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(fn))
        with torch.no_grad():
            model(tokens)
    finally:
        for handle in handles:
            handle.remove()


def token_vectors(family: Family, model: nn.Module, tokens: Int[Tensor, "n"]) -> Float[Tensor, "n d"]:
    """The `token` embedding: block 0's output for each token alone, with no position (a learned
    position embedding zeroed) and no attention (the output projection's output zeroed)."""
    kept: list[Tensor] = []
    layer0 = family.hf_layers(model)[0]
    hooks = [
        (family.hf_out_proj(layer0), "post", _zero_output),
        (layer0, "post", lambda m, a, out: kept.append(_first(out).detach())),
    ]
    position = family.hf_position(model)
    if position is not None:
        hooks.append((position, "post", _zero_output))
    _run(model, tokens[:, None], hooks)  # [n, pos=1]
    return kept[0][:, 0]


def head_values(family: Family, model: nn.Module, x: Float[Tensor, "n d"]) -> list[Tensor]:
    """Per layer, the input to the attention output projection ([n, H * d_head]) when the layer's
    input is `x` at a lone position: attention weight 1 on it, so this is every query head's value
    vector, with HF's own norm, projection, bias and key/value grouping (repeat_kv)."""
    kept: list[Tensor] = []
    hooks = []
    for layer in family.hf_layers(model):
        hooks.append((layer, "pre", _replace_hidden(x[:, None])))
        hooks.append(
            (family.hf_out_proj(layer), "pre", lambda m, a, kw: kept.append(_first(a)[:, 0].detach()))
        )
    dummy = torch.zeros(
        x.shape[0], 1, dtype=torch.long
    )  # what it is does not matter: every layer's input is x
    _run(model, dummy, hooks)
    return kept


def head_output(out_proj: nn.Module, values: Float[Tensor, "n hd"], head: int, d_head: int) -> Tensor:
    """o = v_h @ W_O[h]: the projection of head h's slice alone, without the projection's bias."""
    masked = torch.zeros_like(values)
    masked[:, head * d_head : (head + 1) * d_head] = values[:, head * d_head : (head + 1) * d_head]
    with torch.no_grad():
        return out_proj(masked) - out_proj(torch.zeros_like(values))


def readout(family: Family, model: nn.Module, layer: nn.Module, o: Float[Tensor, "n d"]) -> Tensor:
    """Logits of a head output alone: post-attention norm (Gemma 2/3), the final norm with its own
    statistics on o, the unembedding, and the final soft-capping where the config has it."""
    with torch.no_grad():
        post = family.hf_post_attention_norm(layer)
        if post is not None:
            o = post(o)
        logits = model.get_output_embeddings()(family.hf_final_norm(model)(o))
    cap = getattr(model.config, "final_logit_softcapping", None)
    return logits if cap is None else torch.tanh(logits / cap) * cap


def target_rank(logits: Float[Tensor, "n V"], targets: list[tuple[int, ...]]) -> list[int]:
    """Per row: how many other tokens have a logit at least the best target token's."""
    ranks = []
    for row, tokens in zip(logits, targets, strict=True):
        best = max(tokens, key=lambda t: float(row[t]))
        ranks.append(int((row >= row[best]).sum()) - 1)
    return ranks
