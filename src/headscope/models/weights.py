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

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
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


# ---- reading a bridge, one layer at a time -----------------------------------------------


@contextmanager
def materialized(module: torch.nn.Module) -> Iterator[None]:
    """Parameters that accelerate keeps elsewhere (on disk, on the `meta` device until its hook
    loads them) loaded on the execution device while the block runs; nothing otherwise."""
    from accelerate.utils import align_module_device, has_offloaded_params

    with ExitStack() as stack:
        for sub in module.modules():
            if has_offloaded_params(sub):
                stack.enter_context(align_module_device(sub))
        yield


def _read(x: Tensor | None) -> Tensor | None:
    return None if x is None else x.detach().float().cpu()


def _or(x: Tensor | None, fill: Tensor) -> Tensor:
    return fill if x is None else x


@dataclass(frozen=True)
class _Layer:
    """One block's tensors in the shared layout (per query head, effective gains, zeros for none)."""

    ln1_w: Tensor
    ln1_b: Tensor
    ln2_w: Tensor
    ln2_b: Tensor
    W_V: Tensor  # [head, d_model, d_head]
    b_V: Tensor  # [head, d_head]
    W_O: Tensor  # [head, d_head, d_model]
    b_O: Tensor  # [d_model]
    attn_out_w: Tensor | None


def _per_head(b_V: Tensor | None, W_V: Tensor) -> Tensor:
    """b_V as [kv_head, d_head] (a model stores it flat or per head); zeros for a bias-free one."""
    kv_heads, d_head = W_V.shape[0], W_V.shape[2]
    return torch.zeros(kv_heads, d_head) if b_V is None else b_V.reshape(kv_heads, d_head)


def _norm(module, name: str) -> tuple[Tensor | None, Tensor | None]:
    """The stored weight and bias of a bridge's norm `name` (None where absent or bias-free)."""
    norm = getattr(module, name, None)
    norm = getattr(norm, "_original_component", norm)
    return _read(getattr(norm, "weight", None)), _read(getattr(norm, "bias", None))


def _gain(stored: Tensor | None, arch: Architecture, d_model: int) -> Tensor:
    """The effective gain `offset + w` (a unit gain where the model has no such norm)."""
    return torch.ones(d_model) if stored is None else stored + arch.gain_offset


def _read_layer(bridge, layer: int, arch: Architecture) -> _Layer:
    """Block `layer`'s weights, its offloaded parameters loaded only while they are read."""
    block, d, g = bridge.blocks[layer], bridge.cfg.d_model, arch.group_size
    with materialized(block), torch.no_grad():
        (ln1_w, ln1_b), (ln2_w, ln2_b), (post_w, _) = (_norm(block, n) for n in ("ln1", "ln2", "ln1_post"))
        W_V = _read(bridge._reshape_qkv(block.attn.W_V))  # [kv_head, d_model, d_head]
        b_V = _read(block.attn.b_V)  # [kv_head, d_head], flat, or None
        W_O = _read(bridge._reshape_o(block.attn.W_O))  # [head, d_head, d_model]
        b_O = _read(block.attn.b_O)
    zeros = torch.zeros(d)
    return _Layer(
        ln1_w=_gain(ln1_w, arch, d),
        ln1_b=_or(ln1_b, zeros),
        ln2_w=_gain(ln2_w, arch, d),
        ln2_b=_or(ln2_b, zeros),
        W_V=W_V.repeat_interleave(g, dim=0),  # each query head takes its group's
        b_V=_per_head(b_V, W_V).repeat_interleave(g, dim=0),
        W_O=W_O,
        b_O=_or(b_O, zeros),
        attn_out_w=_gain(post_w, arch, d) if arch.attn_out_norm else None,
    )


def _read_final(bridge, arch: Architecture) -> dict[str, Tensor]:
    """The final norm's effective gain and bias, W_U and b_U (zeros where the model has none)."""
    d, vocab = bridge.cfg.d_model, bridge.cfg.d_vocab
    with materialized(bridge.ln_final), materialized(bridge.unembed), torch.no_grad():
        weight, bias = _norm(bridge, "ln_final")
        W_U, b_U = _read(bridge.unembed.W_U), _read(bridge.unembed.b_U)
    return {
        "lnf_w": _gain(weight, arch, d),
        "lnf_b": _or(bias, torch.zeros(d)),
        "W_U": W_U,
        "b_U": _or(b_U, torch.zeros(vocab)),
    }


def weights_from_bridge(bridge, arch: Architecture) -> Weights:
    """Read the weights of a TransformerLens bridge into the one layout every score reads.

    Layer by layer: a model split by accelerate (layers on other devices, on the CPU, or offloaded
    to disk) has each block's parameters loaded only while that block is read, so the whole model
    is never materialised — only the OV weights, the norms and the unembedding are kept.
    """
    layers = [_read_layer(bridge, layer, arch) for layer in range(bridge.cfg.n_layers)]
    stack = lambda name: torch.stack([getattr(x, name) for x in layers])  # noqa: E731
    return Weights(
        **{name: stack(name) for name in ("ln1_w", "ln1_b", "ln2_w", "ln2_b", "W_V", "b_V", "W_O", "b_O")},
        **_read_final(bridge, arch),
        eps=float(bridge.cfg.eps),
        normalization=arch.norm,
        attn_out_w=stack("attn_out_w") if arch.attn_out_norm else None,
        arch=arch,
    )


# ---- checking the reading against the model ----------------------------------------------


class ArchitectureError(HeadscopeError):
    """headscope's reading of a model disagrees with the model's own forward pass."""


def _agree(name: str, ours: Tensor, theirs: Tensor, arch: Architecture) -> None:
    tolerance = max(CHECK_TOLERANCE, 4 * torch.finfo(theirs.dtype).eps)  # a half-precision model's rounding
    ours, theirs = ours.float().cpu(), theirs.float().cpu()
    error = float((ours - theirs).abs().max()) / max(float(theirs.abs().max()), 1e-6)
    if error > tolerance:
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
        _agree(
            "the final norm",
            _final(weights, probe),
            bridge.ln_final(probe.to(_device(bridge), bridge.W_E.dtype)),
            arch,
        )
        if weights.attn_out_w is not None:
            ours = normalize(probe, weights.attn_out_w[0], None, weights.eps, weights.normalization)
            theirs = bridge.blocks[0].ln1_post(probe.to(_device(bridge), bridge.W_E.dtype))
            _agree("the attention output norm", ours, theirs, arch)


def _final(weights: Weights, x: Tensor) -> Tensor:
    return normalize(x, weights.lnf_w, weights.lnf_b, weights.eps, weights.normalization)


def _device(bridge) -> torch.device:
    from headscope.models.placement import input_device  # an offloaded W_E is on `meta`

    return input_device(bridge)
