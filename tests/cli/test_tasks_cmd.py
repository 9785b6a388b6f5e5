"""`headscope tasks` run as a subprocess."""

from tests.cli.runner import run_cli


def test_tasks_lists_every_builtin_task():
    result = run_cli("tasks")
    assert result.returncode == 0, result.stderr
    for name in ("ioi", "recency", "seq-digits", "seq-days", "induction"):
        assert name in result.stdout


def test_tasks_show_prints_positions(tiny_dir):
    result = run_cli("tasks", "show", "ioi", "--model", str(tiny_dir), "--n", "1")
    assert result.returncode == 0, result.stderr
    assert "S1+1" in result.stdout and "end" in result.stdout


def test_unknown_task_is_one_clear_line(tiny_dir):
    result = run_cli("tasks", "show", "nope", "--model", str(tiny_dir))
    assert result.returncode == 2
    assert "unknown task 'nope'" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
