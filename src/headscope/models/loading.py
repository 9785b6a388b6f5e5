"""Load a model: the bundled organism, a local Hugging Face directory, a GGUF file, a hub name, or a
model already in memory (a TransformerBridge, or a Hugging Face model with its tokenizer)."""

from __future__ import annotations

import copy
import hashlib
import itertools
import os
import socket
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from headscope.models.architecture import Architecture, architecture_of
from headscope.models.checks import (
    ModelError,
    check_model_dir,
    check_tokenizer,
    first_line,
    local_model_dir,
    weight_files,
)
from headscope.models.devices import check_threads, choose_threads, resolve_device, resolve_dtype
from headscope.models.gguf_files import check_gguf_file, is_gguf, read_gguf
from headscope.models.placement import MaxMemory, Placement, input_device, placement, settle
from headscope.models.weights import Weights, check_weights, weights_from_bridge
from headscope.tasks.dataset import Tokenization

__all__ = ["Model", "ModelError", "ModelIdentity", "as_model", "check_model_dir", "load_model", "resolve"]

ORGANISM_DIR = Path(__file__).parent / "organism" / "weights"
HUB_HOST = ("huggingface.co", 443)
HUB_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class ModelIdentity:
    """What a result was computed on: the name given, where it came from, its shape."""

    name: str
    source: str
    weights_sha256: str | None
    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    d_vocab: int
    n_ctx: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Model:
    """A TransformerLens bridge with its tokenizer, weights, identity and architecture record."""

    bridge: object
    tokens: Tokenization
    weights: Weights
    identity: ModelIdentity

    @property
    def arch(self) -> Architecture:
        """What headscope assumes about this model's architecture (models/architecture.py)."""
        return self.weights.arch

    @property
    def n_layers(self) -> int:
        return self.identity.n_layers

    @property
    def n_heads(self) -> int:
        return self.identity.n_heads

    @property
    def device(self) -> torch.device:
        """Where the model's forward pass runs (its embedding's device)."""
        return input_device(self.bridge)

    @property
    def dtype(self) -> torch.dtype:
        """The precision of the model's weights and activations (scores read them as float32)."""
        return self.bridge.W_E.dtype

    @property
    def cfg(self):
        """The bridge's TransformerLens config (`model.cfg.n_layers`, `d_model`, ...)."""
        return self.bridge.cfg

    def to_tokens(self, text: str | list[str], prepend_bos: bool = True):
        """Token ids [batch, pos] of `text` as the prompts of a dataset would start (BOS first)."""
        return self.bridge.to_tokens(text, prepend_bos=prepend_bos)

    def __repr__(self) -> str:
        i = self.identity
        return (
            f"Model({i.name!r}, {i.n_layers} layers x {i.n_heads} heads, d_model {i.d_model}, "
            f"vocab {i.d_vocab})"
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    """True when the model hub answers a TCP connection within `timeout` seconds in all.

    The probe runs in a daemon thread, so a name lookup that hangs cannot hold us past the timeout.
    """
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    answered = threading.Event()

    def probe() -> None:
        try:
            with socket.create_connection(HUB_HOST, timeout=timeout):
                answered.set()
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return answered.is_set()


def _hub_cached(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(name, "config.json")
    return isinstance(found, str)


def resolve(spec: str) -> tuple[str, Path | None]:
    """('organism' | 'local' | 'gguf' | 'hub', directory, GGUF file or None) for a --model value."""
    if is_gguf(spec):
        return "gguf", check_gguf_file(spec)
    if spec == "organism":
        if not (ORGANISM_DIR / "config.json").is_file():
            raise ModelError("the bundled organism is missing from this install; reinstall headscope")
        return "organism", ORGANISM_DIR
    path = local_model_dir(spec)  # a file, a symlink loop or a missing path is a ModelError
    return ("local", path) if path is not None else ("hub", None)


def _boot(name_or_path: str, device: torch.device, dtype: torch.dtype, split: Placement | None = None):
    from transformer_lens.model_bridge import TransformerBridge

    where = (split or Placement()).boot_arguments(device)  # device, or accelerate's device_map
    bridge = TransformerBridge.boot_transformers(name_or_path, dtype=dtype, **where)
    bridge.eval()
    settle(bridge)  # a split model's input device, not `meta` when the embedding is on disk
    return bridge


def _boot_hub(name: str, device: torch.device, dtype: torch.dtype, split: Placement):
    if _hub_cached(name):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return _boot(name, device, dtype, split)
    if not hub_reachable():
        raise ModelError(
            f"model={name!r}: it is no local directory, and the model hub is not reachable "
            "(no network) to download it; give a local Hugging Face-format directory, or 'organism'"
        )
    try:
        return _boot(name, device, dtype, split)
    except Exception as error:  # a name the hub does not know, a dropped connection, ...
        raise ModelError(
            f"model={name!r}: cannot download it ({first_line(error)}); check the name, or give a local "
            "Hugging Face-format directory"
        ) from error


def load_model(
    spec: str = "organism",
    device: str = "auto",
    allow_pickle: bool = False,
    dtype: str = "float32",
    threads: int | None = None,
    device_map: str | None = None,
    max_memory: str | MaxMemory | None = None,
    offload_folder: str | Path | None = None,
    tokenizer=None,
) -> Model:
    """Load a model: the bundled organism, a local Hugging Face directory, a GGUF file, a hub name,
    or a model already in memory.

    Args:
        spec: "organism" (the bundled offline default), a directory with a config, weights and a
            tokenizer in Hugging Face format, a llama.cpp `.gguf` file (needs `headscope[gguf]`),
            a hub name such as "gpt2" (needs the network); or a model in memory: a TransformerLens
            `TransformerBridge`, or a Hugging Face `PreTrainedModel` (give `tokenizer=`), used
            where it is, in its dtype (see `as_model`).
        device: where the model runs: "cpu", "cuda" (the first GPU), "cuda:N", "mps", or "auto"
            (the first GPU if there is one, else the CPU).
        allow_pickle: also load pickled weights (`.bin`); otherwise safetensors only.
        dtype: the precision of the weights and the forward pass: "float32", "bfloat16" or
            "float16". Scores, ranks and correlations are still computed in float32.
        threads: CPU threads torch uses from here on (process-wide); None chooses by the
            model's width (1 below d_model 512 or on a busy machine, see `models.devices.choose_threads`).
        device_map: split a model too large for one device, layer by layer, with accelerate:
            "auto", "balanced" or "sequential" (then leave `device` at "auto").
        max_memory: what each device may hold, "0=20GiB,1=20GiB,cpu=64GiB" or accelerate's dict
            ({0: "20GiB", "cpu": "64GiB"}); layers past the caps are offloaded to disk.
        offload_folder: where layers offloaded to disk are kept (default: a temporary folder).
        tokenizer: the tokenizer of a Hugging Face model given as `spec`.

    Returns:
        A `Model`: `model.cfg`, `model.to_tokens(text)`, and what the analyses read.

    Example:
        >>> model = hs.load_model("organism")
        >>> model.cfg.n_layers, model.to_tokens("1 2 3")
        >>> hs.load_model(hf_model, tokenizer=tokenizer)  # a model fine-tuned in this notebook
    """
    check_threads(threads)
    if not isinstance(spec, str | os.PathLike):
        _in_place(device, dtype, device_map, max_memory, offload_folder)
        model = as_model(spec if tokenizer is None else (spec, tokenizer))
        torch.set_num_threads(threads or choose_threads(model.identity.d_model, model.device))
        return model
    spec = os.fspath(spec)
    if tokenizer is not None:
        raise ModelError(
            f"tokenizer= goes with a Hugging Face model in memory; model={spec!r} brings its own: "
            "drop tokenizer="
        )
    split = placement(device_map, max_memory, offload_folder, device)
    where = resolve_device(device)
    precision = resolve_dtype(dtype, where)
    source, path = resolve(spec)
    if source == "gguf":
        model, tokens = read_gguf(path, precision, split.boot_arguments(where))
        bridge = _boot_in_memory(model, tokens, str(path))
    elif path is not None:
        check_model_dir(path, allow_pickle)
        bridge = _boot_local(path, where, precision, split)
    else:
        bridge = _boot_hub(spec, where, precision, split)
    torch.set_num_threads(threads or choose_threads(bridge.cfg.d_model, where))
    files = [path] if source == "gguf" else weight_files(path) if path is not None else []
    return _wrap(spec, source, str(path) if path is not None else repr(spec), files, bridge)


def _boot_local(directory: Path, device: torch.device, dtype: torch.dtype, split: Placement):
    try:
        return _boot(str(directory), device, dtype, split)
    except Exception as error:  # the checks above caught the known cases; name anything else
        raise ModelError(
            f"cannot load the model in {directory}: {first_line(error)}; check it is a Hugging Face "
            "causal LM directory (config.json, *.safetensors, tokenizer files)"
        ) from error


def _wrap(name: str, source: str, where: str, files: list[Path], bridge) -> Model:
    """The Model of a booted bridge, after the load-time checks of its tokenizer and weights."""
    cfg = bridge.cfg
    check_tokenizer(bridge.tokenizer, cfg.d_vocab, where)
    identity = ModelIdentity(
        name=name,
        source=source,
        weights_sha256=_sha256(files[0]) if len(files) == 1 else None,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        d_model=cfg.d_model,
        d_head=cfg.d_head,
        d_vocab=cfg.d_vocab,
        n_ctx=cfg.n_ctx,
    )
    weights = weights_from_bridge(bridge, architecture_of(bridge))
    check_weights(bridge, weights, _check_tokens(cfg.d_vocab, input_device(bridge)))
    return Model(bridge, Tokenization(bridge.tokenizer, cfg.n_ctx), weights, identity)


def _check_tokens(d_vocab: int, device) -> Tensor:
    """A few fixed token ids [1, pos] for the load-time check of the weights' reading."""
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, d_vocab, (1, 6), generator=generator).to(device)


# ---- models already in memory ------------------------------------------------------------------

_BRIDGES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # HF model -> (tokenizer, its bridge)
_HF_PAIR = "(hf_model, tokenizer)"


def as_model(model) -> Model:
    """headscope's Model of what a notebook holds, with the load-time checks of a folder.

    Accepts a `Model` (returned as it is), a TransformerLens `TransformerBridge` (with its own
    tokenizer), or a Hugging Face `PreTrainedModel` with its tokenizer as a pair
    `(hf_model, tokenizer)`. The model is used where it is and in its dtype, in eval mode. A
    Hugging Face model is wrapped in a TransformerBridge once, built on a copy of its module tree
    that shares its parameters (TransformerLens replaces modules of the model it wraps), so the
    model itself is left as it was and later changes to its weights are seen. The weights the
    scores read are taken at this call: after changing them, call it again.
    """
    if isinstance(model, Model):
        return model
    if isinstance(model, str | os.PathLike):
        raise ModelError(
            f"model={os.fspath(model)!r} is not loaded; load it: hs.load_model({os.fspath(model)!r})"
        )
    if _is_bridge(model):
        return _from_bridge(model)
    if isinstance(model, tuple) and len(model) == 2 and _is_hf_model(model[0]):
        return _from_hf(*model)
    if _is_hf_model(model):
        raise ModelError(
            f"model={type(model).__name__}: a Hugging Face model needs its tokenizer; pass {_HF_PAIR} "
            "or hs.load_model(hf_model, tokenizer=tokenizer)"
        )
    raise ModelError(
        f"model={type(model).__name__}: give hs.load_model(...)'s Model, a TransformerBridge, or a "
        f"Hugging Face model with its tokenizer, {_HF_PAIR}"
    )


def _is_bridge(value) -> bool:
    from transformer_lens.model_bridge import TransformerBridge

    return isinstance(value, TransformerBridge)


def _is_hf_model(value) -> bool:
    from transformers import PreTrainedModel

    return isinstance(value, PreTrainedModel)


def _in_place(device, dtype, device_map, max_memory, offload_folder) -> None:
    """Refuse placement arguments for a model in memory: it stays where it is, in its dtype."""
    given = {"device": device != "auto", "dtype": dtype != "float32", "device_map": device_map is not None}
    given |= {"max_memory": max_memory is not None, "offload_folder": offload_folder is not None}
    named = [name for name, set_ in given.items() if set_]
    if named:
        raise ModelError(
            f"{named[0]}= with a model in memory: it is used where it is and in its dtype; drop {named[0]}= "
            "and move or cast the model itself (model.to('cuda', torch.bfloat16))"
        )


def _from_bridge(bridge) -> Model:
    name = str(getattr(bridge.cfg, "model_name", None) or type(bridge.original_model).__name__)
    if bridge.tokenizer is None:
        raise ModelError(
            f"model={name!r}: this TransformerBridge has no tokenizer; boot it with its tokenizer"
        )
    bridge.eval()
    return _wrap(name, "memory", f"the TransformerBridge of {name}", [], bridge)


def _from_hf(hf_model, tokenizer) -> Model:
    from transformers import PreTrainedTokenizerBase

    name = str(getattr(hf_model, "name_or_path", "") or type(hf_model).__name__)
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise ModelError(
            f"tokenizer={type(tokenizer).__name__}: give the model's Hugging Face tokenizer "
            "(AutoTokenizer.from_pretrained(...))"
        )
    empty = [n for n, p in hf_model.named_parameters() if p.device.type == "meta"]
    if empty and not getattr(hf_model, "hf_device_map", None):
        raise ModelError(
            f"model={name!r}: its weights are not loaded ({empty[0]} is on the meta device); "
            "load them, e.g. with from_pretrained"
        )
    cached = _BRIDGES.get(hf_model)
    if cached is None or cached[0] is not tokenizer:
        cached = (tokenizer, _boot_in_memory(_sharing_weights(hf_model), tokenizer, name))
        _BRIDGES[hf_model] = cached
    cached[1].eval()
    return _wrap(name, "memory", f"the Hugging Face model {name}", [], cached[1])


def _sharing_weights(hf_model):
    """A copy of the model's module tree whose parameters and buffers are the model's own tensors."""
    shared = {id(t): t for t in itertools.chain(hf_model.parameters(), hf_model.buffers())}
    return copy.deepcopy(hf_model, memo=shared)


def _boot_in_memory(hf_model, tokenizer, name: str):
    """A TransformerBridge around a Hugging Face model already built (from memory or a GGUF file)."""
    from transformer_lens.model_bridge import TransformerBridge

    dtype = next(hf_model.parameters()).dtype
    try:
        bridge = TransformerBridge.boot_transformers(
            name, hf_model=hf_model, tokenizer=tokenizer, dtype=dtype
        )
    except Exception as error:  # an architecture TransformerLens does not know, ...
        raise ModelError(f"model={name!r}: TransformerLens cannot wrap it: {first_line(error)}") from error
    bridge.eval()
    settle(bridge)
    return bridge
