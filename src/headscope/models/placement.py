"""Splitting a model that does not fit on one device: where Hugging Face accelerate puts each layer.

`--device-map auto|balanced|sequential` hands placement to accelerate (through TransformerLens's
`boot_transformers`), `--max-memory 0=20GiB,1=20GiB,cpu=64GiB` caps what each device may hold
(layers past the caps go to the CPU, then to disk), and `--offload-folder DIR` is where layers
offloaded to disk are kept. Each value is checked here, before any weights are read: a bad one is
one `PlacementError` line naming the value and the fix.

A split model runs as a whole one does: accelerate's hooks move each block's input to the block's
device and load offloaded parameters (on the `meta` device until then) while the block runs;
headscope reads the weights it scores one layer at a time the same way (models/weights.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import torch

from headscope.errors import HeadscopeError

DeviceMap = Literal["auto", "balanced", "sequential"]
MaxMemory = dict[int | str, int | str]  # accelerate's: GPU index or cpu/disk/mps -> size
MEMORY_EXAMPLE = "0=20GiB,1=20GiB,cpu=64GiB"
_NAMED_TARGETS = ("cpu", "disk", "mps")
_BYTES = re.compile(r"^\d+$")


class PlacementError(HeadscopeError):
    """A --device-map, --max-memory or --offload-folder this machine cannot use; names the fix."""


@dataclass(frozen=True)
class Placement:
    """How accelerate splits the model: its device map, each device's cap, the offload folder.

    `device_map=None` is no split: the whole model on one `--device`.
    """

    device_map: DeviceMap | None = None
    max_memory: MaxMemory | None = None
    offload_folder: Path | None = None

    @property
    def split(self) -> bool:
        return self.device_map is not None

    def boot_arguments(self, device: torch.device) -> dict:
        """The placement keywords of TransformerBridge.boot_transformers (`device` when not split)."""
        if not self.split:
            return {"device": device}
        folder = None if self.offload_folder is None else str(self.offload_folder)
        return {"device_map": self.device_map, "max_memory": self.max_memory, "offload_folder": folder}


def placement(
    device_map: str | None = None,
    max_memory: str | MaxMemory | None = None,
    offload_folder: str | Path | None = None,
    device: str = "auto",
) -> Placement:
    """A checked Placement from load_model's (or the command line's) placement arguments."""
    if device_map is None:
        for name, value in (("max_memory", max_memory), ("offload_folder", offload_folder)):
            if value is not None:
                raise PlacementError(
                    f"{name}={value!r} only applies to a split model: give a device map too "
                    "(auto, balanced or sequential)"
                )
        return Placement()
    return Placement(
        device_map=_device_map(device_map, device),
        max_memory=None if max_memory is None else parse_max_memory(max_memory),
        offload_folder=None if offload_folder is None else _folder(offload_folder),
    )


def _device_map(name: str, device: str) -> DeviceMap:
    choices = get_args(DeviceMap)
    text = str(name).strip().lower()
    if text not in choices:
        raise PlacementError(f"device_map={name!r} is not a placement; use {', '.join(choices)}")
    if str(device).strip().lower() != "auto":
        raise PlacementError(
            f"device={device!r}: a split model (device map {text!r}) is placed by accelerate; leave "
            "the device at auto and cap each device's memory instead (e.g. cpu=64GiB)"
        )
    return text


def parse_max_memory(value: str | MaxMemory) -> MaxMemory:
    """accelerate's max_memory dict from '0=20GiB,1=20GiB,cpu=64GiB' (or a dict, checked).

    Keys are GPU indices, 'cpu', 'disk' or 'mps'; sizes are bytes or a number with a unit
    (KB, MB, GB, KiB, MiB, GiB).
    """
    pairs = _pairs(value) if isinstance(value, str) else list(value.items())
    if not pairs:
        raise PlacementError(f"max_memory={value!r} names no device; give e.g. {MEMORY_EXAMPLE}")
    found: MaxMemory = {}
    for key, size in pairs:
        target = _target(key, value)
        if target in found:
            raise PlacementError(f"max_memory={value!r} gives {key} twice; give each device once")
        found[target] = _size(size, key, value)
    return found


def _pairs(text: str) -> list[tuple[str, str]]:
    pairs = []
    for item in (part.strip() for part in text.split(",")):
        key, equals, size = item.partition("=")
        if not equals or not key.strip() or not size.strip():
            raise PlacementError(
                f"max_memory={text!r}: {item!r} is not DEVICE=SIZE; give e.g. {MEMORY_EXAMPLE}"
            )
        pairs.append((key.strip(), size.strip()))
    return pairs


def _target(key: int | str, whole) -> int | str:
    """A GPU index that exists on this machine, or cpu / disk / mps."""
    text = str(key).strip().lower().removeprefix("cuda:")
    if text in _NAMED_TARGETS:
        return text
    if not text.isdigit():
        raise PlacementError(
            f"max_memory={whole!r}: {key!r} is not a device; use a GPU index (0, 1, ...), cpu, disk or mps"
        )
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if int(text) >= gpus:
        have = "no CUDA GPU" if gpus == 0 else f"GPUs 0 to {gpus - 1}"
        raise PlacementError(
            f"max_memory={whole!r}: GPU {text} does not exist (this machine has {have}); cap cpu instead"
        )
    return int(text)


def _size(size: int | str, key, whole) -> int:
    """Bytes from a size (an int, digits, or a number with a unit; units are bytes in any case:
    accelerate would read a lowercase `gb` as gigabits); a PlacementError otherwise."""
    from accelerate.utils import convert_file_size_to_int

    try:
        if isinstance(size, bool):
            raise ValueError(size)
        text = str(size).strip().upper()
        found = int(text) if _BYTES.match(text) else convert_file_size_to_int(text)
    except (ValueError, TypeError, OverflowError):
        found = -1
    if found < 0:
        raise PlacementError(
            f"max_memory={whole!r}: {key}={size!r} is not a size; give bytes or e.g. 20GiB, 512MB"
        )
    return found


def _folder(path: str | Path) -> Path:
    """The offload folder, created if missing; a PlacementError when it cannot hold files."""
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise PlacementError(f"offload_folder={str(path)!r} is a file; give a directory (made if missing)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".headscope-write-probe"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise PlacementError(
            f"offload_folder={str(path)!r} cannot hold files ({error.strerror or error}); "
            "give a writable directory"
        ) from None
    return folder


def input_device(bridge) -> torch.device:
    """Where a forward pass's token ids go: the input embedding's execution device.

    On a split model the embedding's parameters may be offloaded (on the `meta` device until
    accelerate's hook loads them); the hook's execution device is where it runs.
    """
    model = getattr(bridge, "original_model", None)
    hook = getattr(model.get_input_embeddings(), "_hf_hook", None) if model is not None else None
    found = getattr(hook, "execution_device", None)
    if found is None:
        return bridge.W_E.device
    return torch.device(found if not isinstance(found, int) else f"cuda:{found}")


def settle(bridge) -> None:
    """Point the bridge's `cfg.device` (where TransformerLens puts new token ids) at the input
    embedding's execution device: TransformerLens records `meta` when the embedding is on disk."""
    if getattr(getattr(bridge, "original_model", None), "hf_device_map", None):
        bridge.cfg.device = str(input_device(bridge))
