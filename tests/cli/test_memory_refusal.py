"""A model that cannot fit in the memory available is refused before anything is read: one line
on stderr, exit 2, naming the need, what is free and the option that would make it fit."""

from __future__ import annotations

import json

import pytest

from headscope.cli import main
from tests.models.test_memory import LLAMA_8B

FREE = int(20e9)  # bytes "available" (the reader stood in for): Llama-3.1-8B's shape cannot fit


@pytest.fixture
def refused(monkeypatch, tmp_path):
    """A Llama-3.1-8B-shaped folder (config.json only), 20 GB free, and a loader that fails the test."""
    (tmp_path / "llama-8b").mkdir()
    (tmp_path / "llama-8b" / "config.json").write_text(json.dumps(LLAMA_8B))
    monkeypatch.setattr("headscope.models.memory.available_bytes", lambda: FREE)
    monkeypatch.setattr("headscope.cli.common.load_model", lambda *a, **k: pytest.fail("the model loaded"))
    return tmp_path / "llama-8b"


def _one_line(capsys, *args: str) -> str:
    code = main(list(args))
    printed = capsys.readouterr()
    lines = printed.err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: loading "), printed.err
    return lines[0]


@pytest.mark.parametrize(
    ("args", "fix"),
    [
        (("report", "--tasks", "ioi", "--plan"), "add --device-map auto --max-memory cpu="),
        (("report", "--tasks", "ioi", "--dtype", "bfloat16"), "add --device-map auto --max-memory cpu="),
        (("atlas",), "add --stream (the weights read from the files one layer at a time)"),
    ],
)
def test_a_model_too_large_is_one_line_before_loading(refused, capsys, tmp_path, args, fix):
    line = _one_line(capsys, *args, "--model", str(refused), "--out", str(tmp_path / "out"))
    assert "needs about" in line and "(8.03B parameters), 20.0 GB is available: " + fix in line
    assert not (tmp_path / "out").exists()


def test_bfloat16_is_named_where_it_fits(refused, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("headscope.models.memory.available_bytes", lambda: int(30e9))
    line = _one_line(capsys, "report", "--model", str(refused), "--out", str(tmp_path / "out"))
    need = float(line.split("in float32 needs about ")[1].split(" GB")[0])
    assert 45 < need < 55 and "30.0 GB is available: add --dtype bfloat16 (about 2" in line
