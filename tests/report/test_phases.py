"""The plan's predicted peak memory: the largest phase's, or the tasks' side by side in forked processes."""

from __future__ import annotations

from headscope.report.phases import Phase, peak_bytes

GB = 1e9


def _phase(name: str, task: str, memory: float) -> Phase:
    return Phase(name, task, 1, "prompts", 0.0, 0.0, memory=memory * GB, resident=2 * GB)


PHASES = (
    _phase("OV pass", "", 0.5),
    _phase("capture", "ioi", 0.2),
    _phase("knockouts", "ioi", 1.0),
    _phase("capture", "induction", 0.3),
    _phase("circuit", "induction", 0.4),
    _phase("page", "", 0.1),
)


def test_one_process_peaks_at_its_largest_phase():
    assert peak_bytes(PHASES, workers=1) == 3 * GB  # the model and ioi's knockouts
    assert PHASES[2].peak == 3 * GB and PHASES[2].row()["peak_gb"] == 3.0


def test_tasks_side_by_side_hold_their_largest_phase_each():
    """Two processes sharing the model's pages: the model once, the largest task phase twice (an
    upper bound: the two tasks' largest phases need not meet)."""
    assert peak_bytes(PHASES, workers=2) == 2 * GB + 2 * 1.0 * GB
    assert peak_bytes(PHASES, workers=8) == 2 * GB + 2 * 1.0 * GB  # no more processes than tasks
    assert peak_bytes((), workers=2) == 0.0
