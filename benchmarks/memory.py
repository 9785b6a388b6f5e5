"""The memory model (`headscope.models.memory`) against measured peak RSS: loading, and the report's phases.

Run: `python -m benchmarks.memory --shapes organism,tiny-llama,gpt2,135m --dtypes float32,bfloat16`
(`--phases organism,gpt2`: also each report phase's peak on those shapes, one task, a few prompts;
`--record FILE` appends the figures, the command line and the processor to FILE, markdown).

Load: each shape and dtype in its own process (`_load_child`): after the imports a report makes,
the kernel's peak mark is reset (`/proc/self/clear_refs`), the model is loaded (`load_model`) and
run once on a short batch (a forward pass touches every weight: a float32 checkpoint's pages are
memory-mapped, resident only once read), and the peak (VmHWM) is read; the prediction is
`memory.load_peak(memory.config_shape(folder), dtype)`, from the config alone, before loading.

Phases: the report planned and run in one process (`_phases_child`, tasks in this process): at
each progress line the peak mark is reset to the current RSS, so each phase's peak is its own;
beside it the plan's predicted peak of that phase (`ReportPlan.table()`).

Shapes (random weights, each saved once to a temporary folder; `-bf16`: the checkpoint's files in
bfloat16, as the field's models ship): the organism; tiny Llama, Gemma 2 and GPT-NeoX (hidden 64,
2 layers, a word-level tokenizer); GPT-2 small (`gpt2_shape.save_gpt2_shaped`); SmolLM-135M's
shape (`atlas.save_135m_shaped`); a 300M-class Llama (16 layers x 16 heads, 4 kv, d_model 1024,
MLP 2816, vocabulary 49,152). RSS is what this measures; times on the shared machine are not.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
SHAPE_300M = dict(
    hidden_size=1024, intermediate_size=2816, num_hidden_layers=16, num_attention_heads=16,
    num_key_value_heads=4, max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=True,
)  # fmt: skip
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
PROBE = "The cat sat on the mat and then the dog ran to the park with the ball"


def _tiny(directory: Path, family: str) -> Path:
    """A tiny random model of `family` (llama, gemma2, neox) with a word-level tokenizer."""
    import transformers as T

    from headscope.models.organism.tokenizer import word_level_tokenizer
    from headscope.tasks.vocabulary import task_vocabulary

    tokenizer = word_level_tokenizer(task_vocabulary())
    configs = {
        "llama": T.LlamaConfig(**TINY, num_key_value_heads=2),
        "gemma2": T.Gemma2Config(**TINY, num_key_value_heads=2, head_dim=16),
        "neox": T.GPTNeoXConfig(**TINY),
    }
    config = configs[family]
    config.vocab_size, config.bos_token_id, config.eos_token_id = len(tokenizer), 0, 0
    torch.manual_seed(0)
    T.AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _in_bf16(directory: Path) -> Path:
    """The checkpoint of `directory` re-saved with bfloat16 files, as a sibling `<name>-bf16`."""
    import transformers as T

    target = directory.with_name(directory.name + "-bf16")
    model = T.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.bfloat16)
    model.save_pretrained(target)
    T.AutoTokenizer.from_pretrained(directory).save_pretrained(target)
    return target


def _300m(directory: Path) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from benchmarks.atlas import cut_gpt2_tokenizer

    tokenizer = cut_gpt2_tokenizer(49152)
    config = LlamaConfig(**SHAPE_300M, vocab_size=len(tokenizer), bos_token_id=49151, eos_token_id=49151)
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def save_shape(name: str, folder: Path) -> str:
    """The model folder of a shape name (saved under `folder` once), or 'organism'."""
    from benchmarks.atlas import save_135m_shaped
    from benchmarks.gpt2_shape import save_gpt2_shaped

    if name == "organism":
        return name
    base = name.removesuffix("-bf16")
    target = folder / base
    if not (target / "config.json").is_file():
        builders = {"gpt2": save_gpt2_shaped, "135m": save_135m_shaped, "300m": _300m}
        family = base.removeprefix("tiny-")
        builders.get(base, lambda d: _tiny(d, family))(target)
    if name.endswith("-bf16"):
        bf16 = target.with_name(target.name + "-bf16")
        return str(bf16 if (bf16 / "config.json").is_file() else _in_bf16(target))
    return str(target)


# ---- in the child process ----------------------------------------------------------------------


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    """The kernel's peak-RSS mark (VmHWM) set to the current RSS (Linux)."""
    Path("/proc/self/clear_refs").write_text("5")


