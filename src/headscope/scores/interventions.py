"""Knock components out, fast and exactly: resume from the cached residual, batch the knockouts.

A *site* is one head's `hook_z` or one MLP's `hook_mlp_out`, replaced by donor values at a
set of positions. `sweep_sites` computes the mean task metric with each site replaced in turn;
`reference_sweep` does the same the straightforward way (one complete hooked forward pass per
site) and exists to check the fast path and to time it against.

The fast path, which changes no number:
- a head of layer `l` is replaced in a run that starts at block `l` from the clean residual
  `blocks.l.hook_resid_pre`; an MLP of layer `l` starts at block `l + 1` from
  `hook_resid_mid + value` (the very sum the block itself would form) where the block is
  sequential, and at block `l` with `hook_mlp_out` replaced where it is parallel (its MLP
  reads the block input, so there is no `hook_resid_mid` to resume from);
- the logits get the model's own output transform (Gemma 2's soft-capping);
- several heads of one layer go through one pass as copies stacked along the batch;
- the final layer norm and the unembedding run on the `end` rows only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from headscope.capture import end_rows_only
from headscope.heads import Component
from headscope.scores.metric import logit_diff

DEFAULT_BATCH = 32
# Prompts x stacked copies in one resumed pass. Small enough that a pass's MLP activations
# (rows x pos x d_mlp: 19 MB for GPT-2 small's 24-token prompts) stay in cache through GELU's
# chain of elementwise ops: 15% faster than 256 on CPU, and the same numbers bit for bit
# (each row's result does not depend on the rows beside it; benchmarks/report_gpt2.py).
MAX_ROWS = 64


@dataclass(frozen=True)
class Site:
    """One component to replace: head `head` of `layer`, or its MLP when `head` is None.

    `position` restricts the replacement to one token index; None uses the sweep's mask.
    """

    layer: int
    head: int | None
    position: int | None = None

    @property
    def name(self) -> str:
        return Component(self.layer, self.head).name


@dataclass(frozen=True)
class Values:
    """Replacement activations for one batch of prompts, every layer."""

    z: Float[Tensor, "layer batch pos head d_head"]
    mlp: Float[Tensor, "layer batch pos d_model"]


@dataclass(frozen=True)
class Batch:
    """The base prompts of one batch and where their metric is read."""

    start: int
    stop: int
    tokens: Int[Tensor, "batch pos"]
    end: Int[Tensor, "batch"]
    answers: Int[Tensor, "batch"]
    contrasts: Int[Tensor, "batch"]
    mask: Bool[Tensor, "batch pos"]


DonorFn = Callable[[Batch], Values]


def z_hook(layer: int) -> str:
    return f"blocks.{layer}.attn.hook_z"


def mlp_hook(layer: int) -> str:
    return f"blocks.{layer}.hook_mlp_out"


def site_mask(site: Site, batch: Batch) -> Bool[Tensor, "batch pos"]:
    if site.position is None:
        return batch.mask
    mask = torch.zeros_like(batch.mask)
    mask[:, site.position] = True
    return mask


def replace_head(
    z: Float[Tensor, "batch pos head d_head"],
    head: int,
    value: Float[Tensor, "batch pos head d_head"],
    mask: Bool[Tensor, "batch pos"],
) -> Tensor:
    """z with head `head` set to `value` where `mask` holds (a new tensor)."""
    out = z.clone()
    keep = mask.to(z.device)[:, :, None]  # [batch, pos, 1]
    out[:, :, head] = torch.where(keep, value[:, :, head].to(z), z[:, :, head])
    return out


def replace_mlp(
    mlp: Float[Tensor, "batch pos d_model"],
    value: Float[Tensor, "batch pos d_model"],
    mask: Bool[Tensor, "batch pos"],
) -> Tensor:
    return torch.where(mask.to(mlp.device)[:, :, None], value.to(mlp), mlp)


def site_hook(site: Site, values: Values, mask: Tensor) -> tuple[str, Callable]:
    """The forward hook that replaces one site in a full (unstacked) run."""
    if site.head is None:
        value = values.mlp[site.layer]
        return mlp_hook(site.layer), lambda act, hook: replace_mlp(act, value, mask)
    value = values.z[site.layer]
    return z_hook(site.layer), lambda act, hook: replace_head(act, site.head, value, mask)


def end_metric(logits_end: Float[Tensor, "batch d_vocab"], batch: Batch) -> Float[Tensor, "batch"]:
    return logit_diff(logits_end.float().cpu(), batch.answers, batch.contrasts)


def rows_at(x: Float[Tensor, "batch pos ..."], index: Int[Tensor, "batch"]) -> Tensor:
    return x[torch.arange(x.shape[0], device=x.device), index.to(x.device)]


def batches(
    tokens: Tensor, lengths: Tensor, answers: Tensor, contrasts: Tensor, mask: Tensor, size: int
) -> Iterator[Batch]:
    for start in range(0, tokens.shape[0], size):
        stop = min(start + size, tokens.shape[0])
        width = int(lengths[start:stop].max())
        yield Batch(
            start,
            stop,
            tokens[start:stop, :width],
            lengths[start:stop] - 1,
            answers[start:stop],
            contrasts[start:stop],
            mask[start:stop, :width],
        )


# ---- the straightforward way ---------------------------------------------------------


@dataclass(frozen=True)
class SweepResult:
    """A sweep's mean metric per site and clean, and the same per prompt (for their intervals)."""

    metrics: Float[Tensor, "site"]
    clean: float
    per_prompt: Float[Tensor, "site prompt"]
    clean_per_prompt: Float[Tensor, "prompt"]


