"""GGUF checkpoints (llama.cpp's single-file format), read through transformers' GGUF support.

The file holds the architecture, the weights (often quantised) and the tokenizer. transformers
builds the Hugging Face model and tokenizer from it, dequantising every tensor to the dtype asked
for; headscope then boots that model in TransformerLens as it boots a local folder. Before
anything is read the file is checked: the `gguf` package is installed, the header is a GGUF
header, transformers knows the architecture, and every tensor type can be dequantised.

`GGUFCheckpoint` reads the file's tensors one at a time instead, for the streamed model
(models/streamed.py): memory-mapped (the tensor table read by transformers' own GGUF header
reader, which skips the vocabulary that `gguf.GGUFReader` parses: 6 s and 160 MB on GPT-2's
50k tokens), each dequantised by `gguf.quants.dequantize` and put in Hugging Face's layout by
transformers' own tables, as its GGUF loader (`modeling_gguf_pytorch_utils.load_gguf_checkpoint`)
does: the GGUF -> Hugging Face name map (`get_gguf_hf_weights_map`, on the config's model built
on the meta device) and the architecture's `TensorProcessor` (Llama's q/k rows un-permuted,
GPT-2's Conv1D weights transposed back, Gemma 2/3's norms less their stored 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from headscope.models.checks import ModelError, first_line

GGUF_EXTRA = "pip install 'headscope[gguf]'"
# Config fields transformers leaves at their default when it reads a GGUF file: field -> the field
# that holds the file's value (GPT-2's context length lands in n_ctx, its position table is sized
# by n_positions, so a GPT-2 file whose context is not 1024 would not load).
CONFIG_FIXES: dict[str, dict[str, str]] = {"gpt2": {"n_positions": "n_ctx"}}
# The GGUF architectures (general.architecture) whose files stream, each checked against
# transformers' loading of the same file (tests/models/test_streamed_gguf.py).
STREAMED_ARCHITECTURES = ("llama", "qwen2", "qwen3", "gpt2", "gemma2", "gemma3", "bloom")
# Tensors no TensorProcessor of transformers reorders (it renames GPT-2's output.weight, no more):
# dequantised a block of rows at a time. Every other tensor is a layer's, dequantised whole.
ROW_WISE = ("token_embd.weight", "output.weight")
CHUNK_BYTES = 1 << 26  # float32 bytes of a row-wise tensor's rows dequantised at a time


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


def hf_config(path: Path):
    """The Hugging Face config transformers reads from the file's metadata (and CONFIG_FIXES)."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    for field, source in CONFIG_FIXES.get(config.model_type, {}).items():
        setattr(config, field, getattr(config, source))
    if not config.architectures and config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        # the class transformers builds from the file, which TransformerLens picks its adapter by
        config.architectures = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[config.model_type]]
    return config


def gguf_tokenizer(path: Path):
    """The tokenizer transformers builds from the file's vocabulary."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def read_gguf(path: Path, dtype: torch.dtype, placement: dict):
    """(Hugging Face model in eval mode, tokenizer) from the file, dequantised to `dtype`.

    `placement` is `{"device": ...}` or accelerate's `device_map`/`max_memory`/`offload_folder`
    (models/placement.py).
    """
    from transformers import AutoModelForCausalLM

    try:
        tokenizer = gguf_tokenizer(path)
        split = {k: v for k, v in placement.items() if k != "device" and v is not None}
        model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, config=hf_config(path), dtype=dtype,
            attn_implementation="eager", **split,
        )  # fmt: skip
    except Exception as error:  # an architecture transformers half-supports, a broken tokenizer, ...
        raise ModelError(f"cannot load the GGUF file {path}: {first_line(error)}") from error
    if "device" in placement:
        model = model.to(placement["device"])
    return model.eval(), tokenizer


# ---- streaming: the file's tensors one at a time ------------------------------------------------


def check_streamable(path: Path, spec: str) -> None:
    """A ModelError unless the file's architecture is one whose files stream."""
    arch = _architecture(path, spec)
    if arch not in STREAMED_ARCHITECTURES:
        raise ModelError(
            f"model={spec!r} is a GGUF file of architecture {arch!r}, which streaming does not read "
            f"(it reads {', '.join(STREAMED_ARCHITECTURES)}); load it in memory instead: drop --stream"
        )


def _name_map(path: Path, hf, processor) -> dict[str, str]:
    """GGUF tensor name -> Hugging Face parameter name, as transformers' GGUF loader maps them."""
    from transformers import AutoModelForCausalLM
    from transformers.modeling_gguf_pytorch_utils import get_gguf_hf_weights_map

    try:
        with torch.device("meta"):  # the config's model, no memory allocated
            skeleton = AutoModelForCausalLM.from_config(hf)
        return get_gguf_hf_weights_map(skeleton, processor)
    except NotImplementedError as error:  # a model type gguf's name tables do not know
        raise ModelError(f"cannot map the tensors of the GGUF file {path}: {first_line(error)}") from error


