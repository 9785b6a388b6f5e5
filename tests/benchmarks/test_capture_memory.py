"""The capture-memory benchmark's pieces on the tiny model: what each variant keeps, the extrapolation."""

import pytest
from benchmarks.capture_memory import _extrapolated, run_child


def test_capture_keeps_far_less_than_the_full_cache(tiny_dir):
    """Each variant in a fresh process, as the benchmark runs it: in a test worker that has freed
    memory before, the allocator reuses resident pages and the peak does not move."""
    reduced = run_child("capture", tiny_dir, 8)
    full = run_child("run_with_cache", tiny_dir, 8)
    assert reduced["prompts"] == full["prompts"] == 8
    assert 0 < reduced["kept_mb"] < full["kept_mb"] / 5
    assert reduced["peak_mb"] >= 0 and full["peak_mb"] > 0


def test_extrapolation_is_the_line_through_the_last_two_sizes():
    points = [{"prompts": 100, "peak_mb": 1000.0}, {"prompts": 200, "peak_mb": 1900.0}]
    assert _extrapolated(points, 500) == pytest.approx(4600.0)
