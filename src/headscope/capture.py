"""One forward pass over a dataset that keeps only what the scores ask for.

Each hook reduces its activation at once (a row of the pattern at `end`, the keyword
positions of the residual), so memory grows with the prompts, not with the full cache.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from headscope.errors import HeadscopeError
from headscope.models.loading import Model
from headscope.tasks.dataset import Dataset

DEFAULT_BATCH = 64


@dataclass(frozen=True)
class Needs:
    """Which activations to keep; every field off means a plain forward pass."""

    resid0_keywords: bool = False  # blocks.0.hook_resid_post at keyword positions
    pattern_end: bool = False  # attention rows at `end`, every head
    pattern_roles: bool = False  # attention rows at every role position, every head
    pattern_full: bool = False  # whole patterns (short prompts only: induction)
    z_end: bool = False  # hook_z at `end`, every layer
    mlp_end: bool = False  # hook_mlp_out at `end`, every layer
    embed_end: bool = False  # the embedding as block 0 reads it (blocks.0.hook_resid_pre) at `end`
    scale_end: bool = False  # final layer norm's scale at `end`
    attn_scale_end: bool = False  # the attention-output norm's scale at `end` (where there is one)
    logits_end: bool = True  # the logits at `end`


@dataclass(frozen=True)
class Capture:
    """Activations kept from one pass; a field is None when it was not asked for."""

    role_names: tuple[str, ...] = ()
    resid0_keywords: Float[Tensor, "instance d_model"] | None = None
    pattern_end: Float[Tensor, "batch layer head pos"] | None = None
    pattern_roles: Float[Tensor, "batch layer head role pos"] | None = None
    pattern_full: Float[Tensor, "batch layer head pos pos"] | None = None
    z_end: Float[Tensor, "batch layer head d_head"] | None = None
    mlp_end: Float[Tensor, "batch layer d_model"] | None = None
    embed_end: Float[Tensor, "batch d_model"] | None = None
    scale_end: Float[Tensor, "batch"] | None = None
    attn_scale_end: Float[Tensor, "batch layer"] | None = None
    logits_end: Float[Tensor, "batch d_vocab"] | None = None

    def require(self, name: str, reader: str) -> Tensor:
        """The field `name`, or a CaptureError naming it and the `Needs` flag that keeps it."""
        value = getattr(self, name)
        if value is None:
            raise CaptureError(
                f"{reader} reads capture.{name}, which this capture lacks: "
                f"capture with Needs({name}=True) (or the score's *_NEEDS)"
            )
        return value


class CaptureError(HeadscopeError):
    """A score given a capture that lacks an activation it reads."""


@dataclass
class _Batch:
    """Index tensors of the prompts in the current batch, read by the hooks."""

    end: Int[Tensor, "batch"]
    role_pos: Int[Tensor, "batch role"]
    kw_batch: Int[Tensor, "instance"]
    kw_pos: Int[Tensor, "instance"]
    store: dict[str, list[Tensor]] = field(default_factory=dict)

    def keep(self, key: str, value: Tensor) -> None:
        self.store.setdefault(key, []).append(value.detach().float().cpu())


def _rows(x: Tensor, index: Int[Tensor, "batch"]) -> Tensor:
    """x[b, index[b]] for a [batch, pos, ...] tensor."""
    return x[torch.arange(x.shape[0]), index.to(x.device)]


def _hooks(
    needs: Needs, n_layers: int, batch: _Batch, attn_out_norm: bool = False
) -> list[tuple[str, Callable]]:
    hooks: list[tuple[str, Callable]] = []

    def add(name: str, key: str, reduce: Callable[[Tensor], Tensor]) -> None:
        hooks.append((name, lambda act, hook: batch.keep(key, reduce(act))))

    if needs.resid0_keywords:
        add("blocks.0.hook_resid_post", "resid0_keywords", lambda a: a[batch.kw_batch, batch.kw_pos])
    for layer in range(n_layers):
        pattern = f"blocks.{layer}.attn.hook_pattern"
        if needs.pattern_end:  # [batch, head, q, k] -> [batch, head, k]
            add(pattern, "pattern_end", lambda a: _rows(a.transpose(1, 2), batch.end))
        if needs.pattern_roles:  # -> [batch, head, role, k]
            add(pattern, "pattern_roles", lambda a: _role_rows(a, batch.role_pos))
        if needs.pattern_full:  # rows of padding tokens zeroed: the same however batched
            add(pattern, "pattern_full", lambda a: a * _real_queries(a, batch.end))
        if needs.z_end:
            add(f"blocks.{layer}.attn.hook_z", "z_end", lambda a: _rows(a, batch.end))
        if needs.mlp_end:
            add(f"blocks.{layer}.hook_mlp_out", "mlp_end", lambda a: _rows(a, batch.end))
        if needs.attn_scale_end and attn_out_norm:  # [batch, pos, 1] -> [batch]
            add(f"blocks.{layer}.ln1_post.hook_scale", "attn_scale_end", lambda a: _rows(a, batch.end)[:, 0])
    if needs.embed_end:  # token + position embeddings, scaled and normed as the model does
        add("blocks.0.hook_resid_pre", "embed_end", lambda a: _rows(a, batch.end))
    if needs.scale_end:
        add("ln_final.hook_scale", "scale_end", lambda a: _rows(a, batch.end)[:, 0])
    return hooks


@contextmanager
def end_rows_only(bridge, end: Int[Tensor, "batch"]) -> Iterator[None]:
    """The unembedding (and the output transform after it) runs on each prompt's `end` row alone:
    the logits come back as [batch, 1, d_vocab]. The scores read no other row, and unembedding
    every position is about a third of a GPT-2-small forward pass."""

    def end_row(module, args: tuple, kwargs: dict):
        if args:
            return (_rows(args[0], end)[:, None], *args[1:]), kwargs  # [batch, 1, d_model]
        return args, kwargs | {"hidden_states": _rows(kwargs["hidden_states"], end)[:, None]}

    handle = bridge.unembed.register_forward_pre_hook(end_row, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _real_queries(pattern: Float[Tensor, "batch head q k"], end: Int[Tensor, "batch"]) -> Tensor:
    query = torch.arange(pattern.shape[2], device=pattern.device)
    return (query[None, :] <= end.to(pattern.device)[:, None])[:, None, :, None]  # [batch, 1, q, 1]


def _role_rows(pattern: Float[Tensor, "batch head q k"], role_pos: Tensor) -> Tensor:
    index = role_pos.to(pattern.device)[:, None, :, None]  # [batch, 1, role, 1]
    index = index.expand(-1, pattern.shape[1], -1, pattern.shape[3])  # [batch, head, role, k]
    return pattern.gather(2, index)


def _stack_layers(chunks: list[Tensor], n_layers: int) -> Tensor:
    """Hooks fire layer by layer within a batch: regroup to [batch, layer, ...]."""
    per_batch = [torch.stack(chunks[i : i + n_layers], 1) for i in range(0, len(chunks), n_layers)]
    return torch.cat(per_batch, 0)


def _batch_indices(dataset: Dataset, start: int, stop: int, names: tuple[str, ...]) -> _Batch:
    kw = dataset.keywords
    in_batch = (kw.batch >= start) & (kw.batch < stop)
    role_pos = torch.stack([dataset.roles[r].index[start:stop] for r in names], 1) if names else None
    return _Batch(
        end=dataset.end[start:stop],
        role_pos=role_pos if role_pos is not None else torch.zeros(stop - start, 0, dtype=torch.long),
        kw_batch=kw.batch[in_batch] - start,
        kw_pos=kw.position[in_batch],
    )


def _stop_layer(needs: Needs) -> int | None:
    only_block0 = needs.resid0_keywords and not any(
        getattr(needs, name) for name in Needs.__dataclass_fields__ if name != "resid0_keywords"
    )
    return 1 if only_block0 else None


def capture(model: Model, dataset: Dataset, needs: Needs, batch_size: int = DEFAULT_BATCH) -> Capture:
    """Run `dataset` through `model` in batches, keeping only the activations in `needs`."""
    names = tuple(sorted(dataset.roles))
    bridge, n_layers = model.bridge, model.n_layers
    stores: list[dict[str, list[Tensor]]] = []
    starts = range(0, dataset.n, batch_size)
    for start in tqdm(starts, desc="forward", unit="batch", leave=False, disable=None):
        stop = min(start + batch_size, dataset.n)
        batch = _batch_indices(dataset, start, stop, names)
        tokens = dataset.tokens[start:stop, : int(dataset.lengths[start:stop].max())]
        with torch.no_grad(), end_rows_only(bridge, batch.end):
            out = bridge.run_with_hooks(
                tokens.to(bridge.cfg.device),
                fwd_hooks=_hooks(needs, n_layers, batch, model.arch.attn_out_norm),
                stop_at_layer=_stop_layer(needs),
            )
        if needs.logits_end and _stop_layer(needs) is None:
            batch.keep("logits_end", out[:, 0])  # [batch, 1, d_vocab]: the end rows only
        stores.append(batch.store)
    return _merge(stores, needs, names, n_layers)


def _merge(stores, needs: Needs, names: tuple[str, ...], n_layers: int) -> Capture:
    def joined(key: str) -> Tensor | None:
        chunks = [c for store in stores for c in store.get(key, [])]
        return torch.cat(chunks, 0) if chunks else None

    def layered(key: str) -> Tensor | None:
        if not stores or key not in stores[0]:
            return None
        return _cat_padded([_stack_layers(store[key], n_layers) for store in stores])

    return Capture(
        role_names=names,
        resid0_keywords=joined("resid0_keywords"),
        pattern_end=layered("pattern_end"),
        pattern_roles=layered("pattern_roles"),
        pattern_full=_full_patterns(stores, n_layers) if needs.pattern_full else None,
        z_end=layered("z_end"),
        mlp_end=layered("mlp_end"),
        embed_end=joined("embed_end"),
        scale_end=joined("scale_end"),
        attn_scale_end=layered("attn_scale_end"),
        logits_end=joined("logits_end"),
    )


def _cat_padded(per_batch: list[Tensor], pad_query: bool = False) -> Tensor:
    """Join batches along dim 0, zero-padding the key dim (and the query dim) to the widest.

    Each batch is trimmed to its own longest prompt, so attention rows differ in width;
    the padding is attention to positions a prompt does not have, which is zero.
    """
    width = max(p.shape[-1] for p in per_batch)
    pads = [(0, width - p.shape[-1], 0, width - p.shape[-2] if pad_query else 0) for p in per_batch]
    return torch.cat([torch.nn.functional.pad(p, pad) for p, pad in zip(per_batch, pads, strict=True)], 0)


def _full_patterns(stores, n_layers: int) -> Tensor:
    """Patterns of all batches, zero-padded to the longest prompt: [batch, layer, head, q, k]."""
    return _cat_padded([_stack_layers(store["pattern_full"], n_layers) for store in stores], pad_query=True)
