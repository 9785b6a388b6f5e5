"""The weights the scores read, taken once from a loaded model in TransformerLens layout.

Every family is read into one shape, so no score needs to know the family:
- norm gains are the *effective* gains (`offset + w`: Gemma's RMSNorm multiplies by `1 + w`);
- `W_V`, `b_V` have one entry per query head: head h holds its key/value group's
  (`h // (H / H_kv)`, Hugging Face's `repeat_kv`), so grouped- and multi-query models look
  like multi-head ones;
- a bias the model does not have is a zero; a block without a second norm gets a unit gain;
- `attn_out_w` is the gain of the norm on the attention output (Gemma 2/3), or None.

`check_weights` compares this reading with the model's own block 0 and final norm at load,
so a family read wrongly is refused rather than scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from headscope.errors import HeadscopeError
from headscope.models.architecture import Architecture

Normalization = Literal["LN", "RMS"]
CHECK_TOLERANCE = 1e-3  # relative, float32 against the model's own modules


@dataclass(frozen=True)
class Weights:
    """Raw (unfolded) weights: `W_V[l, h]` is head l.h's value matrix, and so on."""

    W_E: Float[Tensor, "d_vocab d_model"]
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
    W_pos: Float[Tensor, "n_ctx d_model"] | None = None  # learned absolute positions only
    attn_out_w: Float[Tensor, "n_layers d_model"] | None = None  # norm on the attention output
    arch: Architecture | None = None

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
    x: Float[Tensor, "... d_model"], w: Tensor, b: Tensor | None, eps: float, kind: Normalization
) -> Float[Tensor, "... d_model"]:
    """LayerNorm (centre, scale) or RMSNorm (scale only) with effective gain `w` and bias `b`."""
    if kind == "LN":
        x = x - x.mean(-1, keepdim=True)
    scale = (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
    out = x / scale * w
    return out if b is None else out + b


def centred(W: Float[Tensor, "... d_model"], kind: Normalization) -> Tensor:
    """W with each row centred (what a LayerNorm after it subtracts); unchanged for RMSNorm."""
    return W - W.mean(-1, keepdim=True) if kind == "LN" else W


def head_output_map(weights: Weights, layers: Tensor, heads: Tensor) -> Float[Tensor, "head d_head d_model"]:
    """What each head's z writes, up to the final norm's statistics: `W_O`, then the attention
    output norm's centring and gain where the model has one, then the final norm's centring."""
    W_O = weights.W_O[layers, heads]  # [head, d_head, d_model]
    if weights.attn_out_w is not None:
        W_O = centred(W_O, weights.normalization) * weights.attn_out_w[layers][:, None, :]
    return centred(W_O, weights.normalization)


# ---- reading a bridge -------------------------------------------------------------------


class _State:
    """The bridge's parameters by TransformerLens name, as float32 on the CPU."""

    def __init__(self, bridge, arch: Architecture) -> None:
        self.tensors = {k: v.detach().float().cpu() for k, v in bridge.state_dict().items()}
        self.n_layers, self.d_model = bridge.cfg.n_layers, bridge.cfg.d_model
        self.arch = arch

    def gain(self, name: str) -> Tensor | None:
        w = self.tensors.get(name)
        return None if w is None else w + self.arch.gain_offset

    def per_layer(self, name: str, fill: float, gain: bool = False) -> Tensor:
        rows = [
            self.gain(f"blocks.{layer}.{name}") if gain else self.tensors.get(f"blocks.{layer}.{name}")
            for layer in range(self.n_layers)
        ]
        return torch.stack([r if r is not None else torch.full((self.d_model,), fill) for r in rows])


def _per_query_head(x: Tensor | None, arch: Architecture, shape: tuple[int, ...]) -> Tensor:
    """[layer, kv_head, ...] -> [layer, head, ...] (each query head takes its group's); zeros for None."""
    if x is None:
        return torch.zeros(shape)
    return x.detach().float().cpu().repeat_interleave(arch.group_size, dim=1)


def _optional(bridge, name: str) -> Tensor | None:
    """A bridge weight that a bias-free or position-free family does not have: None."""
    try:
        value = getattr(bridge, name)
    except (AttributeError, ValueError, RuntimeError):
        return None
    return None if value is None else value.detach().float().cpu()


def _or_zeros(x: Tensor | None, shape: tuple[int, ...]) -> Tensor:
    return torch.zeros(shape) if x is None else x


def weights_from_bridge(bridge, arch: Architecture) -> Weights:
    """Read the weights of a TransformerLens bridge into the one layout every score reads."""
    cfg, s = bridge.cfg, _State(bridge, arch)
    L, H, d, dh = cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head
    with torch.no_grad():
        return Weights(
            W_E=bridge.W_E.detach().float().cpu(),
            ln1_w=s.per_layer("ln1.weight", 1.0, gain=True),
            ln1_b=s.per_layer("ln1.bias", 0.0),
            ln2_w=s.per_layer("ln2.weight", 1.0, gain=True),
            ln2_b=s.per_layer("ln2.bias", 0.0),
            W_V=_per_query_head(bridge.W_V, arch, (L, H, d, dh)),
            b_V=_per_query_head(_optional(bridge, "b_V"), arch, (L, H, dh)),
            W_O=bridge.W_O.detach().float().cpu(),
            b_O=_or_zeros(_optional(bridge, "b_O"), (L, d)),
            lnf_w=s.gain("ln_final.weight") if "ln_final.weight" in s.tensors else torch.ones(d),
            lnf_b=s.tensors.get("ln_final.bias", torch.zeros(d)),
            W_U=bridge.W_U.detach().float().cpu(),
            b_U=_or_zeros(_optional(bridge, "b_U"), (cfg.d_vocab,)),
            eps=float(cfg.eps),
            normalization=arch.norm,
            W_pos=_optional(bridge, "W_pos") if arch.positional == "learned" else None,
            attn_out_w=s.per_layer("ln1_post.weight", 1.0, gain=True) if arch.attn_out_norm else None,
            arch=arch,
        )


# ---- checking the reading against the model ----------------------------------------------


class ArchitectureError(HeadscopeError):
    """headscope's reading of a model disagrees with the model's own forward pass."""


def _agree(name: str, ours: Tensor, theirs: Tensor, arch: Architecture) -> None:
    ours, theirs = ours.float().cpu(), theirs.float().cpu()
    error = float((ours - theirs).abs().max()) / max(float(theirs.abs().max()), 1e-6)
    if error > CHECK_TOLERANCE:
        raise ArchitectureError(
            f"headscope reads {arch.family} models wrongly ({name} differs from the model's own by "
            f"{error:.1e} relative): this architecture is not supported yet; please report it"
        )


def check_weights(bridge, weights: Weights, tokens: Tensor) -> None:
    """Compare block 0's norm and values and the final norm, computed from `weights`, with the
    model's own forward pass on `tokens` [1, pos]; an ArchitectureError names any difference."""
    arch = weights.arch
    names = ["hook_resid_pre", "ln1.hook_out", "attn.hook_pattern", "attn.hook_z"]
    with torch.no_grad():
        _, cache = bridge.run_with_cache(
            tokens, names_filter=[f"blocks.0.{n}" for n in names], stop_at_layer=1
        )
        x = cache["blocks.0.hook_resid_pre"].float().cpu()  # [1, pos, d_model]
        normed = normalize(x, weights.ln1_w[0], weights.ln1_b[0], weights.eps, weights.normalization)
        _agree("the attention's input norm", normed, cache["blocks.0.ln1.hook_out"], arch)
        v = torch.einsum("bpd,hde->bphe", normed, weights.W_V[0]) + weights.b_V[0]  # [1, pos, head, d_head]
        z = torch.einsum("bhqk,bkhe->bqhe", cache["blocks.0.attn.hook_pattern"].float().cpu(), v)
        _agree("the heads' value-weighted sums (hook_z)", z, cache["blocks.0.attn.hook_z"], arch)
        probe = x[:, -1:]  # [1, 1, d_model]
        _agree("the final norm", _final(weights, probe), bridge.ln_final(probe.to(_device(bridge))), arch)
        if weights.attn_out_w is not None:
            ours = normalize(probe, weights.attn_out_w[0], None, weights.eps, weights.normalization)
            theirs = bridge.blocks[0].ln1_post(probe.to(_device(bridge)))
            _agree("the attention output norm", ours, theirs, arch)


def _final(weights: Weights, x: Tensor) -> Tensor:
    return normalize(x, weights.lnf_w, weights.lnf_b, weights.eps, weights.normalization)


def _device(bridge) -> torch.device:
    return bridge.W_E.device
