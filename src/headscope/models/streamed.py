"""Weights streamed from a checkpoint's safetensors files or a GGUF file, without booting the model.

The head atlas reads the weights only: each layer's value and output matrices, the norms' gains,
the unembedding, and the embedding rows of its source tokens run through block 0 (the `token` or
`block0` embedding). `stream_model` reads exactly that from a Hugging
Face folder through `safetensors.safe_open` (memory-mapped), one tensor at a time, converting each
to the requested precision as it is read: the peak is the `Weights` kept (the unembedding among
them) plus one layer in flight, never the model in float32. The atlas takes the `StreamedModel` in
place of a booted `Model` (`headscope atlas --stream`, `hs.atlas(folder, stream=True)`).

A `.gguf` file streams the same way (`models.gguf_files.GGUFCheckpoint`): each tensor dequantised
on its own, by the names and layouts transformers' GGUF loader gives it, so the file streams to
the Weights of its dequantised safetensors twin. Its peak adds one layer tensor dequantised in
float32 (block 0's largest, its MLP's, when block 0 is built) and CHUNK_BYTES of the unembedding's rows.

What it reads and where is not new code per family:
- TransformerLens's adapter for the config (built from the config alone, no weights) names the
  modules (`component_mapping`: blocks, norms, attention projections, embedding, unembedding) and
  gives the config the `Architecture` record is derived from (`architecture_from`, shared with a
  booted bridge);
- `ATTENTION_LAYOUTS` says, per family, how the value and output projections are stored in the
  file (separate `nn.Linear`s; GPT-2's `Conv1D` with q|k|v side by side; one fused projection
  with each key/value group's queries, key and value together: GPT-NeoX, BLOOM, Falcon);
- the effective embedding runs the family's own Hugging Face code: a one-layer copy of the model
  built from its config, holding the checkpoint's block 0 and the source tokens' embedding rows
  (its vocabulary is those rows), with the hooks `embedding.token_vectors` sets on the bridge.

The reading is the same layout as `models.weights.weights_from_bridge` (per query head, effective
gains, zeros for absent biases); tests/models/test_streamed.py checks it against that on every
family's test model.

Memory: the atlas's resident peak, whole process, with `b` bytes per number of the precision asked
for (2 for bfloat16), `V` the vocabulary, `L x H` heads of `d_head`, `d` = d_model, is about

    P + b (V d + 2 L H d_head d) + max(R, S)

- P, the process (Python, torch, transformers, the tokenizer): about 0.6 GB;
- b V d, the unembedding (the embedding's rows where tied), kept in `dtype`: the OV kernel converts
  it `COLUMNS` columns at a time (`ov_kernel.Readout`), never a float32 copy of it;
- b 2 L H d_head d, every layer's W_V (per query head: a key/value head's repeated for its group)
  and W_O;
- R, while reading: at most 2 x CHUNK_BYTES of the files' pages (`Checkpoint`: each read maps its
  file anew and drops the mapping, as a mapped page once read counts in the resident set), or
  block 0 built in float32 beside its tensors read in float32 (8 bytes a parameter of block 0);
- S, while scoring: per worker thread (`--threads`), its block of heads' circuits in float32
  (`ov_kernel.HEAD_BLOCK_BYTES`, 256 MB) and their temporaries: 0.55 to 0.8 GB a thread measured
  (with bfloat16 products, `--kernel-dtype`, the circuits' bfloat16 copy too: up to 128 MB more,
  not measured).

Measured (GB = 2^30 bytes; benchmarks/results/field_shapes.md), bfloat16, 2 threads: Gemma-2-2B's
shape 0.6 + 1.10 + 0.46 + max(0.58, 1.1) = 3.3 GB, 3.32 GB at peak (before the reads dropped their
mappings and the kernel its float32 copy of the unembedding: 5.46 GB); Llama-3.1-8B's 0.6 + 0.98 +
2.0 + max(1.63, 1.6) = 5.2 GB, 5.23 GB at peak.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from headscope.models.architecture import (
    OPTIONAL_BLOCK_PARTS,
    OPTIONAL_MODEL_PARTS,
    Architecture,
    architecture_from,
)
from headscope.models.checks import (
    ModelError,
    check_model_dir,
    check_tokenizer,
    expected_shapes,
    weight_files,
)
from headscope.models.devices import check_threads, choose_threads
from headscope.models.gguf_files import GGUFCheckpoint, check_streamable, gguf_tokenizer, hf_config, is_gguf
from headscope.models.loading import ModelIdentity, _sha256, resolve
from headscope.models.weights import Weights, _agree, normalize
from headscope.tasks.dataset import Tokenization

AttentionLayout = Literal["linear", "conv1d_joint", "grouped_joint"]

# How each family stores its value and output projections (the families the test models cover):
# "linear": separate nn.Linear weights [out, in] (v: [kv_head * d_head, d_model]);
# "conv1d_joint": GPT-2's Conv1D weights [in, out], q | k | v side by side in one;
# "grouped_joint": one nn.Linear for q, k and v, rows grouped per key/value head: the group's
#   queries, then its key, then its value (GPT-NeoX and BLOOM: one query per group; Falcon).
ATTENTION_LAYOUTS: dict[str, AttentionLayout] = {
    "gpt2": "conv1d_joint",
    "opt": "linear",
    "llama": "linear",
    "mistral": "linear",
    "qwen2": "linear",
    "qwen3": "linear",
    "gemma": "linear",
    "gemma2": "linear",
    "gemma3_text": "linear",
    "gpt_neox": "grouped_joint",
    "gptj": "linear",
    "gpt_neo": "linear",
    "phi": "linear",
    "falcon": "grouped_joint",
    "bloom": "grouped_joint",
}
Precision = Literal["float32", "bfloat16"]
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16}
CHUNK_BYTES = 1 << 26  # a large tensor is converted this many bytes of its rows at a time
TOKEN_BATCH = 4096


# ---- the checkpoint's tensors, one at a time ------------------------------------------------


class Checkpoint:
    """The tensors of a folder's safetensors files, memory-mapped, read one at a time as float32,
    by the names Hugging Face's loader gives them (its renamings applied, the base model's prefix
    optional: `model.layers.0...` finds `layers.0...` in a base model's files).

    The handles open in `stack` give the names and shapes (the files' headers); each read maps its
    file anew, copies the tensor out and drops that mapping (safetensors' tensors are views of it),
    so the pages it touched leave the process: a mapped page once read counts in the resident set
    while the file stays mapped, and reading through the long-lived handles kept every tensor read
    (the unembedding among them) resident twice, as its copy and as file pages."""

    def __init__(self, files: list[Path], stack: ExitStack, renames: list[tuple[str, str]], prefix: str):
        from safetensors import safe_open

        self._prefix = f"{prefix}."
        self._where: dict[str, tuple[object, str, Path]] = {}
        for path in files:
            handle = stack.enter_context(safe_open(str(path), framework="pt"))
            for stored in handle.keys():  # noqa: SIM118  (a safe_open handle is no dict)
                self._where[self._key(_renamed(stored, renames))] = (handle, stored, path)

    def _key(self, name: str) -> str:
        return name.removeprefix(self._prefix) if self._prefix != "." else name

    def _slice(self, name: str):
        handle, stored, _ = self._where[self._key(name)]
        return handle.get_slice(stored)

    @contextmanager
    def _reading(self, name: str) -> Iterator:
        """Tensor `name`'s slice through a mapping of its file of its own, unmapped after the block."""
        from safetensors import safe_open

        _, stored, path = self._where[self._key(name)]
        with safe_open(str(path), framework="pt") as handle:
            yield handle.get_slice(stored)

    def has(self, name: str) -> bool:
        return self._key(name) in self._where

    def read(self, name: str, dtype: torch.dtype = torch.float32) -> Float[Tensor, "..."]:
        """Tensor `name` in `dtype`, converted CHUNK_BYTES of its rows at a time from the file's
        precision (never the whole tensor in two precisions at once), each chunk through a mapping
        of its own, dropped after: the file pages resident while it reads are a chunk's or two."""
        shape = tuple(self._slice(name).get_shape())
        if len(shape) < 2:
            with self._reading(name) as part:  # a copy: safetensors' tensors are views of the mapping
                return part[:].to(dtype, copy=True)
        out = torch.empty(shape, dtype=dtype)
        step = max(1, CHUNK_BYTES // (out.element_size() * out[0].numel()))
        for start in range(0, shape[0], step):
            with self._reading(name) as part:
                out[start : start + step] = part[start : start + step]
        return out

    def optional(self, name: str) -> Tensor | None:
        return self.read(name) if self.has(name) else None

    def rows(self, name: str, tokens: Int[Tensor, "token"]) -> Float[Tensor, "token d_model"]:
        """Rows `tokens` of matrix `name` (the embedding rows of some tokens), float32."""
        width = int(self._slice(name).get_shape()[1])
        with self._reading(name) as part:
            rows = [part[int(t) : int(t) + 1] for t in tokens.tolist()]
        return torch.cat(rows).float() if rows else torch.zeros(0, width)


Tensors = Checkpoint | GGUFCheckpoint  # a checkpoint's tensors by Hugging Face's names


def _renamed(key: str, renames: list[tuple[str, str]]) -> str:
    for pattern, replacement in renames:
        key = re.sub(pattern, replacement, key)
    return key


@contextmanager
def opened(source: Path, hf) -> Iterator[Tensors]:
    """The checkpoint of a folder or a GGUF file (`hf`: its config), its files open
    (memory-mapped) while the block runs."""
    if is_gguf(str(source)):
        yield GGUFCheckpoint(source, hf)
        return
    _, _, _, prefix, renames = expected_shapes(source)  # the config's model on the meta device
    with ExitStack() as stack:
        yield Checkpoint(weight_files(source), stack, renames, prefix)


# ---- where a family keeps what the scores read ---------------------------------------------


@dataclass(frozen=True)
class Names:
    """The checkpoint's module paths (from TransformerLens's adapter) and the attention layout."""

    blocks: str
    attn: str
    v: str  # the value projection, or the joint q/k/v projection
    o: str
    ln1: str | None
    ln2: str | None
    ln1_post: str | None
    ln_final: str
    embed: str
    unembed: str
    pos_embed: str | None
    layout: AttentionLayout

    def block(self, layer: int, *path: str | None) -> str:
        return ".".join([self.blocks, str(layer), *[p for p in path if p]])


@dataclass(frozen=True)
class Plan:
    """What TransformerLens derives from the config alone: its config and the module names."""

    cfg: object
    arch: Architecture
    names: Names


def _adapter(hf):
    from transformer_lens.factories import architecture_adapter_factory
    from transformer_lens.model_bridge.sources.transformers.source import (
        build_bridge_config_from_hf,
        determine_architecture_from_hf_config,
    )

    config = build_bridge_config_from_hf(hf, determine_architecture_from_hf_config(hf), "streamed", None)
    return architecture_adapter_factory.ArchitectureAdapterFactory.select_architecture_adapter(config)


def _name(mapping: dict, key: str) -> str | None:
    part = mapping.get(key)
    return None if part is None else part.name


def plan_of(hf) -> Plan:
    """The streaming plan of a Hugging Face config; a ModelError for a family not covered."""
    family = str(getattr(hf, "model_type", "unknown"))
    if family not in ATTENTION_LAYOUTS:
        raise ModelError(
            f"streaming does not read {family} checkpoints yet (covered: {', '.join(ATTENTION_LAYOUTS)}); "
            "load it in memory instead: drop --stream (hs.load_model)"
        )
    adapter = _adapter(hf)
    top, block = adapter.component_mapping, adapter.component_mapping["blocks"].submodules
    attn = block["attn"].submodules
    names = Names(
        blocks=top["blocks"].name,
        attn=block["attn"].name,
        v=attn["qkv"].name if ATTENTION_LAYOUTS[family] != "linear" else attn["v"].name,
        o=attn["o"].name,
        ln1=_name(block, "ln1"),
        ln2=_name(block, "ln2"),
        ln1_post=_name(block, "ln1_post"),
        ln_final=top["ln_final"].name,
        embed=top["embed"].name,
        unembed=top["unembed"].name,
        pos_embed=_name(top, "pos_embed"),
        layout=ATTENTION_LAYOUTS[family],
    )
    parts = [p for p in OPTIONAL_BLOCK_PARTS if p in block], [p for p in OPTIONAL_MODEL_PARTS if p in top]
    return Plan(adapter.cfg, architecture_from(adapter.cfg, hf, *parts), names)


# ---- one layer's value and output matrices --------------------------------------------------


def _value(layer: dict[str, Tensor | None], names: Names, arch: Architecture, d_head: int):
    """(W_V [kv_head, d_model, d_head], b_V [kv_head, d_head] or None) in the stored layout."""
    w, b, kv = layer["v"], layer["v_bias"], arch.n_kv_heads
    if names.layout == "linear":
        W_V = w.view(kv, d_head, -1).transpose(1, 2)  # [kv_head, d_head, d_model] -> [kv, d, d_head]
        return W_V, None if b is None else b.view(kv, d_head)
    if names.layout == "conv1d_joint":
        d_model, width = w.shape[0], arch.n_heads * d_head
        W_V = w[:, 2 * width :].reshape(d_model, kv, d_head).permute(1, 0, 2)  # [d, kv, e] -> [kv, d, e]
        return W_V, None if b is None else b[2 * width :].view(kv, d_head)
    per = arch.group_size + 2  # a group's queries, its key, its value
    W_V = w.view(kv, per, d_head, -1)[:, -1].transpose(1, 2)  # [kv, per, e, d] -> [kv, d, e]
    return W_V, None if b is None else b.view(kv, per, d_head)[:, -1]


def _output(w: Tensor, names: Names, arch: Architecture, d_head: int) -> Float[Tensor, "head d_head d_model"]:
    if names.layout == "conv1d_joint":  # Conv1D: [in = head * d_head, d_model]
        return w.reshape(arch.n_heads, d_head, -1)
    return w.T.reshape(arch.n_heads, d_head, -1)  # Linear [d_model, head * d_head] -> [head, e, d]


def _norm(ckpt: Tensors, path: str | None) -> tuple[Tensor | None, Tensor | None]:
    if path is None:
        return None, None
    return ckpt.optional(f"{path}.weight"), ckpt.optional(f"{path}.bias")


def _gain(stored: Tensor | None, arch: Architecture, d_model: int) -> Tensor:
    """The effective gain `offset + w` (a unit gain where the model has no such norm)."""
    return torch.ones(d_model) if stored is None else stored + arch.gain_offset


def _or_zeros(x: Tensor | None, size: int) -> Tensor:
    return torch.zeros(size) if x is None else x


def read_layer(ckpt: Tensors, plan: Plan, layer: int) -> dict[str, Tensor | None]:
    """Layer `layer`'s tensors in the Weights layout (per query head, effective gains), float32."""
    n, arch, d, e = plan.names, plan.arch, int(plan.cfg.d_model), int(plan.cfg.d_head)
    (ln1_w, ln1_b), (ln2_w, ln2_b) = _norm(ckpt, n.block(layer, n.ln1)), _norm(ckpt, n.block(layer, n.ln2))
    post_w, _ = _norm(ckpt, n.block(layer, n.ln1_post)) if arch.attn_out_norm else (None, None)
    stored = {"v": ckpt.read(n.block(layer, n.attn, n.v, "weight"))}
    stored["v_bias"] = ckpt.optional(n.block(layer, n.attn, n.v, "bias"))
    W_V, b_V = _value(stored, n, arch, e)
    W_O = _output(ckpt.read(n.block(layer, n.attn, n.o, "weight")), n, arch, e)
    g = arch.group_size
    return {
        "ln1_w": _gain(ln1_w, arch, d),
        "ln1_b": _or_zeros(ln1_b, d),
        "ln2_w": _gain(ln2_w, arch, d),
        "ln2_b": _or_zeros(ln2_b, d),
        "W_V": W_V.repeat_interleave(g, dim=0),  # each query head takes its group's
        "b_V": _or_zeros(b_V, (arch.n_kv_heads, e)).repeat_interleave(g, dim=0),
        "W_O": W_O,
        "b_O": _or_zeros(ckpt.optional(n.block(layer, n.attn, n.o, "bias")), d),
        "attn_out_w": _gain(post_w, arch, d) if arch.attn_out_norm else None,
    }


def _unembedding(ckpt: Tensors, plan: Plan, dtype: torch.dtype) -> Float[Tensor, "d_vocab d_model"]:
    """The unembedding's rows in `dtype`: lm_head's own, or the embedding's where the model ties them."""
    own = f"{plan.names.unembed}.weight"
    if plan.arch.tied_unembedding:
        return ckpt.read(f"{plan.names.embed}.weight", dtype)
    if not ckpt.has(own):
        raise ModelError(
            f"the checkpoint has no {own}, the unembedding of this untied {plan.arch.family} model"
        )
    return ckpt.read(own, dtype)


LAYER_NAMES = ("ln1_w", "ln1_b", "ln2_w", "ln2_b", "W_V", "b_V", "W_O", "b_O")


def read_weights(ckpt: Tensors, plan: Plan, dtype: torch.dtype = torch.float32) -> Weights:
    """The Weights of a checkpoint, each layer read, converted to `dtype` and dropped in turn."""
    stacked: dict[str, Tensor] = {}
    names = LAYER_NAMES + (("attn_out_w",) if plan.arch.attn_out_norm else ())
    for layer in range(int(plan.cfg.n_layers)):
        read = read_layer(ckpt, plan, layer)
        for name in names:
            if name not in stacked:  # [n_layers, ...] in dtype, filled a layer at a time
                stacked[name] = torch.empty(int(plan.cfg.n_layers), *read[name].shape, dtype=dtype)
            stacked[name][layer] = read[name]
    d = int(plan.cfg.d_model)
    final_w, final_b = _norm(ckpt, plan.names.ln_final)
    W_U = _unembedding(ckpt, plan, dtype).T  # [d_model, d_vocab], a view of the rows
    b_U = ckpt.optional(f"{plan.names.unembed}.bias")
    return Weights(
        **{name: stacked[name] for name in LAYER_NAMES},
        lnf_w=_gain(final_w, plan.arch, d).to(dtype),
        lnf_b=_or_zeros(final_b, d).to(dtype),
        W_U=W_U,
        b_U=_or_zeros(b_U, W_U.shape[1]).to(dtype),
        eps=float(plan.cfg.eps),
        normalization=plan.arch.norm,
        attn_out_w=stacked.get("attn_out_w"),
        arch=plan.arch,
    )


# ---- block 0 on a few tokens, by the family's own code ----------------------------------------


def _one_layer_config(hf, n_rows: int):
    """The config of a one-layer model whose vocabulary is `n_rows` embedding rows."""
    small = copy.deepcopy(hf)
    small.num_hidden_layers = 1
    if isinstance(getattr(small, "layer_types", None), list):
        small.layer_types = small.layer_types[:1]
    small.vocab_size = max(n_rows, 1)
    small.pad_token_id = None  # a padding row past the few rows kept is none of them
    return small


def block0_model(
    ckpt: Tensors, plan: Plan, hf, tokens: Int[Tensor, "token"], dtype: torch.dtype
) -> nn.Module:
    """The family's own one-layer model holding the checkpoint's block 0 (and every small module
    before and after it) and, as its vocabulary, the embedding rows of `tokens`."""
    from transformers import AutoModelForCausalLM

    config = _one_layer_config(hf, len(tokens))
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    embed = f"{plan.names.embed}.weight"
    state = {embed: ckpt.rows(embed, tokens)}
    for name, _ in model.named_parameters(remove_duplicate=True):
        if name == embed or name.startswith(f"{plan.names.unembed}."):  # rows kept; the head unused
            continue
        if not ckpt.has(name):
            raise ModelError(
                f"the checkpoint has no {name}, which block 0 of a {plan.arch.family} model needs"
            )
        state[name] = ckpt.read(name)
    state |= {name: ckpt.read(name) for name, _ in model.named_buffers() if ckpt.has(name)}
    model.load_state_dict(state, strict=False)
    return model.to(dtype).eval()


def _zero(module, args, output) -> Tensor:
    return torch.zeros_like(output)  # a projection's or a position embedding's output


def _rows_through_block0(model: nn.Module, plan: Plan, n: int, token_only: bool) -> Tensor:
    """Block 0's output [row, d_model] for each vocabulary row alone at position 0; `token_only`:
    no position (a learned position embedding zeroed) and no attention (its output zeroed)."""
    names, kept = plan.names, []
    hooks = [(names.block(0), lambda m, a, out: kept.append(_first(out)[:, 0].detach().float()))]
    if token_only:
        hooks.append((names.block(0, names.attn, names.o), _zero))
        if plan.arch.positional == "learned" and names.pos_embed is not None:
            hooks.append((names.pos_embed, _zero))
    handles = [model.get_submodule(path).register_forward_hook(fn) for path, fn in hooks]
    try:
        with torch.no_grad():
            for start in range(0, n, TOKEN_BATCH):
                model(torch.arange(start, min(n, start + TOKEN_BATCH))[:, None])  # [row, pos=1]
    finally:
        for handle in handles:
            handle.remove()
    return torch.cat(kept) if kept else torch.zeros(0, int(plan.cfg.d_model))


def _first(output) -> Tensor:
    return output[0] if isinstance(output, tuple) else output


# ---- checking the reading against the family's own modules ----------------------------------

CHECK_ROWS = 6  # embedding rows block 0 is run on to check the reading


def _run_keeping(model: nn.Module, paths: dict[str, str], n: int) -> dict[str, tuple[Tensor, Tensor]]:
    """(input, output) of each module `paths[key]` on a forward of vocabulary rows 0..n-1 alone."""
    seen: dict[str, tuple[Tensor, Tensor]] = {}

    def keep(key: str) -> Callable:
        def hook(module, args, out) -> None:  # returns None: the output is left as it is
            seen[key] = (args[0], _first(out))

        return hook

    handles = [model.get_submodule(path).register_forward_hook(keep(key)) for key, path in paths.items()]
    try:
        with torch.no_grad():
            model(torch.arange(n)[:, None])  # [row, pos=1]: attention weight 1 on the row itself
    finally:
        for handle in handles:
            handle.remove()
    return seen


def check_streamed(model: nn.Module, plan: Plan, weights: Weights) -> None:
    """Block 0's input norm, its heads' values and output projection, the attention output norm
    and the final norm computed from `weights`, against the family's own modules in `model`
    (`block0_model` of CHECK_ROWS rows): an ArchitectureError names any difference, as
    `models.weights.check_weights` does for a booted model."""
    n, arch, eps, kind = plan.names, plan.arch, weights.eps, weights.normalization
    f = lambda t: t.detach().float()  # noqa: E731
    seen = _run_keeping(model, {"ln1": n.block(0, n.ln1), "o": n.block(0, n.attn, n.o)}, CHECK_ROWS)
    (x, normed), (z, out) = seen["ln1"], seen["o"]  # x, normed: [row, 1, d]; z: [row, 1, head * d_head]
    ours = normalize(f(x), f(weights.ln1_w[0]), f(weights.ln1_b[0]), eps, kind)
    _agree("the attention's input norm", ours, normed, arch)
    v = torch.einsum("bpd,hde->bphe", f(normed), f(weights.W_V[0])) + f(weights.b_V[0])  # [row, 1, head, e]
    _agree("the heads' values", v.flatten(2), z, arch)
    heads = f(z).view(*z.shape[:2], weights.n_heads, weights.d_head)  # [row, 1, head, d_head]
    o = torch.einsum("bphe,hed->bpd", heads, f(weights.W_O[0])) + f(weights.b_O[0])
    _agree("the attention output projection", o, out, arch)
    probe = x[:, 0]  # [row, d_model]
    with torch.no_grad():
        theirs = model.get_submodule(n.ln_final)(probe)
        _agree(
            "the final norm", normalize(f(probe), f(weights.lnf_w), f(weights.lnf_b), eps, kind), theirs, arch
        )
        if weights.attn_out_w is not None:
            theirs = model.get_submodule(n.block(0, n.ln1_post))(probe)
            _agree(
                "the attention output norm",
                normalize(f(probe), f(weights.attn_out_w[0]), None, eps, kind),
                theirs,
                arch,
            )


# ---- the streamed model -----------------------------------------------------------------------


@dataclass(frozen=True)
class StreamedModel:
    """What the weights-only analyses read of a model, streamed from its folder or GGUF file
    (`source`): the Weights, the tokenizer, the identity, and block 0 run on the embedding rows
    asked for."""

    source: Path
    weights: Weights
    tokens: Tokenization
    identity: ModelIdentity
    plan: Plan
    hf_config: object
    dtype: torch.dtype
    # A GGUF file's tensor table and name map (memory-mapped, no tensor held), kept for block 0:
    # transformers' name map takes seconds to build (6 s on a 20-layer Llama).
    gguf: GGUFCheckpoint | None = None

    @property
    def arch(self) -> Architecture:
        return self.plan.arch

    @property
    def n_layers(self) -> int:
        return self.identity.n_layers

    @property
    def n_heads(self) -> int:
        return self.identity.n_heads

    @property
    def device(self) -> torch.device:
        """Where the scores run: the CPU, where the weights were read to."""
        return self.weights.W_U.device

    def _block0(self, tokens: Int[Tensor, "token"], token_only: bool) -> Float[Tensor, "token d_model"]:
        if len(tokens) == 0:
            return torch.zeros(0, self.identity.d_model)
        if self.gguf is not None:
            model = block0_model(self.gguf, self.plan, self.hf_config, tokens, self.dtype)
        else:
            with opened(self.source, self.hf_config) as ckpt:
                model = block0_model(ckpt, self.plan, self.hf_config, tokens, self.dtype)
        return _rows_through_block0(model, self.plan, len(tokens), token_only)

    def token_vectors(self, tokens: Int[Tensor, "token"]) -> Float[Tensor, "token d_model"]:
        """`W_E[t] + MLP_0(LN2_0(W_E[t]))` (embedding.token_vectors), from block 0 alone."""
        return self._block0(tokens, token_only=True)

    def block0_vectors(self, tokens: Int[Tensor, "token"]) -> Float[Tensor, "token d_model"]:
        """Block 0's output for each token alone at position 0 (embedding.block0_vectors)."""
        return self._block0(tokens, token_only=False)

    def __repr__(self) -> str:
        i = self.identity
        return f"StreamedModel({i.name!r}, {i.n_layers} layers x {i.n_heads} heads, vocab {i.d_vocab})"


def _base_tokenizer(source: Path):
    """The tokenizer as TransformerLens's bridge loads it from a folder, or as `load_model` reads
    a GGUF file's."""
    from transformer_lens.utilities.hf_utils import autotokenizer_with_special_token_compat
    from transformers import AutoTokenizer

    if is_gguf(str(source)):
        return gguf_tokenizer(source)
    try:
        return autotokenizer_with_special_token_compat(
            str(source), auto_tokenizer=AutoTokenizer, add_bos_token=True
        )
    except ValueError:
        return AutoTokenizer.from_pretrained(str(source))


def _tokenizer(source: Path, cfg):
    """The tokenizer as TransformerLens's bridge configures it."""
    from transformer_lens.model_bridge.sources._bridge_builder import configure_tokenizer

    return configure_tokenizer(_base_tokenizer(source), cfg)


def _source(spec: str) -> Path:
    """The folder, or the GGUF file, a spec streams from."""
    source, path = resolve(spec)
    if source == "gguf":
        check_streamable(path, spec)
        return path
    if source not in ("local", "organism"):
        raise ModelError(
            f"model={spec!r}: streaming reads a local Hugging Face folder's safetensors files or a "
            ".gguf file; give the folder or the file, or load this model in memory (drop --stream)"
        )
    check_model_dir(path)
    if not weight_files(path):
        raise ModelError(
            f"{path}: streaming reads safetensors files only; convert the weights to safetensors"
        )
    return path


def stream_model(
    spec: str | os.PathLike, dtype: Precision = "float32", threads: int | None = None
) -> StreamedModel:
    """The weights-only view of a local Hugging Face folder or a GGUF file, read from its
    safetensors files (or the GGUF file) one tensor at a time in `dtype` ("float32" or "bfloat16"),
    never booting the model; `threads`: CPU threads torch uses from here on (None: chosen by the
    model's width, as `load_model` does)."""
    from transformers import AutoConfig

    if not isinstance(spec, str | os.PathLike):
        raise ModelError(
            f"model={type(spec).__name__}: streaming reads a local folder's files or a GGUF file; "
            "give the folder's path or the file's"
        )
    spec = os.fspath(spec)
    check_threads(threads)
    if dtype not in DTYPES:
        raise ModelError(f"dtype={dtype!r}: streaming reads float32 or bfloat16")
    source = _source(spec)
    hf = hf_config(source) if is_gguf(str(source)) else AutoConfig.from_pretrained(str(source))
    plan = plan_of(hf)
    with opened(source, hf) as ckpt:
        weights = read_weights(ckpt, plan, DTYPES[dtype])
        rows = torch.randperm(int(plan.cfg.d_vocab), generator=torch.Generator().manual_seed(0))[:CHECK_ROWS]
        check_streamed(block0_model(ckpt, plan, hf, rows, DTYPES[dtype]), plan, weights)
        kept = ckpt if isinstance(ckpt, GGUFCheckpoint) else None
    cfg, files = plan.cfg, [source] if is_gguf(str(source)) else weight_files(source)
    tokenizer = _tokenizer(source, cfg)
    check_tokenizer(tokenizer, int(cfg.d_vocab), str(source))
    identity = ModelIdentity(
        name=spec,
        source="streamed",
        weights_sha256=_sha256(files[0]) if len(files) == 1 else None,
        n_layers=int(cfg.n_layers),
        n_heads=int(cfg.n_heads),
        d_model=int(cfg.d_model),
        d_head=int(cfg.d_head),
        d_vocab=int(cfg.d_vocab),
        n_ctx=int(cfg.n_ctx),
    )
    tokens = Tokenization(tokenizer, int(cfg.n_ctx))
    torch.set_num_threads(threads or choose_threads(int(cfg.d_model), torch.device("cpu")))
    return StreamedModel(source, weights, tokens, identity, plan, hf, DTYPES[dtype], kept)
