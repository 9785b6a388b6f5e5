"""The early-exit benchmark's figures on a small shape: both passes run, the capped ranks are checked
against the full ones, and the share decided in the first block is read from the blocks each
(head, row) pair was read in."""

from benchmarks.ov_exit import first_block_share, random_shape, report

from headscope.scores import ov_kernel


def test_the_benchmark_compares_both_passes_and_reports_the_first_block_share(capsys):
    found = random_shape(heads=2, n_rows=20, vocab=3000, d_model=32, d_head=8)
    assert found.same and found.vocab == 3000
    assert found.capped.blocks.shape == (2, 20) and int(found.capped.blocks.max()) <= ov_kernel.n_blocks(3000)
    share = first_block_share(found.capped)
    assert share == float((found.capped.blocks == 1).sum()) / 40 and share > 0
    report(found, 5)
    printed = capsys.readouterr().out
    assert "capped == min(full, 5) on every valid cell: True" in printed and "decided in block 1" in printed
