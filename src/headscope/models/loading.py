"""Load a model: the bundled organism, a local Hugging Face directory, or a hub name."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
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
from headscope.models.placement import MaxMemory, Placement, input_device, placement, settle
from headscope.models.weights import Weights, check_weights, weights_from_bridge
from headscope.tasks.dataset import Tokenization

__all__ = ["Model", "ModelError", "ModelIdentity", "check_model_dir", "load_model", "resolve"]

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
    """('organism' | 'local' | 'hub', directory or None) for a --model value."""
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
) -> Model:
    """Load a model: the bundled organism, a local Hugging Face directory, or a hub name.

    Args:
        spec: "organism" (the bundled offline default), a directory with a config, weights and a
            tokenizer in Hugging Face format, or a hub name such as "gpt2" (needs the network).
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

    Returns:
        A `Model`: `model.cfg`, `model.to_tokens(text)`, and what the analyses read.

    Example:
        >>> model = hs.load_model("organism")
        >>> model.cfg.n_layers, model.to_tokens("1 2 3")
    """
    split = placement(device_map, max_memory, offload_folder, device)
    where = resolve_device(device)
    precision = resolve_dtype(dtype, where)
    check_threads(threads)
    source, directory = resolve(spec)
    if directory is not None:
        check_model_dir(directory, allow_pickle)
        bridge = _boot_local(directory, where, precision, split)
    else:
        bridge = _boot_hub(spec, where, precision, split)
    torch.set_num_threads(threads or choose_threads(bridge.cfg.d_model, where))
    return _wrap(spec, source, directory, bridge)


def _boot_local(directory: Path, device: torch.device, dtype: torch.dtype, split: Placement):
    try:
        return _boot(str(directory), device, dtype, split)
    except Exception as error:  # the checks above caught the known cases; name anything else
        raise ModelError(
            f"cannot load the model in {directory}: {first_line(error)}; check it is a Hugging Face "
            "causal LM directory (config.json, *.safetensors, tokenizer files)"
        ) from error


def _wrap(spec: str, source: str, directory: Path | None, bridge) -> Model:
    cfg = bridge.cfg
    check_tokenizer(bridge.tokenizer, cfg.d_vocab, str(directory) if directory is not None else repr(spec))
    files = weight_files(directory) if directory is not None else []
    identity = ModelIdentity(
        name=spec,
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