def _per_prompt(sites: list[Site], batch_list: list[Batch]) -> tuple[Tensor, Tensor]:
    """Empty per-prompt tables: [site, prompt] and [prompt], float32 as the metric is computed."""
    n = sum(batch.tokens.shape[0] for batch in batch_list)
    return torch.zeros(len(sites), n), torch.zeros(n)


def reference_sweep(
    bridge, batch_list: list[Batch], donor: DonorFn, sites: list[Site], progress: bool = True
) -> tuple[Float[Tensor, "site"], float]:
    """Mean metric per site, one complete hooked forward pass per site and batch; and clean."""
    result = reference_sweep_per_prompt(bridge, batch_list, donor, sites, progress)
    return result.metrics, result.clean


def reference_sweep_per_prompt(
    bridge, batch_list: list[Batch], donor: DonorFn, sites: list[Site], progress: bool = True
) -> SweepResult:
    """`reference_sweep`, with the metric of every prompt kept."""
    sums = torch.zeros(len(sites), dtype=torch.float64)
    per_prompt, clean_per_prompt = _per_prompt(sites, batch_list)
    clean, n = 0.0, 0
    device = bridge.cfg.device
    for batch in batch_list:
        values = donor(batch)
        with torch.no_grad():
            base = end_metric(rows_at(bridge(batch.tokens.to(device)), batch.end), batch)  # [batch]
            clean += float(base.sum())
            clean_per_prompt[batch.start : batch.stop] = base
            for i, site in enumerate(
                tqdm(sites, desc="knockouts", leave=False, disable=not progress or None)
            ):
                hook = site_hook(site, values, site_mask(site, batch))
                logits = bridge.run_with_hooks(batch.tokens.to(device), fwd_hooks=[hook])
                metric = end_metric(rows_at(logits, batch.end), batch)  # [batch]
                sums[i] += float(metric.sum())
                per_prompt[i, batch.start : batch.stop] = metric
        n += batch.tokens.shape[0]
    return SweepResult((sums / n).float(), clean / n, per_prompt, clean_per_prompt)


# ---- the fast way ----------------------------------------------------------------------


@dataclass(frozen=True)
class Cached:
    """The base run of one batch: what the resumed runs start from."""

    pre: Float[Tensor, "layer batch pos d_model"]
    mid: Float[Tensor, "layer batch pos d_model"] | None  # None for parallel blocks
    mlp: Float[Tensor, "layer batch pos d_model"]
    logits: Float[Tensor, "batch d_vocab"]  # at each prompt's end


