"""What headscope assumes about a model's architecture, in one place.

Every stage that needs to know how a family differs from GPT-2 reads an `Architecture`
record; none of them tests a family's name. The record is derived once, at load, from the
Hugging Face config and TransformerLens's config and components for it (`architecture_from`:
the components of a booted bridge, or of TransformerLens's adapter for the config where the
weights are streamed from the checkpoint without a bridge, models/streamed.py):

| field | what it says | GPT-2 | Llama | Gemma 2 | Pythia | BLOOM |
|---|---|---|---|---|---|---|
| positional | learned absolute, rotary, ALiBi, none | learned | rotary | rotary | rotary (part) | alibi |
| norm | LayerNorm (centre, scale) or RMSNorm (scale) | LN | RMS | RMS | LN | LN |
| gain_offset | the norm multiplies by `offset + w` | 0 | 0 | 1 | 0 | 0 |
| attn_out_norm | a norm on the attention output before the residual | no | no | yes | no | no |
| mlp_out_norm | a norm on the MLP output before the residual | no | no | yes | no | no |
| parallel | attention and MLP both read the block input | no | no | no | yes | no |
| embedding_norm | a norm right after the token embedding | no | no | no | no | yes |
| embedding_scale | the embedding is multiplied by this | 1 | 1 | sqrt(d) | 1 | 1 |
| n_kv_heads | key/value heads (query head h reads group h // (H / n_kv)) | H | H_kv | H_kv | H | H |
| logit_softcap | logits = cap * tanh(logits / cap) | - | - | 30 | - | - |
| tied_unembedding | W_U is W_E transposed | yes | no* | yes | no | yes |

(* as the checkpoint's config says.) A missing bias is a zero. The few facts no config
states (Gemma's `1 + w` gain, its `sqrt(d_model)` embedding scale) are in `FAMILY_FACTS`;
`models.weights.check_weights` then checks the record against the model's own forward pass,
so a family whose modules behave otherwise is refused instead of scored wrongly.

`convention` says how direct logit attribution and edge attribution are read: "linear" (the
components' outputs sum to the residual stream read through the final norm, exactly) or
"frozen-norm" (Gemma 2/3: norms on the head and MLP outputs, soft-capped logits; every norm's
scale fixed at its clean-run value, logits before the cap; docs/methods.md).
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

Positional = Literal["learned", "rotary", "alibi", "none"]
NormKind = Literal["LN", "RMS"]
EmbeddingScale = Literal["none", "sqrt_d_model"]
Convention = Literal["linear", "frozen-norm"]

_POSITIONAL: dict[str, Positional] = {"standard": "learned", "rotary": "rotary", "alibi": "alibi"}


@dataclass(frozen=True)
class FamilyFacts:
    """What a family does that its config does not state."""

    gain_offset: float = 0.0
    embedding_scale: EmbeddingScale = "none"


_GEMMA = FamilyFacts(gain_offset=1.0, embedding_scale="sqrt_d_model")
FAMILY_FACTS: dict[str, FamilyFacts] = {
    "gemma": _GEMMA,
    "gemma2": _GEMMA,
    "gemma3": _GEMMA,
    "gemma3_text": _GEMMA,
}


@dataclass(frozen=True)
class Architecture:
    """The facts every score needs about a model's architecture (see the module docstring)."""

    family: str
    positional: Positional
    norm: NormKind
    gain_offset: float
    attn_out_norm: bool
    mlp_out_norm: bool
    parallel: bool
    embedding_norm: bool
    embedding_scale: float
    n_heads: int
    n_kv_heads: int
    logit_softcap: float | None
    tied_unembedding: bool

    @property
    def group_size(self) -> int:
        """Query heads per key/value head."""
        return self.n_heads // self.n_kv_heads

    def kv_head(self, head: int) -> int:
        """The key/value group query head `head` reads (Hugging Face's repeat_kv)."""
        return head // self.group_size

    @property
    def convention(self) -> Convention:
        """How DLA and edge attribution split the logit difference into component terms here:
        "linear" where the residual stream is a plain sum of the components' outputs read through
        the final norm; "frozen-norm" where a norm acts on the attention or MLP outputs or the
        logits are soft-capped, so each norm's scale is held at its clean-run value and the
        logits are taken before the cap (docs/methods.md, "The frozen-norm convention")."""
        return "linear" if not self.frozen_norm_reasons else "frozen-norm"

    @property
    def frozen_norm_reasons(self) -> tuple[str, ...]:
        """What makes the plain sum inexact here (empty where it is exact)."""
        reasons = []
        if self.attn_out_norm or self.mlp_out_norm:
            reasons.append("a norm acts on the attention and MLP outputs")
        if self.logit_softcap is not None:
            reasons.append(f"the logits are soft-capped (cap {self.logit_softcap:g})")
        return tuple(reasons)

    @property
    def dla_refusal(self) -> str | None:
        """Why direct logit attribution is not defined here: None on every architecture headscope
        loads (where the plain sum is inexact, the frozen-norm convention defines it)."""
        return None

    @property
    def convention_note(self) -> str | None:
        """One line for the CLI and the page where the convention is frozen-norm, else None."""
        if self.convention == "linear":
            return None
        return (
            f"convention: frozen-norm for {self.family} ({' and '.join(self.frozen_norm_reasons)}): "
            "every norm's scale is held at its clean-run value and logits are taken before any cap"
        )

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _softcap(value) -> float | None:
    return float(value) if value is not None and float(value) > 0 else None


# Components a family may have beyond GPT-2's, by TransformerLens's component names: a norm on the
# attention output, one on the MLP output (blocks), a norm right after the token embedding (model).
OPTIONAL_BLOCK_PARTS = ("ln1_post", "ln2_post")
OPTIONAL_MODEL_PARTS = ("embed_ln",)


def architecture_from(cfg, hf, block_parts: Collection[str], model_parts: Collection[str]) -> Architecture:
    """The record of a model from its TransformerLens config `cfg`, its Hugging Face config `hf`
    and the names of the optional components it has (OPTIONAL_BLOCK_PARTS, OPTIONAL_MODEL_PARTS):
    the one derivation shared by a booted bridge and a checkpoint read without one."""
    family = str(getattr(hf, "model_type", "unknown"))
    facts = FAMILY_FACTS.get(family, FamilyFacts())
    n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    return Architecture(
        family=family,
        positional=_POSITIONAL.get(str(cfg.positional_embedding_type), "none"),
        norm="RMS" if str(cfg.normalization_type).startswith("RMS") else "LN",
        gain_offset=facts.gain_offset,
        attn_out_norm="ln1_post" in block_parts,
        mlp_out_norm="ln2_post" in block_parts,
        parallel=bool(getattr(cfg, "parallel_attn_mlp", False)),
        embedding_norm="embed_ln" in model_parts,
        embedding_scale=math.sqrt(cfg.d_model) if facts.embedding_scale == "sqrt_d_model" else 1.0,
        n_heads=int(cfg.n_heads),
        n_kv_heads=int(n_kv),
        logit_softcap=_softcap(getattr(cfg, "output_logits_soft_cap", None)),
        tied_unembedding=bool(getattr(hf, "tie_word_embeddings", False)),
    )


def architecture_of(bridge) -> Architecture:
    """The record of a TransformerLens bridge, from its config, its modules and its HF config."""
    block = bridge.blocks[0]
    return architecture_from(
        bridge.cfg,
        bridge.original_model.config,
        [name for name in OPTIONAL_BLOCK_PARTS if hasattr(block, name)],
        [name for name in OPTIONAL_MODEL_PARTS if hasattr(bridge, name)],
    )
