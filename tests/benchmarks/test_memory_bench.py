"""benchmarks/memory.py: every phase it marks is a phase of the plan, each said by the report's own
lines, and a tiny load measured against its prediction in a process of its own."""

from __future__ import annotations

from benchmarks.memory import PHASE_LINES, _tiny, child

from headscope.models.loading import load_model
from headscope.report import plan
from headscope.report.compute import ReportOptions


def test_the_lines_it_marks_start_the_plan_s_phases():
    model = load_model("organism")
    options = ReportOptions(tasks=("ioi",), n=8, knockout_n=4, circuit_n=4, n_boot=20, example_prompts=2)
    found = plan.plan_report(model, ["ioi"], options, say=lambda m: None, rate=1e11, workers=1)
    said: list[str] = []
    plan.run_plan(found, said.append)  # the task's own lines are said when it is done
    planned = set(found.table()["phase"]) - {"page", "QK", "cast"}  # the page: only with `out`;
    marked = {name for line, name in PHASE_LINES.items() if any(line in s for s in said)}  # no label
    assert planned <= marked  # ... of a random 8-prompt run need be found for the cast or QK


def test_a_tiny_load_is_measured_in_a_process_of_its_own(tmp_path):
    found = child("load", str(_tiny(tmp_path / "tiny", "llama")), "float32")
    assert found["params"] > 0 and 0.5 < found["peak_gb"] / found["predicted_gb"] < 1.5
