"""GGUF checkpoints (llama.cpp's single-file format), read through transformers' GGUF support.

The file holds the architecture, the weights (often quantised) and the tokenizer. transformers
builds the Hugging Face model and tokenizer from it, dequantising every tensor to the dtype asked
for; headscope then boots that model in TransformerLens as it boots a local folder. Before
anything is read the file is checked: the `gguf` package is installed, the header is a GGUF
header, transformers knows the architecture, and every tensor type can be dequantised.
"""

from __future__ import annotations

from pathlib import Path

import torch

from headscope.models.checks import ModelError, first_line

GGUF_EXTRA = "pip install 'headscope[gguf]'"
# Config fields transformers leaves at their default when it reads a GGUF file: field -> the field
# that holds the file's value (GPT-2's context length lands in n_ctx, its position table is sized
# by n_positions, so a GPT-2 file whose context is not 1024 would not load).
CONFIG_FIXES: dict[str, dict[str, str]] = {"gpt2": {"n_positions": "n_ctx"}}


def is_gguf(spec: str) -> bool:
    """True when a --model value names a .gguf file (existing or not)."""
    return str(spec).lower().endswith(".gguf")


def _gguf_package():
    try:
        import gguf
    except ImportError as error:
        raise ModelError(f"reading a GGUF file needs the gguf package: {GGUF_EXTRA}") from error
    return gguf


def dequantisable(qtype: int) -> bool:
    """Whether the gguf package (which transformers' GGUF loader calls) dequantises ggml type `qtype`."""
    import numpy as np

    gguf = _gguf_package()
    qtype = gguf.GGMLQuantizationType(qtype)
    _, type_size = gguf.GGML_QUANT_SIZES[qtype]
    try:
        gguf.quants.dequantize(np.zeros((1, type_size), np.uint8), qtype)  # one block of zeros
    except NotImplementedError:
        return False
    return True


def supported_architectures() -> set[str]:
    """The GGUF architectures (`general.architecture`) transformers builds a model from."""
    from transformers.integrations.gguf import GGUF_ARCHS
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    return (set(GGUF_SUPPORTED_ARCHITECTURES) | set(GGUF_ARCHS)) - {"general", "tokenizer"}


def check_gguf_file(spec: str) -> Path:
    """The path of a readable GGUF file transformers can load; a ModelError naming what is wrong."""
    path = Path(spec).expanduser()
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "does not exist"
        raise ModelError(f"model={spec!r} {what}; give the path of a .gguf file")
    _gguf_package()
    arch = _architecture(path, spec)
    if arch not in supported_architectures():
        known = ", ".join(sorted(supported_architectures()))
        raise ModelError(
            f"model={spec!r} is a GGUF file of architecture {arch!r}, which transformers cannot read; "
            f"known: {known}"
        )
    missing = [_type_name(kind) for kind in sorted(_tensor_types(path)) if not dequantisable(kind)]
    if missing:
        raise ModelError(
            f"model={spec!r} holds {', '.join(missing)} tensors, which cannot be dequantised; "
            "use a file with another quantisation (Q8_0, Q4_K, F16, ...)"
        )
    return path


def _architecture(path: Path, spec: str) -> str:
    """The file's general.architecture, read from its header alone."""
    from transformers.integrations.gguf import read_gguf_metadata

    try:
        metadata, _ = read_gguf_metadata(str(path))  # memory-mapped; vocabulary arrays skipped
    except Exception as error:  # no GGUF magic, a truncated header, ...
        raise ModelError(
            f"model={spec!r} is not a readable GGUF file ({first_line(error)}); re-download or re-convert it"
        ) from error
    if "general.architecture" not in metadata:
        raise ModelError(f"model={spec!r} has no general.architecture key; re-convert it with llama.cpp")
    return str(metadata["general.architecture"])


def _tensor_types(path: Path) -> set[int]:
    """The ggml type ids of the file's tensors, from its tensor table (no tensor data is read)."""
    try:
        from transformers.integrations.gguf.reader import _mapped, _read_metadata, _read_tensor_table
    except ImportError:  # another transformers: gguf's own reader (slower: it parses the vocabulary)
        return {int(t.tensor_type) for t in _gguf_package().GGUFReader(path).tensors}
    blob = _mapped(str(path))
    _, count, start = _read_metadata(blob, str(path))
    return {int(entry[2]) for entry in _read_tensor_table(blob, count, start)[0]}


def _type_name(qtype: int) -> str:
    return _gguf_package().GGMLQuantizationType(qtype).name


def _config(path: Path):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    for field, source in CONFIG_FIXES.get(config.model_type, {}).items():
        setattr(config, field, getattr(config, source))
    return config


def read_gguf(path: Path, dtype: torch.dtype, placement: dict):
    """(Hugging Face model in eval mode, tokenizer) from the file, dequantised to `dtype`.

    `placement` is `{"device": ...}` or accelerate's `device_map`/`max_memory`/`offload_folder`
    (models/placement.py).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        split = {k: v for k, v in placement.items() if k != "device" and v is not None}
        model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, config=_config(path), dtype=dtype,
            attn_implementation="eager", **split,
        )  # fmt: skip
    except Exception as error:  # an architecture transformers half-supports, a broken tokenizer, ...
        raise ModelError(f"cannot load the GGUF file {path}: {first_line(error)}") from error
    if "device" in placement:
        model = model.to(placement["device"])
    return model.eval(), tokenizer
