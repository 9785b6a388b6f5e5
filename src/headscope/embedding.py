"""Effective embeddings: the residual vectors whose OV behaviour the relation scores read.

Three kinds (docs/methods.md §2), each run through the model's own forward code:

- `context`: `blocks.0.hook_resid_post` at each keyword's position in its real prompt
  (from the capture); every keyword instance is its own vector.
- `token`: `W_E[t] + MLP_0(LN2_0(W_E[t]))` — no position, no attention. Computed by
  running the token alone with the learned positional embedding (where the model has one)
  and block 0's attention output zeroed by hooks, once per distinct token; so the embedding
  is whatever the model's own embedding does (Gemma's sqrt(d_model) scale, BLOOM's norm), and
  MLP0 reads what it reads in that block (a parallel block's MLP reads the block input).
- `block0`: block 0 applied to the token alone: the one-token sequence `[t]` at
  position 0, with no BOS in front (so block 0's attention can only attend to `t`
  itself and no other token leaks in), `W_pos[0]` included. Once per distinct token.

A model streamed from its checkpoint (models/streamed.py) runs the same two on its block 0 alone,
with the same hooks set on the family's own Hugging Face layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from headscope.capture import Capture, Needs, capture
from headscope.models.loading import Model
from headscope.models.streamed import StreamedModel
from headscope.tasks.dataset import Dataset

EmbeddingKind = Literal["context", "token", "block0"]
EMBEDDING_KINDS: tuple[str, ...] = ("context", "token", "block0")
TOKEN_BATCH = 4096


@dataclass(frozen=True)
class Embeddings:
    """Distinct residual vectors and, for each keyword instance, the row it uses."""

    kind: str
    vectors: Float[Tensor, "row d_model"]
    row: Int[Tensor, "instance"]


def effective_embeddings(
    model: Model, dataset: Dataset, kind: EmbeddingKind, taken: Capture | None = None
) -> Embeddings:
    """The effective embedding of every keyword instance of `dataset`."""
    if kind == "context":
        vectors = context_vectors(model, dataset, taken)
        return Embeddings(kind, vectors, torch.arange(vectors.shape[0]))
    unique, row = torch.unique(dataset.keywords.token, return_inverse=True)
    if kind == "token":
        return Embeddings(kind, token_vectors(model, unique), row)
    if kind == "block0":
        return Embeddings(kind, block0_vectors(model, unique), row)
    raise ValueError(f"unknown embedding {kind!r}; choose one of {', '.join(EMBEDDING_KINDS)}")


def context_vectors(model: Model, dataset: Dataset, taken: Capture | None = None) -> Tensor:
    """`blocks.0.hook_resid_post` at the keyword positions, from `taken` or a fresh pass."""
    if taken is None or taken.resid0_keywords is None:
        taken = capture(model, dataset, Needs(resid0_keywords=True, logits_end=False))
    return taken.resid0_keywords


def token_vectors(
    model: Model | StreamedModel, tokens: Int[Tensor, "token"]
) -> Float[Tensor, "token d_model"]:
    """`W_E[t] + MLP_0(LN2_0(W_E[t]))` for each token (no position, no attention)."""
    if isinstance(model, StreamedModel):
        return model.token_vectors(tokens)
    zero = lambda act, hook: torch.zeros_like(act)  # noqa: E731
    hooks = [("blocks.0.hook_attn_out", zero)]
    if model.arch.positional == "learned":
        hooks.append(("hook_pos_embed", zero))
    return _block0_alone(model, tokens, hooks)


def block0_vectors(
    model: Model | StreamedModel, tokens: Int[Tensor, "token"]
) -> Float[Tensor, "token d_model"]:
    """Block 0's output for each token run alone at position 0 (no BOS)."""
    if isinstance(model, StreamedModel):
        return model.block0_vectors(tokens)
    return _block0_alone(model, tokens, [])


def _block0_alone(model: Model, tokens: Tensor, extra_hooks: list) -> Tensor:
    bridge = model.bridge
    kept: list[Tensor] = []
    keep = lambda act, hook: kept.append(act[:, 0].detach().float().cpu())  # noqa: E731
    for start in range(0, len(tokens), TOKEN_BATCH):
        batch = tokens[start : start + TOKEN_BATCH, None]  # [token, pos=1]
        with torch.no_grad():
            bridge.run_with_hooks(
                batch.to(bridge.cfg.device),
                fwd_hooks=[*extra_hooks, ("blocks.0.hook_resid_post", keep)],
                stop_at_layer=1,
            )
    return torch.cat(kept, 0) if kept else torch.zeros(0, model.identity.d_model)