def _load_child(spec: str, dtype: str) -> dict:
    from headscope.models import memory
    from headscope.models.loading import load_model
    from headscope.report import plan  # noqa: F401  # the imports a report makes

    directory = memory.model_folder(spec)
    predicted = memory.load_peak(memory.config_shape(directory), dtype)
    base = _status_bytes("VmRSS")
    _reset_peak()
    model = load_model(spec, dtype=dtype, threads=1)
    with torch.no_grad():
        model.bridge(model.to_tokens([PROBE] * 4))
    peak = _status_bytes("VmHWM")
    params = sum(p.numel() for p in model.bridge.original_model.parameters())
    return {"base_gb": base / 1e9, "peak_gb": peak / 1e9, "predicted_gb": predicted / 1e9, "params": params}


# The report's progress lines that start each phase (the plan's phase names).
PHASE_LINES = {
    "OV kernel": "OV pass",
    "one forward pass": "capture",
    ": ov tables": "OV tables",
    ": dla table": "DLA",
    ": knockout table": "knockouts",
    ": circuit tables": "circuit",
    ": cast tables": "cast",
    ": qk tables": "QK",
    "attention vs. logit scatter": "scatter",
    "head atlas": "atlas",
    "writing results.json": "page",
}


class _Marks:
    """Each phase's peak RSS: at a phase's first line, freed heap memory is given back
    (`malloc_trim`) and the peak mark reset, so the phase's peak is its own."""

    def __init__(self) -> None:
        import ctypes

        self.trim = ctypes.CDLL("libc.so.6").malloc_trim
        self.phase, self.start = "", 0
        self.peaks: dict[str, tuple[int, int]] = {}  # phase -> (its peak, RSS at its start)

    def begin(self, phase: str) -> None:
        if self.phase:
            peak, start = self.peaks.get(self.phase, (0, 0))
            self.peaks[self.phase] = (max(peak, _status_bytes("VmHWM")), max(start, self.start))
        self.trim(0)
        self.phase, self.start = phase, _status_bytes("VmRSS")
        _reset_peak()

    def say(self, message: str) -> None:
        phase = next((name for line, name in PHASE_LINES.items() if line in message), None)
        if phase is not None and phase != self.phase:
            self.begin(phase)


def _phases_child(spec: str, tasks: str, sizes: str, threads: str) -> dict:
    """The report on `tasks` in this process at `sizes` ("n,knockout_n,knockout_exact,circuit_n"),
    each phase's measured peak RSS (the largest over the tasks) beside the plan's prediction."""
    from headscope.models.loading import load_model
    from headscope.report import plan
    from headscope.report.compute import ReportOptions, analyse_task

    model = load_model(spec, threads=int(threads))
    n, knockout_n, exact, circuit_n = (int(x) for x in sizes.split(","))
    names = tasks.split(",")
    options = ReportOptions(tasks=tuple(names), n=n, knockout_n=knockout_n, knockout_exact=exact,
                            circuit_n=circuit_n)  # fmt: skip
    found = plan.plan_report(model, names, options, budget=None, say=lambda m: None, rate=1e11, workers=1)
    marks = _Marks()
    # the task's lines are said as its steps start, not held until it is done
    plan.analyse_task = lambda model, data, options, say, passes=None: analyse_task(
        model, data, options, marks.say, passes
    )
    marks.begin("before")
    with tempfile.TemporaryDirectory() as out:
        plan.run_plan(found, marks.say, out=Path(out))
    marks.begin("")
    predicted = found.table().groupby("phase", sort=False)["peak_gb"].max()
    return {
        "measured": {phase: peak / 1e9 for phase, (peak, _) in marks.peaks.items()},
        "predicted": predicted.to_dict(),
        "plan_peak": found.peak / 1e9,
    }


