"""OV scores from the command line, whole process: one `headscope scores` invocation against the
straightforward per-head reference script, each its own process, side by side.

Run: `python -m benchmarks ov_cli`. The model is GPT-2-small-shaped (12 x 12 heads, d_model 768,
random weights) with GPT-2's real tokenizer (`benchmarks/gpt2_shape.py`), saved to a temporary
folder; the keywords are the first 1,000 lower-case words of GPT-2's vocabulary that are one token
with a leading space. Both processes score copy, negative copy and next of all 144 heads on the
`context` embedding (block 0's output at each keyword's position in the prompt ` w1 w2 ...`), top-5:

- headscope: `headscope scores --keywords ... --relation copy,-copy,next --heads all --out CSV`;
- the reference (`python -m benchmarks.ov_cli reference ...`): Hugging Face's model and nothing of
  headscope; the prompt's hidden states after block 0, then per head and sign the full-width OV
  output, the final layer norm and the full unembedding (1,000 x 50,257 logits), and each target's
  rank counted from them (the same tie rule as headscope's).

Each pair is timed from outside (wall: a monotonic clock around the child; CPU: the child's user +
system seconds); the pairs alternate (headscope, reference, headscope, ...) so the ratio of each
pair is taken on the same machine state. HEADSCOPE_BENCH_RUNS pairs (default 1);
HEADSCOPE_BENCH_THREADS=N gives both processes N torch threads (default: each its own default,
headscope's chosen by the machine's load, torch's all cores). Hits and n of every head, relation
and sign are compared between the two CSVs.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIGNED = (("copy", 1), ("copy", -1), ("next", 1))
K = 5
N_WORDS = 1000


def keywords(tokenizer_dir: Path, n: int = N_WORDS) -> list[str]:
    """The first `n` lower-case alphabetic words (3+ letters) of the vocabulary that are one token
    with a leading space ('Ġword'), in token-id order."""
    vocab = json.loads((tokenizer_dir / "encoder.json").read_text(encoding="utf-8"))
    spelled = sorted(vocab.items(), key=lambda item: item[1])
    words = [t[1:] for t, _ in spelled if t.startswith("\u0120") and t[1:].isalpha() and t[1:].islower()]
    return [w for w in words if len(w) >= 3][:n]


# ---- the reference: its own process, Hugging Face and torch only --------------------------------


def reference_targets(tokenizer, words: list[str]) -> dict:
    """Per relation: each keyword's target token ids (' w' and 'w', each if one token; padded by
    repeating the first) [row, 2] and whether it has a target [row]."""
    import torch

    def spellings(word: str) -> list[int]:
        found = sorted({i[0] for i in (tokenizer.encode(" " + word), tokenizer.encode(word)) if len(i) == 1})
        return (found * 2)[:2]

    copy = torch.tensor([spellings(w) for w in words])
    following = torch.cat([copy[1:], copy[:1]])  # the last keyword has no next: marked invalid
    valid = torch.ones(len(words), dtype=torch.bool)
    return {"copy": (copy, valid), "next": (following, torch.cat([valid[1:], ~valid[:1]]))}


def reference_rows(model, tokenizer, words: list[str]):
    """Block 0's output at every keyword, prompts ' w1 w2 ...' after BOS split to fit n_ctx."""
    import torch

    ids = [tokenizer.encode(" " + w) for w in words]
    assert all(len(i) == 1 for i in ids), "every keyword must be one token"
    chunk = model.config.n_positions - 1
    rows = []
    for start in range(0, len(ids), chunk):
        prompt = [tokenizer.bos_token_id] + [i[0] for i in ids[start : start + chunk]]
        with torch.no_grad():
            hidden = model(torch.tensor([prompt]), output_hidden_states=True).hidden_states[1]
        rows.append(hidden[0, 1:])  # [keyword, d_model], after block 0
    return torch.cat(rows)


def reference_logits(model, x, layer: int, head: int, sign: int):
    """The head's full-width OV output of every row (sign s), final layer norm, full unembedding."""
    block, d = model.transformer.h[layer], model.config.n_embd
    dh = d // model.config.n_head
    cols = slice(2 * d + head * dh, 2 * d + (head + 1) * dh)  # the values in c_attn's [q, k, v]
    v = block.ln_1(x) @ block.attn.c_attn.weight[:, cols] + block.attn.c_attn.bias[cols]
    out = sign * (v @ block.attn.c_proj.weight[head * dh : (head + 1) * dh])  # [row, d_model]
    return model.lm_head(model.transformer.ln_f(out))  # [row, vocab]


def reference_hits(logits, tokens, valid) -> tuple[int, int]:
    """Hits (rank of the best target < K: other tokens with a logit at least its) and n."""
    best = logits.gather(1, tokens).amax(1)  # [row]
    rank = (logits >= best[:, None]).sum(1) - 1
    return int(((rank < K) & valid).sum()), int(valid.sum())


