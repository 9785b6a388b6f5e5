"""The streamed-weights benchmark's pieces on the tiny GPT-2: each variant in a fresh process."""

from benchmarks.streamed import run_child


def test_streaming_and_loading_keep_the_same_weights_and_report_their_peak(tiny_dir):
    streamed, loaded = run_child("stream", tiny_dir), run_child("load", tiny_dir)
    assert streamed["variant"] == "stream" and loaded["variant"] == "load"
    assert streamed["weights_mb"] == loaded["weights_mb"] > 0
    for run in (streamed, loaded):
        assert run["peak_mb"] >= run["imports_mb"] > 0 and run["load_s"] > 0 and run["atlas_rows"] == 0
