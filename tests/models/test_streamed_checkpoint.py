"""`Checkpoint` reads a safetensors tensor through a mapping of its own and drops it: the numbers are
the file's, and the pages read do not stay in the process's resident set (a mapped page once
touched counts there while its file stays mapped: the atlas's peak on the Gemma-2-2B shape held
the unembedding twice, as its copy and as file pages)."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from headscope.models import streamed
from headscope.models.streamed import Checkpoint

SMAPS = Path("/proc/self/smaps")
ROWS, WIDTH = 2048, 2048  # 8 MB of bfloat16


def resident_bytes_of(path: Path) -> int:
    """Bytes of `path`'s mappings resident in this process (/proc/self/smaps: Rss of each)."""
    total, inside = 0, False
    for line in SMAPS.read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):  # a mapping's header
            inside = len(head) >= 6 and head[5] == str(path)
        elif inside and head[0] == "Rss:":
            total += int(head[1]) * 1024
    return total


@pytest.mark.skipif(not SMAPS.exists(), reason="needs /proc/self/smaps (Linux)")
@pytest.mark.parametrize("chunk", [streamed.CHUNK_BYTES, 300 * WIDTH * 4])  # all at once; 300 rows at a time
def test_a_read_copies_the_tensor_out_and_leaves_no_file_pages_resident(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(streamed, "CHUNK_BYTES", chunk)
    stored = torch.randn(ROWS, WIDTH, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    gain = torch.rand(WIDTH, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    path = (tmp_path / "model.safetensors").resolve()
    save_file({"w": stored, "g": gain}, str(path))
    with ExitStack() as stack:
        ckpt = Checkpoint([path], stack, [], "")
        whole, bf16 = ckpt.read("w"), ckpt.read("w", torch.bfloat16)
        rows = ckpt.rows("w", torch.tensor([3, ROWS - 1, 3]))
        assert torch.equal(whole, stored.float()) and torch.equal(bf16, stored)
        assert torch.equal(rows, stored[[3, ROWS - 1, 3]].float())
        assert torch.equal(ckpt.read("g"), gain.float())
        assert resident_bytes_of(path) < stored.nbytes // 8  # the headers' pages at most, not the 8 MB read