# ---- the parent ---------------------------------------------------------------------------------


def child(kind: str, *args: str) -> dict:
    """One measurement in its own process (a fresh allocator, its own peak)."""
    code = f"import json, benchmarks.memory as m; print(json.dumps(m._{kind}_child(*{list(args)!r})))"
    env = {"PYTHONPATH": f"{REPO / 'src'}:{REPO}", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def load_rows(shapes: list[str], dtypes: list[str], folder: Path) -> pd.DataFrame:
    rows = []
    for shape in shapes:
        spec = save_shape(shape, folder)
        for dtype in dtypes:
            found = child("load", spec, dtype)
            print(f"  {shape} {dtype}: {found}", flush=True)
            rows.append(
                {
                    "shape": shape,
                    "dtype": dtype,
                    "params_m": round(found["params"] / 1e6, 1),
                    "predicted_gb": round(found["predicted_gb"], 3),
                    "measured_gb": round(found["peak_gb"], 3),
                    "measured/predicted": round(found["peak_gb"] / found["predicted_gb"], 2),
                }
            )
    return pd.DataFrame(rows)


def phase_rows(shape: str, folder: Path, args: argparse.Namespace) -> str:
    """Each phase's predicted and measured peak on one shape, and the whole run's."""
    found = child("phases", save_shape(shape, folder), args.tasks, args.sizes, str(args.threads))
    rows = [
        {"phase": phase, "predicted_gb": round(predicted, 2), "measured_gb": round(measured, 2),
         "measured/predicted": round(measured / predicted, 2)}
        for phase, predicted in found["predicted"].items()
        if (measured := found["measured"].get(phase, 0.0)) > 0
    ]  # fmt: skip
    peak = max(found["measured"].values())
    ratio = peak / found["plan_peak"]
    whole = f"whole run: predicted {found['plan_peak']:.2f} GB, measured {peak:.2f} GB ({ratio:.2f})"
    title = f"phases of {shape} (tasks {args.tasks}; n, knockout_n, knockout_exact, circuit_n {args.sizes}):"
    return f"{title}\n\n{pd.DataFrame(rows).to_string(index=False)}\n{whole}"


def main(argv: list[str] | None = None) -> None:
    from benchmarks.report import processor

    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory")
    parser.add_argument("--shapes", default="organism,tiny-llama,tiny-gemma2,tiny-neox,gpt2,135m")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--phases", default="", help="shapes whose report phases are measured")
    parser.add_argument("--tasks", default="ioi")
    parser.add_argument("--sizes", default="32,16,4,4", help="n,knockout_n,knockout_exact,circuit_n")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--folder", type=Path, default=None, help="keep the saved shapes here")
    parser.add_argument("--record", type=Path, default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        shapes = [s for s in args.shapes.split(",") if s]
        text = f"{processor()}\n\nload (the model loaded and run once):\n\n"
        text += load_rows(shapes, args.dtypes.split(","), folder).to_string(index=False) + "\n"
        for shape in (s for s in args.phases.split(",") if s):
            text += "\n" + phase_rows(shape, folder, args) + "\n"
    print(text)
    if args.record is not None:
        given = " ".join(sys.argv[1:] if argv is None else argv)
        with args.record.open("a", encoding="utf-8") as record:
            record.write(f"\n`python -m benchmarks.memory {given}`\n\n```\n{text}\n```\n")


if __name__ == "__main__":
    main()