def reference_main(model_dir: str, words_file: str, out: str) -> None:
    """Every head, copy, -copy and next: hits and n, as a CSV."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if os.environ.get("HEADSCOPE_BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["HEADSCOPE_BENCH_THREADS"]))
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()  # float32, as saved
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    words = Path(words_file).read_text(encoding="utf-8").split()
    x, targets = reference_rows(model, tokenizer, words), reference_targets(tokenizer, words)
    lines = []
    with torch.no_grad():
        for layer in range(model.config.n_layer):
            for head in range(model.config.n_head):
                logits = {s: reference_logits(model, x, layer, head, s) for s in (1, -1)}  # once a sign
                for relation, sign in SIGNED:
                    hits, n = reference_hits(logits[sign], *targets[relation])
                    lines.append((layer, head, relation, sign, hits, n))
    with open(out, "w", newline="") as handle:
        csv.writer(handle).writerows([("layer", "head", "relation", "sign", "hits", "n"), *lines])


# ---- the side-by-side timing -----------------------------------------------------------------------


def headscope_command(model_dir: Path, words: str, out: Path) -> list[str]:
    threads = os.environ.get("HEADSCOPE_BENCH_THREADS")
    return [
        sys.executable, "-m", "headscope.cli", "scores", "--model", str(model_dir), "--keywords", words,
        "--relation", "copy,-copy,next", "--heads", "all", "--k", str(K), "--out", str(out),
        *(["--threads", threads] if threads else []),
    ]  # fmt: skip


def reference_command(model_dir: Path, words_file: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "benchmarks.ov_cli", "reference", str(model_dir), str(words_file), str(out)]


def timed(command: list[str]) -> tuple[float, float]:
    """Wall and CPU (user + system) seconds of the whole child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{command[2:4]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _hits(path: Path) -> dict[tuple[int, int, str, int], tuple[int, int]]:
    with open(path, newline="") as handle:
        return {
            (int(r["layer"]), int(r["head"]), r["relation"], int(r["sign"])): (int(r["hits"]), int(r["n"]))
            for r in csv.DictReader(handle)
        }


def compare(model_dir: Path, words: list[str], runs: int = 1) -> dict:
    """`runs` pairs, alternating; the figures of each and whether the outputs agree."""
    with tempfile.TemporaryDirectory(prefix="ov_cli_") as folder:
        return _compare(model_dir, words, runs, Path(folder))


def _compare(model_dir: Path, words: list[str], runs: int, work: Path) -> dict:
    words_file = work / "words.txt"
    words_file.write_text(" ".join(words), encoding="utf-8")
    pairs = []
    for run in range(runs):
        ours, theirs = work / f"headscope{run}.csv", work / f"reference{run}.csv"
        load = os.getloadavg()[0]
        a = timed(headscope_command(model_dir, " ".join(words), ours))
        b = timed(reference_command(model_dir, words_file, theirs))
        pairs.append(dict(load=load, headscope=a, reference=b, wall_ratio=b[0] / a[0], cpu_ratio=b[1] / a[1]))
    got, want = _hits(ours), _hits(theirs)
    differ = [key for key in want if got.get(key) != want[key]]
    return dict(pairs=pairs, compared=len(want), rows=len(got), mismatches=differ)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def report(figures: dict, label: str) -> None:
    print(f"{label}; a shared machine (other jobs running), the pairs alternate, ratios pair by pair")
    for i, p in enumerate(figures["pairs"]):
        (aw, ac), (bw, bc) = p["headscope"], p["reference"]
        print(
            f"   pair {i + 1} (load {p['load']:.1f}): headscope {aw:7.1f} s wall {ac:7.1f} s cpu | "
            f"reference {bw:7.1f} s wall {bc:7.1f} s cpu | ratio {p['wall_ratio']:5.1f}x wall "
            f"{p['cpu_ratio']:5.1f}x cpu"
        )
    wall = _median([p["wall_ratio"] for p in figures["pairs"]])
    cpu = _median([p["cpu_ratio"] for p in figures["pairs"]])
    print(f"   median ratio: {wall:.1f}x wall, {cpu:.1f}x cpu (goal: at least 10x, whole process)")
    bad = figures["mismatches"]
    print(
        f"   outputs: hits and n of {figures['compared']} head x relation-sign rows compared, "
        f"{len(bad)} differ{' (' + ', '.join(map(str, bad[:5])) + ')' if bad else ''}",
        flush=True,
    )


def main() -> None:
    from benchmarks.gpt2_shape import TOKENIZER_DIR, save_gpt2_shaped

    runs = int(os.environ.get("HEADSCOPE_BENCH_RUNS", "1"))
    threads = os.environ.get("HEADSCOPE_BENCH_THREADS", "each its default")
    with tempfile.TemporaryDirectory() as folder:
        model_dir = save_gpt2_shaped(Path(folder) / "gpt2-small-shaped")
        figures = compare(model_dir, keywords(TOKENIZER_DIR), runs)
    report(figures, f"144 heads x {N_WORDS} keywords, copy, -copy, next, top-{K}, threads: {threads}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["reference"]:
        reference_main(*sys.argv[2:5])
    else:
        main()
