"""Checks of a local model directory before it is booted, each failing with one clear ModelError.

Weights must be safetensors (a pickle checkpoint only with allow_pickle), every safetensors
file must be whole, and config.json must describe exactly the tensors the files hold —
Hugging Face would otherwise fill missing layers with random numbers and only warn.
"""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import torch

from headscope.errors import HeadscopeError

PICKLE_FILES = ("pytorch_model.bin", "model.pt", "model.pth", "model.ckpt")
HEADER_LENGTH_BYTES = 8  # safetensors: little-endian u64 header length, JSON header, then data
Shapes = dict[str, tuple[int, ...]]


class ModelError(HeadscopeError):
    """A model that cannot be loaded; the message names it and says what to do."""


def local_model_dir(spec: str) -> Path | None:
    """The directory a model value names, None for a hub name; a ModelError for a path that is
    a file, a symlink loop, a broken link or missing."""
    path = Path(spec).expanduser()
    try:
        os.stat(path)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise ModelError(
                f"model={spec!r} is a symlink loop (its links lead back to themselves); "
                "point it at a Hugging Face model directory"
            ) from error
        if path.is_symlink():
            raise ModelError(
                f"model={spec!r} is a broken symlink to {os.readlink(path)}; "
                "point it at a Hugging Face model directory"
            ) from error
        if spec.startswith((".", "/", "~")):
            raise ModelError(
                f"model={spec!r}: no such directory; give a Hugging Face model directory"
            ) from error
        return None  # a hub name such as gpt2 or org/name
    if not path.is_dir():
        raise ModelError(f"model={spec!r} is a file; {_folder_hint(path)}")
    return path


def _folder_hint(path: Path) -> str:
    if (path.parent / "config.json").is_file():
        return f"give the folder that holds it, {path.parent}"
    return "give the Hugging Face model directory (config.json, *.safetensors, tokenizer files)"


def check_tokenizer(tokenizer, d_vocab: int, where: str) -> None:
    """Refuse a model without a real tokenizer, or with more tokens than embedding rows."""
    special = set(tokenizer.all_special_ids)
    words = [i for i in tokenizer.get_vocab().values() if i not in special]
    if not words:
        raise ModelError(
            f"{where} has no tokenizer (no tokenizer.json or vocab files, so every word is unknown); "
            "save the tokenizer there with tokenizer.save_pretrained(...)"
        )
    if len(tokenizer) > d_vocab:
        raise ModelError(
            f"the tokenizer of {where} has {len(tokenizer)} tokens but the embedding only {d_vocab} rows; "
            "use the tokenizer saved with these weights"
        )


def weight_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.safetensors"))


def check_model_dir(directory: Path, allow_pickle: bool = False) -> None:
    """Refuse a directory without a config or weights, or with pickle-only weights, with the fix."""
    if not (directory / "config.json").is_file():
        gguf = sorted(directory.glob("*.gguf"))
        if gguf:
            raise ModelError(f"model={str(directory)!r} holds a GGUF file; give the file itself: {gguf[0]}")
        raise ModelError(f"model={str(directory)!r} has no config.json; give a Hugging Face model directory")
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


def _renamings(skeleton) -> list[tuple[str, str]]:
    """The (pattern, replacement) key renamings Hugging Face applies when it loads such files
    (GPT-NeoX saves its unembedding as `embed_out.weight` and loads it as `lm_head.weight`)."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightRenaming

    renames = []
    for transform in get_model_conversion_mapping(skeleton):
        if type(transform) is WeightRenaming:
            renames += list(zip(transform.source_patterns, transform.target_patterns, strict=False))
    return renames


def _loaded_names(found: Shapes, renames: list[tuple[str, str]]) -> Shapes:
    """The files' tensors under the names the loader gives them."""
    out = {}
    for key, shape in found.items():
        for pattern, replacement in renames:
            key = re.sub(pattern, replacement, key)
        out[key] = shape
    return out


def expected_shapes(directory: Path) -> tuple[Shapes, list[set[str]], set[str], str, list[tuple[str, str]]]:
    """What config.json implies: parameter shapes, groups of tied names, buffer names, prefix,
    and the renamings the loader applies to the files' names.

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
    return shapes, list(groups.values()), buffers, skeleton.base_model_prefix, _renamings(skeleton)


def check_config_matches(directory: Path, found: Shapes) -> None:
    """A ModelError when config.json and the weight files disagree on any tensor or shape."""
    expected, tied, buffers, prefix, renames = expected_shapes(directory)
    found = _loaded_names(found, renames)
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