class InterventionRunner:
    """Runs the blocks of a bridge from a given layer on a given residual, as its forward does."""

    def __init__(self, bridge) -> None:
        self.bridge = bridge
        self.n_layers = len(bridge.blocks)
        self.sequential = "blocks.0.hook_resid_mid" in bridge.hook_dict  # parallel blocks have none
        self.call_args: tuple = ()
        self.call_kwargs: dict = {}
        self.base_rows = 1  # prompts in the clean pass the call arguments were recorded from

    def clean_pass(self, tokens: Int[Tensor, "batch pos"], end: Int[Tensor, "batch"]) -> Cached:
        """The base run's residuals and MLP outputs at every layer, and its logits at `end`."""
        kept: dict[str, list[Tensor]] = {"pre": [], "mid": [], "mlp": []}
        names = (("pre", "hook_resid_pre"), ("mlp", "hook_mlp_out"))
        names += (("mid", "hook_resid_mid"),) if self.sequential else ()
        device = self.bridge.cfg.device  # a split model's blocks run on several devices
        hooks = [
            (f"blocks.{layer}.{name}", lambda a, hook, key=key: kept[key].append(a.to(device)))
            for layer in range(self.n_layers)
            for key, name in names
        ]
        handle = self.bridge.blocks[0].register_forward_pre_hook(self._record, with_kwargs=True)
        try:
            with torch.no_grad(), end_rows_only(self.bridge, end):
                logits = self.bridge.run_with_hooks(tokens.to(self.bridge.cfg.device), fwd_hooks=hooks)
        finally:
            handle.remove()
        mid = torch.stack(kept["mid"]) if self.sequential else None
        return Cached(torch.stack(kept["pre"]), mid, torch.stack(kept["mlp"]), logits[:, 0])

    def _record(self, module, args: tuple, kwargs: dict) -> None:
        """Keep what the model passes a block besides the residual (positions, masks)."""
        self.base_rows = int(args[0].shape[0]) if args else int(kwargs["hidden_states"].shape[0])
        self.call_args = tuple(None if _is_cache(a) else a for a in args[1:])
        self.call_kwargs = {k: (None if _is_cache(v) else v) for k, v in kwargs.items()}
        if "use_cache" in self.call_kwargs:
            self.call_kwargs["use_cache"] = False

    def run(
        self,
        resid: Float[Tensor, "rows pos d_model"],
        start: int,
        end: Int[Tensor, "rows"],
        hooks: list[tuple[str, Callable]],
        capped: bool = True,
    ) -> Float[Tensor, "rows d_vocab"]:
        """Logits at `end` after blocks start.. on `resid`, with `hooks` active (`capped`: with
        the model's output transform, Gemma 2's soft-capping; else before it)."""
        with torch.no_grad(), self.bridge.hooks(fwd_hooks=hooks):
            for layer in range(start, self.n_layers):
                args, kwargs = _expanded(self.call_args, self.call_kwargs, resid.shape[0] // self.base_rows)
                out = self.bridge.blocks[layer](resid, *args, **kwargs)
                resid = out[0] if isinstance(out, tuple) else out
            final = self.bridge.ln_final(rows_at(resid, end)[:, None])  # [rows, 1, d_model]
            logits = self.bridge.unembed(final)
            return (self.bridge.adapter.apply_output_logits_transform(logits) if capped else logits)[:, 0]


def _is_cache(value) -> bool:
    return type(value).__name__.endswith("Cache")


def _expanded(args: tuple, kwargs: dict, copies: int) -> tuple[tuple, dict]:
    """Per-prompt tensors repeated for `copies` stacked copies of the batch (copy-major): an
    attention mask [batch, ...], rotary (cos, sin) [batch, ...], ALiBi [batch * head, ...]."""

    def grow(value):
        if isinstance(value, tuple):
            return tuple(grow(v) for v in value)
        if isinstance(value, Tensor) and value.ndim > 1 and value.shape[0] > 1 and copies > 1:
            return value.repeat(copies, *[1] * (value.ndim - 1))
        return value

    return tuple(grow(a) for a in args), {k: grow(v) for k, v in kwargs.items()}


def _stacked_head_hook(layer: int, heads: list[int], values: Values, masks: list[Tensor]):
    """Copy k of a stacked batch gets head heads[k] replaced under masks[k]."""
    value = values.z[layer]

    def hook(z: Float[Tensor, "rows pos head d_head"], hook) -> Tensor:
        per_copy = z.reshape(len(heads), -1, *z.shape[1:])  # [copy, batch, pos, head, d_head]
        out = [replace_head(per_copy[k], h, value, masks[k]) for k, h in enumerate(heads)]
        return torch.cat(out, 0)  # [copy * batch, pos, head, d_head]

    return z_hook(layer), hook


def _head_groups(sites: list[tuple[int, Site]], batch_rows: int) -> Iterator[list[tuple[int, Site]]]:
    per_pass = max(1, MAX_ROWS // batch_rows)
    by_layer: dict[int, list[tuple[int, Site]]] = {}
    for item in sites:
        by_layer.setdefault(item[1].layer, []).append(item)
    for layer in sorted(by_layer):
        group = by_layer[layer]
        for i in range(0, len(group), per_pass):
            yield group[i : i + per_pass]


def _head_pass(runner: InterventionRunner, pre: Tensor, group, values: Values, batch: Batch) -> Tensor:
    layer, copies = group[0][1].layer, len(group)
    resid = pre[layer].repeat(copies, 1, 1)  # [copy * batch, pos, d_model]
    hook = _stacked_head_hook(
        layer, [s.head for _, s in group], values, [site_mask(s, batch) for _, s in group]
    )
    logits = runner.run(resid, layer, batch.end.repeat(copies), [hook])
    metric = logit_diff(logits.float().cpu(), batch.answers.repeat(copies), batch.contrasts.repeat(copies))
    return metric.reshape(copies, -1)  # [copy, batch]


def sweep_sites(
    bridge, batch_list: list[Batch], donor: DonorFn, sites: list[Site], progress: bool = True
) -> tuple[Float[Tensor, "site"], float]:
    """The same numbers as `reference_sweep`, resuming from cached residuals in stacked passes."""
    result = sweep_sites_per_prompt(bridge, batch_list, donor, sites, progress)
    return result.metrics, result.clean


def sweep_sites_per_prompt(
    bridge, batch_list: list[Batch], donor: DonorFn, sites: list[Site], progress: bool = True
) -> SweepResult:
    """`sweep_sites`, with the metric of every prompt kept (the means are the same numbers)."""
    runner = InterventionRunner(bridge)
    sums = torch.zeros(len(sites), dtype=torch.float64)
    per_prompt, clean_per_prompt = _per_prompt(sites, batch_list)
    clean, n = 0.0, 0
    work = sum(blocks_run(s, runner) for s in sites) * len(batch_list)  # an ETA that holds
    bar = tqdm(total=work, desc="knockouts", unit="block", leave=False, disable=not progress or None)
    for batch in batch_list:
        cached = runner.clean_pass(batch.tokens, batch.end)
        base = end_metric(cached.logits, batch)  # [batch]
        clean += float(base.sum())
        clean_per_prompt[batch.start : batch.stop] = base
        batch_sums, metrics = _batch_sums(runner, cached, donor(batch), batch, sites, bar)
        sums += batch_sums
        per_prompt[:, batch.start : batch.stop] = metrics
        n += batch.tokens.shape[0]
    bar.close()
    return SweepResult((sums / n).float(), clean / n, per_prompt, clean_per_prompt)


def _batch_sums(
    runner: InterventionRunner, cached: Cached, values: Values, batch: Batch, sites, bar
) -> tuple[Float[Tensor, "site"], Float[Tensor, "site batch"]]:
    """Each site's metric summed over the batch (float32 sums, to float64), and per prompt."""
    sums = torch.zeros(len(sites), dtype=torch.float64)
    metrics = torch.zeros(len(sites), batch.tokens.shape[0])
    heads = [(i, s) for i, s in enumerate(sites) if s.head is not None]
    for group in _head_groups(heads, batch.tokens.shape[0]):
        rows = [i for i, _ in group]
        passed = _head_pass(runner, cached.pre, group, values, batch)  # [copy, batch]
        metrics[rows], sums[rows] = passed, passed.sum(1).double()
        bar.update(sum(blocks_run(s, runner) for _, s in group))
    for i, site in ((i, s) for i, s in enumerate(sites) if s.head is None):
        metric = mlp_site_metric(runner, cached, site, values, batch)  # [batch]
        metrics[i], sums[i] = metric, float(metric.sum())
        bar.update(blocks_run(site, runner))
    return sums, metrics


def blocks_run(site: Site, runner: InterventionRunner) -> int:
    """Blocks one resumed pass runs for `site`: the progress bar counts these, not sites, since a
    head of layer 0 costs twelve times one of layer 11 in GPT-2 small."""
    start = site.layer + 1 if site.head is None and runner.sequential else site.layer
    return max(1, runner.n_layers - start)  # the last MLP: only the final norm and unembedding


def mlp_site_metric(
    runner: InterventionRunner, cached: Cached, site: Site, values: Values, batch: Batch
) -> Tensor:
    """Metric per prompt with one MLP replaced: resume at the next block from resid_mid + mlp_out,
    or, in a parallel block, at the block itself with its MLP output replaced by a hook."""
    mlp_out = replace_mlp(cached.mlp[site.layer], values.mlp[site.layer], site_mask(site, batch))
    if cached.mid is None:
        hook = (mlp_hook(site.layer), lambda act, hook: mlp_out.to(act))
        return end_metric(runner.run(cached.pre[site.layer], site.layer, batch.end, [hook]), batch)
    resid = cached.mid[site.layer] + mlp_out  # the sum the block itself forms
    return end_metric(runner.run(resid, site.layer + 1, batch.end, []), batch)


# ---- a first-order screen ---------------------------------------------------------------


def gradient_pass(
    bridge, batch: Batch, names: list[str]
) -> tuple[dict[str, Tensor], dict[str, Tensor], float]:
    """Activations at the hooks `names`, the gradients of the batch's summed metric there, and
    that summed metric: one forward and one backward pass."""
    acts: dict[str, Tensor] = {}

    def keeper(name: str) -> Callable:
        def keep(act: Tensor, hook) -> Tensor:
            acts[name] = act  # in the graph: the parameters require grad
            return act

        return keep

    hooks = [(name, keeper(name)) for name in names]
    with torch.enable_grad(), end_rows_only(bridge, batch.end):
        logits = bridge.run_with_hooks(batch.tokens.to(bridge.cfg.device), fwd_hooks=hooks)
        ends = logits[:, 0].float()  # [batch, 1, d_vocab]: the end rows only
        metric = logit_diff(ends, batch.answers.to(ends.device), batch.contrasts.to(ends.device)).sum()
        grads = torch.autograd.grad(metric, [acts[n] for n in names])  # leaves the parameters' .grad alone
    return {n: acts[n].detach() for n in names}, dict(zip(names, grads, strict=True)), float(metric.detach())


def linear_sweep(
    bridge, batch_list: list[Batch], donor: DonorFn, sites: list[Site]
) -> tuple[Float[Tensor, "site"], float]:
    """A first-order estimate of `sweep_sites`' numbers: the clean metric plus, per site,
    sum over its masked positions of (value - activation) . d metric / d activation; one forward
    and one backward pass per batch whatever the number of sites. An approximation."""
    layers = sorted({s.layer for s in sites})
    names = [z_hook(layer) for layer in layers] + [mlp_hook(layer) for layer in layers]
    sums = torch.zeros(len(sites), dtype=torch.float64)
    clean, n = 0.0, 0
    for batch in batch_list:
        values = donor(batch)
        acts, grads, metric = gradient_pass(bridge, batch, names)
        clean += metric
        for i, site in enumerate(sites):
            sums[i] += _first_order(site, acts, grads, values, site_mask(site, batch))
        n += batch.tokens.shape[0]
    return ((clean + sums) / n).float(), clean / n


def _first_order(
    site: Site, acts: dict, grads: dict, values: Values, mask: Bool[Tensor, "batch pos"]
) -> float:
    """(value - activation) . gradient of one site, summed over prompts and its masked positions."""
    if site.head is None:
        name, value = mlp_hook(site.layer), values.mlp[site.layer]  # [batch, pos, d_model]
        act, grad = acts[name], grads[name]
    else:
        name, value = z_hook(site.layer), values.z[site.layer][:, :, site.head]  # [batch, pos, d_head]
        act, grad = acts[name][:, :, site.head], grads[name][:, :, site.head]
    change = ((value.to(act) - act) * grad).sum(-1)  # [batch, pos]
    return float((change * mask.to(change.device)).double().sum())


def activations(bridge, tokens: Int[Tensor, "batch pos"]) -> Values:
    """Every layer's hook_z and hook_mlp_out for `tokens`, from one forward pass."""
    kept: dict[str, list[Tensor]] = {"z": [], "mlp": []}
    n_layers = len(bridge.blocks)
    device = bridge.cfg.device  # one device for all layers: a split model's blocks run on several
    keep = lambda key: lambda a, hook: kept[key].append(a.to(device))  # noqa: E731
    hooks = [(z_hook(layer), keep("z")) for layer in range(n_layers)]
    hooks += [(mlp_hook(layer), keep("mlp")) for layer in range(n_layers)]
    with torch.no_grad():
        bridge.run_with_hooks(tokens.to(device), fwd_hooks=hooks, stop_at_layer=n_layers)
    return Values(torch.stack(kept["z"]), torch.stack(kept["mlp"]))
