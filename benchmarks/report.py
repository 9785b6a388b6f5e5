"""The whole `headscope report`, before and after, side by side, per phase, on four model shapes.

Run: `python -m benchmarks report` (the organism, every task it keeps, 200 prompts, 1 thread), or
`python -m benchmarks.report --shapes gpt2,135m --threads 1,2 --tasks ioi --n 40` for what fits.
Shapes (random weights but the organism; each saved once to a temporary folder):

- `organism`: the shipped model (`headscope report` with no --model: `make report`);
- `gpt2`: GPT-2 small's shape with GPT-2's real tokenizer (`gpt2_shape.save_gpt2_shaped`);
- `135m`: SmolLM-135M's shape, 30 x 9 heads, 3 key/value heads, d_model 576, vocabulary 49,152
  (`atlas.save_135m_shaped`, GPT-2's tokenizer cut to 49,152 tokens);
- `270m`: a 270M-class shape, 18 x 4 heads, 1 key/value head, d_model 640, d_head 256, vocabulary
  262,144 (`save_270m_shaped`: Llama-style, GPT-2's tokenizer padded with tokens no text spells).

For each shape and thread count, BEFORE (`--before`: a checkout folder, default /work/base, or a
commit) and AFTER (`--after`: a folder, default this working tree) run as their own processes
(`report_gpt2.run_report`, PYTHONPATH=<side>/src) one after the other on the same model folder;
the seconds per phase come from each report's timestamped log lines (one-second resolution),
the whole process's wall and CPU time and peak RSS from `os.wait4`, and the two runs' CSVs are
compared table by table. `--record FILE` appends the figures, the command line, the processor
(lscpu) and the load average to FILE (markdown). The machine is shared: compare ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from benchmarks.atlas import save_135m_shaped
from benchmarks.gpt2_shape import EOS, TOKENIZER_DIR, save_gpt2_shaped
from benchmarks.report_gpt2 import Measured, compare_tables, per_phase, run_report, side_by_side, worktree

REPO = Path(__file__).resolve().parents[1]
BASE = Path("/work/base")  # main before this work (40e1fc4), a checkout of its own
VOCAB_270M = 262144
SHAPE_270M = dict(
    hidden_size=640, intermediate_size=2048, num_hidden_layers=18, num_attention_heads=4,
    num_key_value_heads=1, head_dim=256, max_position_embeddings=2048, rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)  # fmt: skip


def padded_gpt2_tokenizer(size: int = VOCAB_270M) -> PreTrainedTokenizerFast:
    """GPT-2's BPE (50,257 tokens, its merges) and `size - 50,257` more tokens that no text spells
    (`<|pad-N|>`, never produced by a merge): a vocabulary of `size` for the unembedding."""
    vocab = json.loads((TOKENIZER_DIR / "encoder.json").read_text(encoding="utf-8"))
    vocab |= {f"<|pad-{i}|>": i for i in range(len(vocab), size)}
    lines = (TOKENIZER_DIR / "vocab.bpe").read_text(encoding="utf-8").splitlines()[1:]
    tokenizer = Tokenizer(BPE(vocab=vocab, merges=[tuple(line.split(" ")) for line in lines if line]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=EOS, eos_token=EOS, unk_token=EOS)


def save_270m_shaped(directory: Path, seed: int = 0, **shape) -> Path:
    """A random Llama-style model of a 270M-class shape (or `shape`) with the padded GPT-2 tokenizer."""
    tokenizer = padded_gpt2_tokenizer(shape.pop("vocab_size", VOCAB_270M))
    eos = tokenizer.convert_tokens_to_ids(EOS)
    config = LlamaConfig(
        **(SHAPE_270M | shape), vocab_size=len(tokenizer), bos_token_id=eos, eos_token_id=eos
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


SHAPES = {
    "organism": lambda folder: "organism",
    "gpt2": lambda folder: save_gpt2_shaped(folder / "gpt2"),
    "135m": lambda folder: save_135m_shaped(folder / "135m"),
    "270m": lambda folder: save_270m_shaped(folder / "270m"),
}


def side_src(given: str) -> Path:
    """A side's src folder: `tree` (this working tree), a checkout folder, or a commit."""
    if given == "tree":
        return REPO / "src"
    if Path(given).is_dir():
        return Path(given) / "src"
    return worktree(given) / "src"


