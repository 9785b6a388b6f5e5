"""Load a model: the bundled organism, a local Hugging Face directory, or a hub name."""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from headscope.errors import HeadscopeError
from headscope.models.weights import Weights, weights_from_bridge
from headscope.tasks.dataset import Tokenization

ORGANISM_DIR = Path(__file__).parent / "organism" / "weights"
HUB_HOST = ("huggingface.co", 443)
PICKLE_FILES = ("pytorch_model.bin", "model.pt", "model.pth", "model.ckpt")


class ModelError(HeadscopeError):
    """A model that cannot be loaded; the message names it and says what to do."""


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
    """A TransformerLens bridge with its tokenizer, weights and identity."""

    bridge: object
    tokens: Tokenization
    weights: Weights
    identity: ModelIdentity

    @property
    def n_layers(self) -> int:
        return self.identity.n_layers

    @property
    def n_heads(self) -> int:
        return self.identity.n_heads


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _weight_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.safetensors"))


def check_model_dir(directory: Path, allow_pickle: bool = False) -> None:
    """Refuse a directory that lacks a config or safetensors weights, with the fix."""
    if not (directory / "config.json").is_file():
        raise ModelError(f"{directory} has no config.json; point --model at a Hugging Face model directory")
    if _weight_files(directory):
        return
    pickles = [name for name in PICKLE_FILES if (directory / name).is_file()]
    if pickles and not allow_pickle:
        raise ModelError(
            f"{directory} holds only a pickle checkpoint ({pickles[0]}), which can run code when "
            "loaded; convert it to safetensors, or pass --allow-pickle if you trust it"
        )
    if not pickles:
        raise ModelError(f"{directory} has no model.safetensors; save the model with safe_serialization=True")


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the model hub answers a TCP connection within `timeout` seconds."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    try:
        with socket.create_connection(HUB_HOST, timeout=timeout):
            return True
    except OSError:
        return False


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
    path = Path(spec).expanduser()
    if path.is_dir():
        return "local", path
    if path.exists() or spec.startswith((".", "/", "~")):
        raise ModelError(f"--model {spec}: no such directory; give a Hugging Face model directory")
    return "hub", None


def _boot(name_or_path: str, device: str):
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(name_or_path, device=device)
    bridge.eval()
    return bridge


def _boot_hub(name: str, device: str):
    if _hub_cached(name):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return _boot(name, device)
    if not hub_reachable():
        raise ModelError(
            f"cannot download {name!r}: the model hub is not reachable (no network); "
            "pass a local Hugging Face-format directory with --model PATH, or --model organism"
        )
    return _boot(name, device)


def load_model(spec: str = "organism", device: str = "cpu", allow_pickle: bool = False) -> Model:
    """Load a model by --model value: 'organism', a local directory, or a hub name."""
    source, directory = resolve(spec)
    if directory is not None:
        check_model_dir(directory, allow_pickle)
        bridge = _boot_local(directory, device)
    else:
        bridge = _boot_hub(spec, device)
    return _wrap(spec, source, directory, bridge)


def _boot_local(directory: Path, device: str):
    try:
        return _boot(str(directory), device)
    except (OSError, ValueError, RuntimeError, KeyError, json.JSONDecodeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"cannot load the model in {directory}: {first_line}") from error


def _wrap(spec: str, source: str, directory: Path | None, bridge) -> Model:
    cfg = bridge.cfg
    files = _weight_files(directory) if directory is not None else []
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
    return Model(bridge, Tokenization(bridge.tokenizer), weights_from_bridge(bridge), identity)
