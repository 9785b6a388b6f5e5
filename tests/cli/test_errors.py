"""The catalogue of bad inputs: each is one line naming the problem and the fix, exit 2, nothing written.

Every entry runs the CLI as a subprocess. The table in docs/reliability.md ("Every error, one line") is this
catalogue with the messages of a real run (`python -m tests.cli.test_errors` prints it).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headscope.cli import main
from headscope.run import RESULTS_FILE, Run
from headscope.run_tables import ALWAYS
from tests.cli.runner import run_cli
from tests.models.test_loading import _larger_tokenizer, _no_tokenizer
from tests.tasks.task_files import MINIMAL

TASK_FILES = {
    "not_toml": "templates = [unclosed\n",
    "no_answer": MINIMAL.replace('answer = "IO"', ""),
    "unused_slot": MINIMAL + '    PLACE = ["park"]\n',
    "empty_slot": MINIMAL.replace('"Tom", "Sarah", "Paul"', ""),
    "multi_token": MINIMAL.replace('"Anne"', '"Anne", "Bartholomew"'),
    "too_long": MINIMAL.replace(" met,", " met," + " the" * 70),
    "good": MINIMAL,
}


@dataclass(frozen=True)
class Bad:
    """One catalogue entry: the bad input in words, the command, a fragment of the message."""

    what: str
    args: tuple[str, ...]
    expect: str
    out: str | None = None  # an output path that must not appear


CATALOGUE: tuple[Bad, ...] = (
    Bad(
        "unknown model name, no network",
        ("tasks", "show", "ioi", "--model", "no-org/no-model"),
        "--model 'no-org/no-model': it is no local directory",
    ),
    Bad(
        "model path that does not exist",
        ("tasks", "show", "ioi", "--model", "./no/such/dir"),
        "--model './no/such/dir': no such directory",
    ),
    Bad(
        "model path naming a file",
        ("tasks", "show", "ioi", "--model", "{tiny}/config.json"),
        "is a file; give the folder that holds it",
    ),
    Bad("model path that is a symlink loop", ("tasks", "show", "ioi", "--model", "{loop}"), "symlink loop"),
    Bad(
        "model folder without a tokenizer",
        ("tasks", "show", "ioi", "--model", "{no_tokenizer}"),
        "has no tokenizer",
    ),
    Bad(
        "tokenizer larger than the embedding",
        ("tasks", "show", "ioi", "--model", "{big_tokenizer}"),
        "has 210 tokens but the embedding only 204 rows",
    ),
    Bad("directory without weights", ("tasks", "show", "ioi", "--model", "{no_weights}"), "has no weights"),
    Bad("truncated safetensors", ("tasks", "show", "ioi", "--model", "{truncated}"), "is truncated"),
    Bad(
        "corrupted safetensors", ("tasks", "show", "ioi", "--model", "{corrupted}"), "not a valid safetensors"
    ),
    Bad(
        "config with more layers than the weights",
        ("tasks", "show", "ioi", "--model", "{more_layers}"),
        "does not match the weights",
    ),
    Bad(
        "config with another width than the weights",
        ("tasks", "show", "ioi", "--model", "{wider}"),
        "does not match the weights",
    ),
    Bad("pickle-only checkpoint", ("tasks", "show", "ioi", "--model", "{pickle_only}"), "--allow-pickle"),
    Bad("unknown task", ("tasks", "show", "nope", "--model", "{tiny}"), "unknown task 'nope'"),
    Bad(
        "task file that is not TOML",
        ("tasks", "show", "{not_toml}", "--model", "{tiny}"),
        "not valid TOML",
    ),
    Bad(
        "task file without an answer",
        ("tasks", "show", "{no_answer}", "--model", "{tiny}"),
        "no 'answer'",
    ),
    Bad(
        "task file slot no template uses",
        ("tasks", "show", "{unused_slot}", "--model", "{tiny}"),
        "slot PLACE is not used by any template",
    ),
    Bad(
        "task file with an empty slot list",
        ("tasks", "show", "{empty_slot}", "--model", "{tiny}"),
        "slot S has no fillers",
    ),
    Bad(
        "task file filler that is not one token",
        ("tasks", "show", "{multi_token}", "--model", "{tiny}"),
        "'Bartholomew' (slot IO)",
    ),
    Bad(
        "prompts longer than the model's context",
        ("tasks", "show", "{too_long}", "--model", "{tiny}"),
        "context holds 64",
    ),
    Bad("--n 0", ("tasks", "show", "ioi", "--model", "{tiny}", "--n", "0"), "--n 0: give at least 1 prompt"),
    Bad(
        "--n 100000 (minutes of work)",
        ("scores", "--model", "{tiny}", "--task", "ioi", "--n", "100000"),
        "--n 100000 is more than 10000 prompts",
    ),
    Bad(
        "head 2.0 on a 2-layer model",
        ("scores", "--model", "{tiny}", "--task", "ioi", "--heads", "2.0"),
        "head 2.0 does not exist",
    ),
    Bad("head list '9'", ("scores", "--model", "{tiny}", "--task", "ioi", "--heads", "9"), "bad head '9'"),
    Bad(
        "head list '9.x'",
        ("scores", "--model", "{tiny}", "--task", "ioi", "--heads", "9.x"),
        "bad head '9.x'",
    ),
    Bad(
        "head list '-1.2'",
        ("scores", "--model", "{tiny}", "--task", "ioi", "--heads=-1.2"),
        "bad head '-1.2'",
    ),
    Bad(
        "scatter head '1.9' on a 4-head model",
        ("scatter", "--model", "{tiny}", "--head", "1.9"),
        "head 1.9 does not exist",
    ),
    Bad("--k 0", ("scores", "--model", "{tiny}", "--task", "ioi", "--k", "0"), "--k 0: k must be at least 1"),
    Bad(
        "--k larger than the vocabulary",
        ("scores", "--model", "{tiny}", "--task", "ioi", "--k", "100000"),
        "--k 100000 is larger than the vocabulary",
    ),
    Bad(
        "--n 0 for scores",
        ("scores", "--model", "{tiny}", "--task", "ioi", "--n", "0"),
        "--n 0: give at least 1 prompt",
    ),
    Bad(
        "keywords not in the vocabulary",
        ("scores", "--model", "{tiny}", "--keywords", "Mary zzyzx John"),
        "zzyzx",
    ),
    Bad(
        "keywords given twice (a message from Python: words=...)",
        ("scores", "--model", "{tiny}", "--keywords", "Mary John Mary"),
        "--keywords 'Mary John Mary' repeats Mary: give each keyword once",
    ),
    Bad(
        "ablate: unknown component (a message from Python: components=...)",
        ("ablate", "--model", "{tiny}", "--n", "4", "--components", "heads,bogus", "--out", "{out}/a.csv"),
        "--components 'heads,bogus': choose heads, mlps or heads,mlps",
        out="a.csv",
    ),
    Bad(
        "unknown relation",
        ("scores", "--model", "{tiny}", "--task", "ioi", "--relation", "capital"),
        "unknown relation 'capital'",
    ),
    Bad(
        "unknown --embedding", ("scores", "--model", "{tiny}", "--task", "ioi", "--embedding", "bert"), "bert"
    ),
    Bad(
        "output in a missing folder",
        ("scores", "--model", "{tiny}", "--task", "ioi", "--out", "{out}/no/dir/s.csv"),
        "does not exist",
        out="no/dir/s.csv",
    ),
    Bad(
        "output in a read-only folder",
        ("scores", "--model", "{tiny}", "--task", "ioi", "--out", "{read_only}/s.csv"),
        "is read-only",
    ),
    Bad(
        "output of an unknown kind",
        ("evaluate", "--model", "{tiny}", "--out", "{out}/e.txt"),
        ".json",
        out="e.txt",
    ),
    Bad(
        "attention on a prompt that does not exist",
        (
            "attention",
            "--model",
            "{tiny}",
            "--heads",
            "0.0",
            "--n",
            "2",
            "--prompt",
            "5",
            "--out",
            "{out}/a.json",
        ),
        "--prompt",
        out="a.json",
    ),
    Bad(
        "scatter on an unknown role",
        (
            "scatter",
            "--model",
            "{tiny}",
            "--head",
            "0.0",
            "--roles",
            "XX",
            "--n",
            "4",
            "--out",
            "{out}/s.json",
        ),
        "unknown role 'XX'",
        out="s.json",
    ),
    Bad("unknown --scale", ("scatter", "--model", "{tiny}", "--head", "0.0", "--scale", "big"), "--scale"),
    Bad(
        "report with an unknown task",
        ("report", "--model", "{tiny}", "--tasks", "ioi,nope", "--out", "{out}/r"),
        "unknown task 'nope'",
        out="r",
    ),
    Bad(
        "evaluate on a task file with a bad filler",
        ("evaluate", "--model", "{tiny}", "--task", "{multi_token}", "--out", "{out}/e.json"),
        "'Bartholomew' (slot IO)",
        out="e.json",
    ),
    Bad("a number that is not a number", ("scores", "--n", "abc"), "Invalid value for '--n'"),
    Bad("unknown command", ("scroes",), "No such command 'scroes'"),
    Bad("unknown option", ("scores", "--head", "9.1"), "No such option: --head"),
    Bad(
        "ablate: --keep with --greedy",
        ("ablate", "--model", "{tiny}", "--keep", "0.1", "--greedy", "--out", "{out}/a.csv"),
        "give --keep or --greedy, not both",
        out="a.csv",
    ),
    Bad(
        "ablate: --exact-top below 0",
        ("ablate", "--model", "{tiny}", "--exact-top", "-1", "--out", "{out}/a.csv"),
        "--exact-top -1: give 0 or more heads",
        out="a.csv",
    ),
    Bad(
        "report: --knockout-exact below 0",
        ("report", "--model", "{tiny}", "--knockout-exact", "-2", "--out", "{out}/r"),
        "--knockout-exact -2: give 0 or more heads",
        out="r",
    ),
    Bad(
        "ablate: a head to keep that does not exist",
        ("ablate", "--model", "{tiny}", "--n", "4", "--keep", "5.0", "--out", "{out}/a.csv"),
        "5.0",
        out="a.csv",
    ),
    Bad(
        "ablate: knock out at an unknown role",
        ("ablate", "--model", "{tiny}", "--n", "4", "--positions", "XX", "--out", "{out}/a.csv"),
        "XX",
        out="a.csv",
    ),
    Bad(
        "ablate: unknown --method",
        ("ablate", "--model", "{tiny}", "--method", "delete"),
        "Invalid value for '--method'",
    ),
    Bad(
        "ablate: a table written to a .txt",
        ("ablate", "--model", "{tiny}", "--n", "4", "--components", "mlps", "--out", "{out}/a.txt"),
        ".csv",
        out="a.txt",
    ),
    Bad(
        "patch: --approx with --by-position",
        ("patch", "--model", "{tiny}", "--approx", "--by-position", "--out", "{out}/p.csv"),
        "--approx",
        out="p.csv",
    ),
    Bad(
        "patch: --n 0",
        ("patch", "--model", "{tiny}", "--n", "0", "--out", "{out}/p.csv"),
        "--n 0: give at least 1 prompt",
        out="p.csv",
    ),
    Bad(
        "report --from: a results.json whose evaluation table was removed",
        ("report", "--from", "{damaged_run}", "--out", "{out}/page"),
        "was changed after headscope wrote it (it has no 'evaluation' table",
        out="page",
    ),
    Bad(
        "report --from: a results.json whose numbers were edited",
        ("report", "--from", "{edited_run}", "--out", "{out}/page"),
        "was changed after headscope wrote it (its content was edited",
        out="page",
    ),
)


def _damaged_runs(root: Path) -> dict[str, Path]:
    """Saved runs changed after they were written: a table removed, a number edited."""
    tables = {name: pd.DataFrame({"task": ["ioi"], "layer": [0], "head": [1]}) for name in ALWAYS}
    tables |= {
        "evaluation": pd.DataFrame({"task": ["ioi"], "accuracy": [0.75], "n": [4]}),
        "ov_scores": pd.DataFrame({"task": ["ioi"], "layer": [0], "head": [1], "score": [0.5]}),
    }
    made = {}
    for name, change in (("damaged_run", _drop_evaluation), ("edited_run", _edit_score)):
        folder = Run(tables=tables, options={"tasks": ["ioi"]}, model={}, seed=0).save(root / name).parent
        record = json.loads((folder / RESULTS_FILE).read_text())
        change(record["tables"])
        (folder / RESULTS_FILE).write_text(json.dumps(record))
        made[name] = folder
    return made


def _drop_evaluation(tables: dict) -> None:
    del tables["evaluation"]


def _edit_score(tables: dict) -> None:
    tables["ov_scores"]["rows"][0][-1] = 0.9


def _damage_dirs(tiny_dir: Path, root: Path) -> dict[str, Path]:
    """Damaged copies of the tiny model, one per kind of damage."""
    made = {}
    damaged = ("no_weights", "truncated", "corrupted", "more_layers", "wider", "pickle_only")
    for name in (*damaged, "no_tokenizer", "big_tokenizer"):
        made[name] = Path(shutil.copytree(tiny_dir, root / name))
    weights = "model.safetensors"
    (made["no_weights"] / weights).unlink()
    data = (made["truncated"] / weights).read_bytes()
    (made["truncated"] / weights).write_bytes(data[: len(data) // 2])
    (made["corrupted"] / weights).write_bytes(b"\x00garbage" * 100)
    for name, change in (("more_layers", {"n_layer": 3}), ("wider", {"n_embd": 64})):
        config = json.loads((made[name] / "config.json").read_text())
        (made[name] / "config.json").write_text(json.dumps(config | change))
    (made["pickle_only"] / weights).unlink()
    (made["pickle_only"] / "pytorch_model.bin").write_bytes(b"a pickle would run code here")
    _no_tokenizer(made["no_tokenizer"])
    _larger_tokenizer(made["big_tokenizer"])
    made["loop"] = root / "loop"
    made["loop"].symlink_to(made["loop"])
    return made


def read_only_folder(root: Path) -> Path:
    """A folder nobody can create files in: mode 0555, or for root a sysfs folder."""
    if os.geteuid() != 0:
        folder = root / "read_only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    if Path("/sys/kernel").is_dir():
        return Path("/sys/kernel")
    raise pytest.skip.Exception("running as root without /sys: no read-only folder to try")


def make_places(root: Path, tiny_dir: Path) -> dict[str, str]:
    """Every placeholder of the catalogue, as a path: the tiny model, damaged copies, task files."""
    found = {"tiny": tiny_dir, **_damage_dirs(tiny_dir, root), "read_only": read_only_folder(root)}
    found |= _damaged_runs(root)
    for name, text in TASK_FILES.items():
        found[name] = root / f"{name}.toml"
        found[name].write_text(textwrap.dedent(text))
    return {key: str(value) for key, value in found.items()}


@pytest.fixture(scope="module")
def places(tmp_path_factory, tiny_dir) -> dict[str, str]:
    return make_places(tmp_path_factory.mktemp("catalogue"), tiny_dir)


def fill(args: tuple[str, ...], places: dict[str, str], out: Path) -> list[str]:
    return [arg.format(out=out, **places) for arg in args]


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    """The error lines, which belong on stderr (stdout holds results only)."""
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("bad", CATALOGUE, ids=[bad.what for bad in CATALOGUE])
def test_bad_input_is_one_clear_line(bad: Bad, places, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    result = run_cli(*fill(bad.args, places, out))
    text = result.stdout + result.stderr
    assert result.returncode == 2, text
    assert "Traceback" not in text
    lines = error_lines(result)
    assert len(lines) == 1, text
    assert bad.expect in lines[0], lines[0]
    assert result.stdout == "", result.stdout  # `> file` keeps no error and no half a table
    assert "Loading weights" not in result.stderr and "it/s]" not in result.stderr
    assert list(out.iterdir()) == []  # nothing written, not even a temporary file


def test_debug_shows_the_traceback(places):
    result = run_cli("--debug", "tasks", "show", "ioi", "--model", places["truncated"])
    assert result.returncode == 2
    assert "Traceback" in result.stdout + result.stderr
    assert len(error_lines(result)) == 1


def test_allow_pickle_loads_a_pickle_checkpoint(places, tmp_path):
    import torch
    from transformers import GPT2LMHeadModel

    directory = Path(shutil.copytree(places["tiny"], tmp_path / "pickled"))
    torch.save(GPT2LMHeadModel.from_pretrained(directory).state_dict(), directory / "pytorch_model.bin")
    (directory / "model.safetensors").unlink()
    refused = run_cli("tasks", "show", "ioi", "--model", str(directory), "--n", "1")
    assert refused.returncode == 2 and "--allow-pickle" in error_lines(refused)[0]
    allowed = run_cli("--allow-pickle", "tasks", "show", "ioi", "--model", str(directory), "--n", "1")
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    assert "S1+1" in allowed.stdout


def test_a_good_task_file_runs(places):
    result = run_cli("tasks", "show", places["good"], "--model", places["tiny"], "--n", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "corrupted twin" in result.stdout


# ---- properties: random head lists through the real CLI entry point (in process) -----------

HEAD_TEXT = st.one_of(
    st.text(alphabet="0123456789.,- xa", max_size=12),
    st.lists(st.tuples(st.integers(-2, 5), st.integers(-2, 6)), min_size=1, max_size=4).map(
        lambda heads: ",".join(f"{layer}.{head}" for layer, head in heads)
    ),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(heads=HEAD_TEXT)
def test_random_head_lists_succeed_or_fail_clearly(heads, places, capsys):
    """`scores --heads H` either prints scores (exit 0) or one clear error line (exit 2)."""
    args = ["scores", "--model", places["tiny"], "--task", "ioi", "--n", "4", "--relation", "copy"]
    code = main([*args, f"--heads={heads}"])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert code in (0, 2), captured.out + captured.err
    assert len(lines) == (1 if code == 2 else 0), captured.err
    assert "error:" not in captured.out
    if code == 0:
        assert "OV scores" in captured.out


def print_catalogue() -> None:
    """Run the catalogue for real and print it as the README's Markdown table, with the tally."""
    import tempfile

    from headscope.tasks.vocabulary import task_vocabulary
    from tests.conftest import save_tiny_gpt2

    root = Path(tempfile.mkdtemp(prefix="headscope-catalogue-"))
    places = make_places(root, save_tiny_gpt2(root / "tiny", task_vocabulary()))
    clear = 0
    print("| bad input | command | message (exit 2) |\n|---|---|---|")
    for bad in CATALOGUE:
        out = root / f"out-{CATALOGUE.index(bad)}"
        out.mkdir()
        result = run_cli(*fill(bad.args, places, out))
        lines = error_lines(result)
        ok = result.returncode == 2 and len(lines) == 1 and bad.expect in lines[0] and not any(out.iterdir())
        clear += ok and "Traceback" not in result.stdout + result.stderr
        shown = " ".join(fill(bad.args, places, out)).replace(f"{root}/", "")
        message = (lines[0] if lines else f"exit {result.returncode}").replace(f"{root}/", "")
        cells = (bad.what, f"`headscope {shown}`", message.replace("|", "\\|"))
        print("| " + " | ".join(cells) + " |")
    print(f"\n{clear} of {len(CATALOGUE)} bad inputs gave one clear line, exit 2, nothing written")


if __name__ == "__main__":
    print_catalogue()