def processor() -> str:
    """The processor's model name and cores (lscpu), for the record."""
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return f"{os.cpu_count()} CPUs (no lscpu)"
    fields = dict(line.split(":", 1) for line in lines if ":" in line)
    name = fields.get("Model name", "?").strip()
    return f"{name}, {fields.get('CPU(s)', '?').strip()} CPUs"


def compare_pair(
    shape: str, model, threads: int, args: argparse.Namespace, folder: Path
) -> tuple[Measured, Measured]:
    """BEFORE then AFTER on one model and thread count."""
    tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip()) if args.tasks else ()
    extra = tuple(args.extra.split()) if args.extra else ()
    sides = []
    for label, given in (("before", args.before), ("after", args.after)):
        out = folder / f"{shape}-{threads}-{label}"
        sides.append(run_report(label, side_src(given), model, tasks, args.n, out, threads, extra))
    return sides[0], sides[1]


def summary(shape: str, threads: int, before: Measured, after: Measured, load: tuple[float, float]) -> str:
    """The pair's figures as markdown: per phase, tables compared, whole process."""
    phases = per_phase(side_by_side(before, after))
    tables = compare_tables(before.out, after.out)
    lines = [
        f"### {shape}, {threads} thread{'s' if threads > 1 else ''} "
        f"(load average {load[0]:.1f} at the start, {load[1]:.1f} at the end)",
        "",
        "| whole process | before | after | before / after |",
        "|---|---|---|---|",
        f"| wall s | {before.wall_s:.1f} | {after.wall_s:.1f} | {before.wall_s / after.wall_s:.2f} |",
        f"| CPU s | {before.cpu_s:.1f} | {after.cpu_s:.1f} | {before.cpu_s / after.cpu_s:.2f} |",
        f"| peak RSS GB | {before.peak_rss_gb:.2f} | {after.peak_rss_gb:.2f} | |",
        "",
        "per phase, all tasks (seconds from the log lines):",
        "",
        "```",
        phases.to_string(index=False),
        "```",
        "",
        "tables, before against after:",
        "",
        "```",
        tables.to_string(index=False),
        "```",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report")
    parser.add_argument("--shapes", default="organism", help=f"comma-separated: {', '.join(SHAPES)}")
    parser.add_argument("--threads", default="1", help="comma-separated thread counts (--threads of both)")
    parser.add_argument("--tasks", default="", help="comma-separated tasks (default: the report's choice)")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--extra", default="", help="more report options, e.g. '--knockout-n 0'")
    parser.add_argument("--before", default=str(BASE) if BASE.is_dir() else "40e1fc4")
    parser.add_argument("--after", default="tree")
    parser.add_argument("--record", type=Path, default=None, help="append the figures to this file")
    parser.add_argument("--keep", type=Path, default=None, help="write the models and reports here (kept)")
    args = parser.parse_args(argv or [])
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        raise SystemExit(f"unknown shape {unknown[0]!r}; choose from {', '.join(SHAPES)}")
    head = [
        f"## `python -m benchmarks.report {shlex.join(argv or [])}`",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {processor()}; before: {args.before}, "
        f"after: {args.after}",
        "",
    ]
    print("\n".join(head), flush=True)
    parts = head
    with tempfile.TemporaryDirectory() as tmp:
        tmp = args.keep or tmp
        Path(tmp).mkdir(parents=True, exist_ok=True)
        for shape in shapes:
            model = SHAPES[shape](Path(tmp))
            for threads in [int(t) for t in args.threads.split(",")]:
                start = os.getloadavg()[0]
                before, after = compare_pair(shape, model, threads, args, Path(tmp))
                text = summary(shape, threads, before, after, (start, os.getloadavg()[0]))
                print(text, flush=True)
                parts.append(text)
    if args.record is not None:
        with args.record.open("a", encoding="utf-8") as record:
            record.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