@dataclass(frozen=True)
class StoredTensor:
    """One tensor as the file holds it: its shape (torch order), ggml type and bytes."""

    shape: tuple[int, ...]
    qtype: int
    data: np.ndarray  # uint8 [rows, bytes a row], memory-mapped: nothing read until sliced


def _as_rows(data: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    rows = math.prod(shape[:-1])
    return data.reshape(-1).view(np.uint8).reshape(rows, -1)  # [rows, bytes a row]


def stored_tensors(path: Path) -> dict[str, StoredTensor]:
    """The file's tensors by GGUF name, memory-mapped, from its header and tensor table alone
    (transformers' own GGUF header reader: the vocabulary is skipped, not parsed)."""
    gguf = _gguf_package()
    try:
        from transformers.integrations.gguf.reader import _mapped, _read_metadata, _read_tensor_table
    except ImportError:  # another transformers: gguf's own reader (slower: it parses the vocabulary)
        return {
            t.name: StoredTensor(shape, int(t.tensor_type), _as_rows(t.data, shape))
            for t in gguf.GGUFReader(path).tensors
            for shape in [tuple(int(d) for d in reversed(t.shape))]
        }
    blob = _mapped(str(path))
    metadata, count, start = _read_metadata(blob, str(path))
    entries, end = _read_tensor_table(blob, count, start)
    alignment = int(metadata.get("general.alignment", 32))
    data_start = (end + alignment - 1) // alignment * alignment  # the data section, aligned
    found = {}
    for name, shape, qtype, offset in entries:
        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(qtype)]
        begin, n_bytes = data_start + offset, math.prod(shape) // block * size
        found[name] = StoredTensor(shape, qtype, _as_rows(blob[begin : begin + n_bytes], shape))
    return found


class GGUFCheckpoint:
    """The tensors of a GGUF file, memory-mapped, read one at a time as float32 by the names
    transformers' GGUF loader gives them; the interface of `models.streamed.Checkpoint`.

    Each tensor is dequantised by `gguf.quants.dequantize` and put in Hugging Face's layout by the
    architecture's `TensorProcessor`, as `load_gguf_checkpoint` does (its processor reads the
    config's head counts: the Hugging Face config's, read from the same metadata)."""

    def __init__(self, path: Path, hf):
        from transformers.modeling_gguf_pytorch_utils import TENSOR_PROCESSORS, TensorProcessor

        arch = _architecture(path, str(path))
        self._processor = TENSOR_PROCESSORS.get(arch, TensorProcessor)(config=hf.to_dict())
        self._to_hf = _name_map(path, hf, self._processor)
        self._tensors = stored_tensors(path)
        self._where = {hf_name: name for name, hf_name in self._to_hf.items() if name in self._tensors}

    def has(self, name: str) -> bool:
        return name in self._where

    def _values(self, name: str, rows: slice | np.ndarray) -> Float[Tensor, "row ..."]:
        """Rows `rows` of tensor `name` (a layer's: all of them) dequantised, float32, in Hugging
        Face's layout (the architecture's TensorProcessor applied)."""
        stored = self._tensors[name]
        values = _gguf_package().quants.dequantize(stored.data[rows], stored.qtype)  # [row, column]
        if isinstance(rows, slice) and rows == slice(None):
            values = values.reshape(stored.shape)  # [rows, column] -> the tensor's own shape
        kept: dict[str, dict] = {"tensors": {}}  # where GPT-2's processor puts output.weight
        result = self._processor.process(
            weights=values, name=name, tensor_key_mapping=self._to_hf, parsed_parameters=kept
        )
        if result.name is None:
            (values,) = kept["tensors"].values()
            return torch.as_tensor(values, dtype=torch.float32)
        return torch.from_numpy(np.array(result.weights, dtype=np.float32))  # a writable copy

    def read(self, name: str, dtype: torch.dtype = torch.float32) -> Float[Tensor, "..."]:
        """Tensor `name` in `dtype`: a layer's dequantised whole, the embedding and the unembedding
        a block of rows at a time (never the whole matrix in float32 and `dtype` at once)."""
        stored = self._where[name]
        if stored not in ROW_WISE:
            return self._values(stored, slice(None)).to(dtype)
        shape = self._tensors[stored].shape  # [vocab, d_model]
        out = torch.empty(shape, dtype=dtype)
        step = max(1, CHUNK_BYTES // (4 * shape[-1]))
        for start in range(0, shape[0], step):
            out[start : start + step] = self._values(stored, slice(start, start + step))
        return out

    def optional(self, name: str) -> Tensor | None:
        return self.read(name) if self.has(name) else None

    def rows(self, name: str, tokens: Int[Tensor, "token"]) -> Float[Tensor, "token d_model"]:
        """Rows `tokens` of a row-wise matrix (the embedding), float32: only those rows dequantised."""
        stored = self._where[name]
        if stored not in ROW_WISE:
            raise ValueError(f"{stored} is dequantised whole, not by rows")
        return self._values(stored, tokens.numpy())
