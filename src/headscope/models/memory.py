"""What loading a model needs in memory, predicted from its config before any weight is read.

The TransformerLens bridge boots the whole model on one device in the dtype asked for (`--dtype`,
float32 unless given), and headscope then reads the weights its scores use into float32
(models/weights.py). The peak resident memory of loading (and of the first forward pass, which
touches every weight: a float32 checkpoint's pages are memory-mapped and count once read) is

    BASE_BYTES                                  the process before the model (Python, torch,
                                                transformers, TransformerLens, headscope)
    + LOAD_FACTOR x bytes(dtype) x (parameters + the fused q|k|v projections the bridge splits
                                                into separate copies: GPT-2, GPT-NeoX, BLOOM, Falcon)
    + 4 x (2 L H d_model d_head                 the scores' W_V and W_O, per query head, float32
           + d_model d_vocab where the dtype    the unembedding in float32 (a view of the model's
             is not float32)                    own in float32)
    + CONVERT_SHARE x bytes(file dtype)         where the files' dtype (config.json's) is not the
      x parameters                              one asked for: the checkpoint's memory-mapped pages
                                                read while each tensor is converted

`LOAD_FACTOR` (what the bridge and the loader hold besides the parameters: buffers, hooks, the
tokenizer) and `CONVERT_SHARE` are fitted on the peaks measured in benchmarks/results/memory.md
(`python -m benchmarks.memory`): measured / predicted 0.93-1.02 over the organism, tiny Llama,
Gemma 2 and GPT-NeoX, GPT-2 small, SmolLM-135M's shape (float32 and bfloat16 files) and a
300M-class Llama (bfloat16 files), each loaded in float32 and in bfloat16.

`check_fits` refuses a load, before anything is read, only when even the lowest measured share of
the prediction (`FIT_SHARE` x predicted) exceeds the memory available now, so a model that fits
is never refused; its one line names what the model needs, what is free, and the option that
would make it fit. A split model (`--device-map`: accelerate places each layer, offloading to
disk what does not fit), a model loaded onto a GPU, a GGUF file and a hub name that is not cached
are not checked (their peak is not this formula's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import psutil
import torch

from headscope.models.checks import ModelError
from headscope.models.gguf_files import is_gguf
from headscope.models.loading import Model, resolve

GB = 1e9
GIB = 1 << 30
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
BASE_BYTES = int(0.55 * GB)  # measured: 0.49 GB after the report's imports, 0.54-0.55 GB with a tiny model
LOAD_FACTOR = 1.1  # fitted: see the module docstring
CONVERT_SHARE = 0.6  # fitted: 0.46-0.68 of the files' bytes read beside the converted model
FIT_SHARE = 0.9  # below the lowest measured / predicted (0.93): refuse only above available / this
FUSED_QKV = ("c_attn", "query_key_value")  # fused projections the bridge splits into q, k and v
OFFLOAD_SHARE = 0.7  # of the memory available, the CPU cap suggested for a split model


@dataclass(frozen=True)
class MemoryShape:
    """What the memory model reads of a model: its parameters (tied ones once), the fused
    q|k|v parameters the bridge copies, and the shape of the scores' float32 weights."""

    params: int
    fused_qkv: int
    n_layers: int
    n_heads: int
    d_model: int
    d_head: int
    d_vocab: int
    file_dtype: str = "float32"  # the checkpoint's files' (config.json's `dtype`)

    @classmethod
    def of(cls, model: Model) -> MemoryShape:
        """The shape of a loaded model: its parameters as the bridge holds them (the split copies
        counted among them, each tensor once)."""
        i = model.identity
        held = {(p.data_ptr(), p.numel()): p.numel() for p in model.bridge.parameters()}
        dtype = str(model.dtype).removeprefix("torch.")
        return cls(sum(held.values()), 0, i.n_layers, i.n_heads, i.d_model, i.d_head, i.d_vocab, dtype)


def _fused(module: torch.nn.Module) -> int:
    """Parameters of the fused q|k|v projections (named in FUSED_QKV) of a Hugging Face module."""
    return sum(p.numel() for name, p in module.named_parameters() if name.split(".")[-2] in FUSED_QKV)


