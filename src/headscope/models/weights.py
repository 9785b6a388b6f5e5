"""The weights the scores read, taken once from a loaded model in TransformerLens layout."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

Normalization = Literal["LN", "RMS"]


@dataclass(frozen=True)
class Weights:
    """Raw (unfolded) weights: `W_V[l, h]` is head l.h's value matrix, and so on."""

    W_E: Float[Tensor, "d_vocab d_model"]
    W_pos: Float[Tensor, "n_ctx d_model"]
    ln1_w: Float[Tensor, "n_layers d_model"]
    ln1_b: Float[Tensor, "n_layers d_model"]
    ln2_w: Float[Tensor, "n_layers d_model"]
    ln2_b: Float[Tensor, "n_layers d_model"]
    W_V: Float[Tensor, "n_layers n_heads d_model d_head"]
    b_V: Float[Tensor, "n_layers n_heads d_head"]
    W_O: Float[Tensor, "n_layers n_heads d_head d_model"]
    b_O: Float[Tensor, "n_layers d_model"]
    lnf_w: Float[Tensor, "d_model"]
    lnf_b: Float[Tensor, "d_model"]
    W_U: Float[Tensor, "d_model d_vocab"]
    b_U: Float[Tensor, "d_vocab"]
    eps: float
    normalization: Normalization = "LN"

    @property
    def n_layers(self) -> int:
        return int(self.W_V.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.W_V.shape[1])

    @property
    def d_model(self) -> int:
        return int(self.W_V.shape[2])

    @property
    def d_head(self) -> int:
        return int(self.W_V.shape[3])

    @property
    def d_vocab(self) -> int:
        return int(self.W_U.shape[1])


def normalize(
    x: Float[Tensor, "... d_model"], w: Tensor, b: Tensor, eps: float, kind: Normalization
) -> Float[Tensor, "... d_model"]:
    """LayerNorm (centre, scale) or RMSNorm (scale only) with gain `w` and bias `b`."""
    if kind == "LN":
        x = x - x.mean(-1, keepdim=True)
    scale = (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    return x / scale * w + b


def _stack(state: dict[str, Tensor], name: str, n_layers: int, d_model: int, fill: float):
    rows = [state.get(f"blocks.{layer}.{name}") for layer in range(n_layers)]
    return torch.stack([r if r is not None else torch.full((d_model,), fill) for r in rows])


def weights_from_bridge(bridge) -> Weights:
    """Read the weights of a TransformerLens bridge (missing LN gains mean folded: ones)."""
    state = {k: v.detach().float() for k, v in bridge.state_dict().items()}
    cfg = bridge.cfg
    n_layers, d_model = cfg.n_layers, cfg.d_model
    kind: Normalization = "RMS" if str(cfg.normalization_type).startswith("RMS") else "LN"
    zeros = torch.zeros(d_model)
    with torch.no_grad():
        return Weights(
            W_E=bridge.W_E.detach().float(),
            W_pos=bridge.W_pos.detach().float(),
            ln1_w=_stack(state, "ln1.weight", n_layers, d_model, 1.0),
            ln1_b=_stack(state, "ln1.bias", n_layers, d_model, 0.0),
            ln2_w=_stack(state, "ln2.weight", n_layers, d_model, 1.0),
            ln2_b=_stack(state, "ln2.bias", n_layers, d_model, 0.0),
            W_V=bridge.W_V.detach().float(),
            b_V=bridge.b_V.detach().float(),
            W_O=bridge.W_O.detach().float(),
            b_O=bridge.b_O.detach().float(),
            lnf_w=state.get("ln_final.weight", torch.ones(d_model)),
            lnf_b=state.get("ln_final.bias", zeros),
            W_U=bridge.W_U.detach().float(),
            b_U=bridge.b_U.detach().float() if bridge.b_U is not None else torch.zeros(cfg.d_vocab),
            eps=float(cfg.eps),
            normalization=kind,
        )
