"""--device, --dtype and --threads on every command that loads a model.

Each command runs in-process on the organism in float32 and in bfloat16: the bfloat16 output
must differ from float32's (the precision reached the model) and stay within the distance
benchmarks/precision.py measures. No GPU is available where these run, so the --device
errors are the real ones of a CPU-only machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from headscope.cli import main
from headscope.cli.app import Shared, state
from headscope.cli.common import load

NO_GPU = not torch.cuda.is_available()
ORGANISM = ("--model", "organism")
REPORT_TABLES = ("evaluation.csv", "dla.csv", "knockout.csv", "ov_scores.csv")  # one row per head or task


def run(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def numbers(path: Path) -> pd.DataFrame:
    """The float columns of a command's output: a CSV, a JSON object, or a report folder's CSVs."""
    if path.is_dir():
        frames = [numbers(path / name).add_prefix(f"{name}.") for name in REPORT_TABLES]
        return pd.concat(frames, axis=1)
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        return pd.DataFrame([{k: v for k, v in data.items() if isinstance(v, float)}])
    return pd.read_csv(path).select_dtypes("float")


# (command arguments, output name, absolute tolerance on every float of the output)
COMMANDS = {
    "evaluate": (("evaluate", "--task", "ioi", "--n", "16"), "out.json", 0.2),
    "scores": (("scores", "--task", "seq-digits", "--n", "16", "--negative"), "out.csv", 0.1),
    "attention": (("attention", "--task", "ioi", "--n", "16", "--heads", "2.0,3.1"), "out.csv", 0.02),
    "scatter": (("scatter", "--task", "ioi", "--n", "16", "--head", "2.0", "--n-boot", "50"), "out.csv", 0.1),
    "ablate": (("ablate", "--task", "seq-digits", "--n", "16"), "out.csv", 1.0),
    "ablate --greedy": (("ablate", "--task", "seq-digits", "--n", "16", "--greedy"), "out.csv", 1.0),
    "patch": (("patch", "--task", "seq-digits", "--n", "8"), "out.csv", 0.05),
    "report": (("report", "--tasks", "ioi", "--n", "16", "--knockout-n", "4"), "report", 1.0),
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_bfloat16_runs_every_command_near_float32(name, tmp_path, capsys):
    args, out_name, tolerance = COMMANDS[name]
    outputs = {}
    for dtype in ("float32", "bfloat16"):
        out = tmp_path / dtype / out_name
        out.parent.mkdir()
        code, printed = run(capsys, *args, *ORGANISM, "--dtype", dtype, "--threads", "1", "--out", str(out))
        assert code == 0, printed
        outputs[dtype] = numbers(out)
    full, half = outputs["float32"], outputs["bfloat16"]
    assert list(full.columns) == list(half.columns) and full.shape == half.shape and full.size > 0
    a, b = full.to_numpy(float), half.to_numpy(float)
    assert np.array_equal(np.isnan(a), np.isnan(b))
    assert not np.array_equal(a, b, equal_nan=True), "bfloat16 gave float32's exact numbers"
    finite = ~np.isnan(a)
    assert np.abs(a - b)[finite].max() <= tolerance


def test_tasks_show_takes_the_options(capsys):
    code, printed = run(capsys, "tasks", "show", "ioi", *ORGANISM, "--dtype", "bfloat16", "--device", "cpu")
    assert code == 0, printed
    assert "prompt 0" in printed


def test_the_options_reach_load_model(monkeypatch):
    seen = {}
    monkeypatch.setattr("headscope.cli.common.load_model", lambda spec, **kwargs: seen.update(kwargs))
    monkeypatch.setattr(state, "shared", Shared(device="cpu", dtype="float16", threads=1))
    load("organism")
    assert seen.items() >= {"device": "cpu", "dtype": "float16", "threads": 1}.items()


@pytest.mark.skipif(not NO_GPU, reason="this machine has a CUDA GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:7"])
@pytest.mark.parametrize("command", [("evaluate",), ("scores", "--task", "ioi"), ("report",)])
def test_a_missing_gpu_is_one_line_before_the_model_loads(command, device, capsys, monkeypatch):
    monkeypatch.setattr("headscope.cli.common.load_model", lambda *a, **k: pytest.fail("the model loaded"))
    code, printed = run(capsys, *command, "--device", device)
    assert code == 2
    lines = printed.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --device '{device}': "), printed
    assert "use --device cpu" in lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--device", "gpu"), "error: --device 'gpu' is not a device; use auto, cpu, cuda, cuda:N or mps"),
        (("--threads", "0"), f"error: --threads 0: give 1 to {os.cpu_count()} (this machine's cores)"),
        (
            ("--dtype", "float8"),
            "'--dtype': Value error, 'float8' is not one of 'float32', 'bfloat16', 'float16'",
        ),
    ],
)
def test_bad_values_are_one_line(args, message, capsys):
    code, printed = run(capsys, "evaluate", *args)
    assert code == 2
    lines = printed.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], printed


def test_a_precision_the_device_cannot_do_is_one_line(capsys, monkeypatch):
    def refuse(dtype, device):
        raise RuntimeError(f"addmm_impl_cpu_ not implemented for '{dtype}'")

    monkeypatch.setattr("headscope.models.devices._probe", refuse)
    code, printed = run(capsys, "evaluate", *ORGANISM, "--dtype", "float16", "--device", "cpu")
    assert code == 2
    lines = printed.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --dtype 'float16': cpu cannot compute in float16")
