"""The threads benchmark's pieces: the burner, the digest of a run's numbers, the side-by-side table."""

import os

import pytest
from benchmarks.threads import Workload, burner, digest, run_condition, side_by_side


def test_the_burner_runs_inside_the_block_and_stops_after():
    with burner(2) as burners:
        assert len(burners) == 2 and all(p.poll() is None for p in burners)
    assert all(p.poll() is not None for p in burners)


def test_a_folders_digest_reads_only_its_tables(tmp_path):
    (tmp_path / "dla.csv").write_text("head,dla\n1.0,0.5\n")
    (tmp_path / "results.json").write_text('{"seconds": 12.5}')
    first = digest(tmp_path)
    (tmp_path / "results.json").write_text('{"seconds": 99.0}')
    assert digest(tmp_path) == first
    (tmp_path / "dla.csv").write_text("head,dla\n1.0,0.6\n")
    assert digest(tmp_path) != first


def test_side_by_side_divides_each_setting_by_the_chosen_one():
    rows = [
        {"condition": "loaded", "workload": "w", "setting": "default", "median_s": 30.0},
        {"condition": "loaded", "workload": "w", "setting": "chosen", "median_s": 10.0},
        {"condition": "loaded", "workload": "w", "setting": "one", "median_s": 12.0},
        {"condition": "loaded", "workload": "w", "setting": "identical outputs", "median_s": 1.0},
    ]
    table = side_by_side(rows).iloc[0]
    assert table["default/chosen"] == pytest.approx(3.0) and table["one/chosen"] == pytest.approx(1.2)
    assert bool(table["identical"]) is True


def test_a_condition_times_every_setting_and_compares_the_outputs(tiny_dir, tmp_path):
    workload = Workload("tiny evaluate", ("evaluate", "--model", str(tiny_dir), "--n", "4"), "e.json")
    settings = {"chosen": (), "all": ("--threads", str(os.cpu_count()))}
    rows = run_condition([workload], settings, 1, tmp_path)
    timed = {r["setting"]: r for r in rows}
    assert timed["chosen"]["median_s"] > 0 and timed["all"]["runs"] == 1
    assert timed["identical outputs"]["median_s"] == 1.0
