"""Checks of a local model directory before it is booted, each failing with one clear ModelError.

Weights must be safetensors (a pickle checkpoint only with allow_pickle), every safetensors
file must be whole, and config.json must describe exactly the tensors the files hold —
Hugging Face would otherwise fill missing layers with random numbers and only warn.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from headscope.errors import HeadscopeError

PICKLE_FILES = ("pytorch_model.bin", "model.pt", "model.pth", "model.ckpt")
HEADER_LENGTH_BYTES = 8  # safetensors: little-endian u64 header length, JSON header, then data
Shapes = dict[str, tuple[int, ...]]


class ModelError(HeadscopeError):
    """A model that cannot be loaded; the message names it and says what to do."""


def weight_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.safetensors"))


def check_model_dir(directory: Path, allow_pickle: bool = False) -> None:
    """Refuse a directory without a config or weights, or with pickle-only weights, with the fix."""
    if not (directory / "config.json").is_file():
        raise ModelError(f"{directory} has no config.json; point --model at a Hugging Face model directory")
    files = weight_files(directory)
    if files:
        check_config_matches(directory, {k: v for f in files for k, v in safetensors_shapes(f).items()})
        return
    pickles = [name for name in PICKLE_FILES if (directory / name).is_file()]
    if pickles and not allow_pickle:
        raise ModelError(
            f"{directory} holds only a pickle checkpoint ({pickles[0]}), which can run code when "
            "loaded; convert it to safetensors, or if you trust it pass --allow-pickle "
            "(headscope --allow-pickle COMMAND ..., or allow_pickle=True)"
        )
    if not pickles:
        raise ModelError(
            f"{directory} has no weights (no *.safetensors file); "
            "save the model there with save_pretrained(..., safe_serialization=True)"
        )


def safetensors_shapes(path: Path) -> Shapes:
    """Tensor shapes from a safetensors header; a ModelError when the file is cut short or garbled."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        length = int.from_bytes(handle.read(HEADER_LENGTH_BYTES), "little")
        if size < HEADER_LENGTH_BYTES or length > size - HEADER_LENGTH_BYTES:
            raise _broken(path, f"its header claims {length} bytes but the file has {size}")
        header = _json_header(path, handle.read(length))
    entries = {k: v for k, v in header.items() if k != "__metadata__"}
    try:
        shapes = {k: tuple(int(d) for d in v["shape"]) for k, v in entries.items()}
        data_end = max((int(v["data_offsets"][1]) for v in entries.values()), default=0)
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise _broken(path, f"its header is malformed ({error!r})") from error
    needed = HEADER_LENGTH_BYTES + length + data_end
    if needed > size:
        raise ModelError(
            f"{path} is truncated: it has {size} of the {needed} bytes its header lists; "
            "re-save or re-download the weights"
        )
    return shapes


def _json_header(path: Path, raw: bytes) -> dict:
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _broken(path, "its header is not JSON") from error
    if not isinstance(header, dict):
        raise _broken(path, "its header is not a table of tensors")
    return header


def _broken(path: Path, why: str) -> ModelError:
    return ModelError(
        f"{path} is not a valid safetensors file ({why}): it is truncated or corrupted; "
        "re-save or re-download the weights"
    )


def expected_shapes(directory: Path) -> tuple[Shapes, list[set[str]], set[str], str]:
    """What config.json implies: parameter shapes, groups of tied names, buffer names, prefix.

    The model is built on the meta device, so no memory is allocated and no weights are read.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(directory)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(config)
    except Exception as error:  # any failure here is a config the user must fix
        raise ModelError(f"{directory}/config.json cannot be used: {first_line(error)}") from error
    groups: dict[int, set[str]] = {}
    for name, param in skeleton.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), set()).add(name)
    shapes = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    buffers = {name for name, _ in skeleton.named_buffers(remove_duplicate=False)}
    return shapes, list(groups.values()), buffers, skeleton.base_model_prefix


def check_config_matches(directory: Path, found: Shapes) -> None:
    """A ModelError when config.json and the weight files disagree on any tensor or shape."""
    expected, tied, buffers, prefix = expected_shapes(directory)
    strip = lambda key: key.removeprefix(f"{prefix}.")  # noqa: E731  # saved with or without prefix
    original = {strip(k): k for k in found}
    found = {strip(k): v for k, v in found.items()}
    fix = "use the config.json saved with these weights"
    for key, shape in expected.items():
        have = found.get(strip(key))
        if have is not None and have != shape:
            raise ModelError(
                f"config.json in {directory} does not match the weights: {key} has shape "
                f"{list(have)} in the files but {list(shape)} by the config; {fix}"
            )
    present = lambda key: strip(key) in found  # noqa: E731
    missing = [k for k in expected if not present(k) and not _tied_present(k, tied, present)]
    if missing:
        raise ModelError(
            f"config.json in {directory} does not match the weights: the config needs {missing[0]}"
            f"{_more(missing)}, which the files lack; {fix}"
        )
    known = {strip(k) for k in expected} | {strip(b) for b in buffers}
    extra = [k for k in found if k not in known]
    if extra:
        raise ModelError(
            f"config.json in {directory} does not match the weights: the files hold {original[extra[0]]}"
            f"{_more(extra)}, which the config has no place for; {fix}"
        )


def _tied_present(key: str, tied: list[set[str]], present) -> bool:
    return any(key in group and any(present(alias) for alias in group) for group in tied)


def _more(items: list[str]) -> str:
    return f" (and {len(items) - 1} more)" if len(items) > 1 else ""


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
