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


def dequantisable(qtype) -> bool:
    """Whether the gguf package (which transformers' GGUF loader calls) dequantises `qtype`."""
    import numpy as np

    gguf = _gguf_package()
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
    reader = _reader(path, spec)
    arch = _architecture(reader, spec)
    if arch not in supported_architectures():
        known = ", ".join(sorted(supported_architectures()))
        raise ModelError(
            f"model={spec!r} is a GGUF file of architecture {arch!r}, which transformers cannot read; "
            f"known: {known}"
        )
    kinds = sorted({t.tensor_type for t in reader.tensors}, key=int)
    missing = [kind.name for kind in kinds if not dequantisable(kind)]
    if missing:
        raise ModelError(
            f"model={spec!r} holds {', '.join(missing)} tensors, which cannot be dequantised; "
            "use a file with another quantisation (Q8_0, Q4_K, F16, ...)"
        )
    return path


def _reader(path: Path, spec: str):
    gguf = _gguf_package()
    try:
        return gguf.GGUFReader(path)  # memory-mapped: reads the header, not the tensor data
    except Exception as error:  # bad magic, a truncated file, ...
        raise ModelError(
            f"model={spec!r} is not a readable GGUF file ({first_line(error)}); re-download or re-convert it"
        ) from error


def _architecture(reader, spec: str) -> str:
    field = reader.fields.get("general.architecture")
    if field is None:
        raise ModelError(f"model={spec!r} has no general.architecture key; re-convert it with llama.cpp")
    return bytes(field.parts[field.data[0]]).decode("utf-8")


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