def config_shape(directory: Path) -> MemoryShape:
    """The MemoryShape a Hugging Face folder's config.json implies, counted on the meta device
    (no memory allocated, no weight read)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(directory)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    text = config.get_text_config()
    heads = int(text.num_attention_heads)
    d_model = int(text.hidden_size)
    d_head = int(getattr(text, "head_dim", None) or d_model // heads)
    return MemoryShape(
        params=sum(p.numel() for p in skeleton.parameters()),
        fused_qkv=_fused(skeleton),
        n_layers=int(text.num_hidden_layers),
        n_heads=heads,
        d_model=d_model,
        d_head=d_head,
        d_vocab=int(text.vocab_size),
        file_dtype=_dtype_name(getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)),
    )


def _dtype_name(dtype) -> str:
    """'float32', 'bfloat16' or 'float16' from a config's dtype (a torch dtype or its name); float32
    where the config names none."""
    name = str(dtype).removeprefix("torch.")
    return name if name in BYTES else "float32"


def weights_bytes(shape: MemoryShape, dtype: str) -> int:
    """The scores' weights headscope keeps in float32: W_V and W_O per query head, and the
    unembedding where the model's own is not float32."""
    per_head = 2 * shape.n_layers * shape.n_heads * shape.d_model * shape.d_head
    unembedding = 0 if dtype == "float32" else shape.d_model * shape.d_vocab
    return 4 * (per_head + unembedding)


def model_bytes(shape: MemoryShape, dtype: str) -> int:
    """The model as the bridge holds it: its parameters and the split copies of fused ones."""
    return BYTES[dtype] * (shape.params + shape.fused_qkv)


def load_peak(shape: MemoryShape, dtype: str) -> int:
    """Predicted peak resident bytes of loading the model in `dtype` and running it once."""
    converted = 0 if shape.file_dtype == dtype else CONVERT_SHARE * BYTES[shape.file_dtype] * shape.params
    return BASE_BYTES + int(LOAD_FACTOR * model_bytes(shape, dtype) + converted) + weights_bytes(shape, dtype)


def resident_bytes(model: Model) -> int:
    """Predicted resident bytes of a loaded model while it runs (the load's peak)."""
    return load_peak(MemoryShape.of(model), str(model.dtype).removeprefix("torch."))


def available_bytes() -> int:
    """Memory available now (psutil: MemAvailable on Linux), on any system."""
    return int(psutil.virtual_memory().available)


def model_folder(spec: str) -> Path | None:
    """The local folder holding a --model's config.json (the organism, a folder, a hub name in the
    local cache); None for a GGUF file or a hub name not cached."""
    if is_gguf(spec):
        return None
    path = resolve(spec)[1]  # a missing path is the loader's ModelError, said here first
    if path is not None:
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec, local_files_only=True, allow_patterns=["config.json"]))
    except Exception:  # not cached, not a repository name, or no huggingface_hub
        return None


def check_fits(
    spec: str,
    dtype: str,
    split: bool,
    device: torch.device,
    streamable: bool = False,
    free: int | None = None,
) -> None:
    """A ModelError when loading `spec` in `dtype` cannot fit in the memory available (`free`,
    default `available_bytes()`), before anything is read; nothing for a split model, a GPU, or
    a model whose config is not at hand. `streamable`: the command can stream its weights instead
    (`headscope atlas --stream`), which the message then names."""
    folder = None if split or device.type != "cpu" else model_folder(spec)
    if folder is None:
        return
    try:
        shape = config_shape(folder)
    except Exception:  # a config the loader refuses with its own line (checks.check_model_dir)
        return
    free = available_bytes() if free is None else free
    need = load_peak(shape, dtype)
    if FIT_SHARE * need <= free:
        return
    what = f"loading {spec} in {dtype} needs about {need / GB:.1f} GB ({shape.params / 1e9:.2f}B parameters)"
    raise ModelError(f"{what}, {free / GB:.1f} GB is available: {fix(shape, free, dtype, streamable)}")


def fix(shape: MemoryShape, free: int, dtype: str, streamable: bool) -> str:
    """The option that makes the load fit: --stream (the atlas), --dtype bfloat16, else a split
    model with the layers past a CPU cap offloaded to disk."""
    if streamable:
        return "add --stream (the weights read from the files one layer at a time)"
    half = load_peak(shape, "bfloat16")
    if dtype == "float32" and FIT_SHARE * half <= free:
        return f"add --dtype bfloat16 (about {half / GB:.1f} GB)"
    cap = math.floor(OFFLOAD_SHARE * (free - BASE_BYTES - weights_bytes(shape, dtype)) / GIB)
    if cap < 1:
        return "it cannot run here: use a machine with more memory (or a GPU: --device cuda)"
    return f"add --device-map auto --max-memory cpu={cap}GiB (the layers past {cap} GiB offloaded to disk)"
