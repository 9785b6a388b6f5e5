"""A fused counter for the OV kernel: one pass over a logits block for every relation and sign.

`count_at_least(block, twice_c, threshold, count, signs)` adds, for each head, row, sign s
and relation r, the number of columns j with `logit_s[j] >= threshold[s, head, row, r]`,
where `logit_{+1} = block` and `logit_{-1} = twice_c - block` (the same subtraction the
plain torch path does, so the counts are identical). It is a small C++ loop compiled once
with torch's own extension builder (cached under ~/.cache/torch_extensions); where no
compiler is at hand, or HEADSCOPE_OV_FUSED=0, `fused()` is None and the kernel counts with
plain torch operations instead (same numbers, slower).
"""

from __future__ import annotations

import functools
import os
import warnings

SOURCE = r"""
#include <torch/extension.h>

template <typename T>
static void count_rows(const T* L, const T* tc, int64_t n, const T* thr, T* out,
                       const std::vector<int64_t>& signs, int64_t relations, int64_t sign_stride) {
  for (size_t s = 0; s < signs.size(); ++s) {
    for (int64_t r = 0; r < relations; ++r) {
      const T t = thr[s * sign_stride + r];
      int64_t hits = 0;
      if (signs[s] > 0) {
        for (int64_t j = 0; j < n; ++j) hits += L[j] >= t;
      } else {
        for (int64_t j = 0; j < n; ++j) hits += (tc[j] - L[j]) >= t;
      }
      out[s * sign_stride + r] += static_cast<T>(hits);
    }
  }
}

// block [head, row, col] (unit column stride); twice_c [col]; threshold and count
// [sign, head, row, relation] (count is added to in place).
void count_at_least(at::Tensor block, at::Tensor twice_c, at::Tensor threshold, at::Tensor count,
                    std::vector<int64_t> signs) {
  TORCH_CHECK(block.stride(2) == 1 && twice_c.is_contiguous(), "columns must be contiguous");
  TORCH_CHECK(threshold.stride(3) == 1 && count.stride(3) == 1, "relations must be contiguous");
  TORCH_CHECK(threshold.strides() == count.strides(), "threshold and count must share strides");
  const int64_t heads = block.size(0), rows = block.size(1), n = block.size(2);
  const int64_t relations = threshold.size(3);
  AT_DISPATCH_FLOATING_TYPES(block.scalar_type(), "count_at_least", [&] {
    const scalar_t* tc = twice_c.data_ptr<scalar_t>();
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < rows; ++i) {
        const scalar_t* L = block.data_ptr<scalar_t>() + h * block.stride(0) + i * block.stride(1);
        const int64_t at = h * threshold.stride(1) + i * threshold.stride(2);
        count_rows<scalar_t>(L, tc, n, threshold.data_ptr<scalar_t>() + at,
                             count.data_ptr<scalar_t>() + at, signs, relations, threshold.stride(0));
      }
    }
  });
}
"""


@functools.cache
def fused():
    """The compiled `count_at_least`, or None (no compiler, or HEADSCOPE_OV_FUSED=0)."""
    if os.environ.get("HEADSCOPE_OV_FUSED", "1") == "0":
        return None
    try:
        from torch.utils.cpp_extension import load_inline

        module = load_inline(
            name="headscope_ov_count",
            cpp_sources=SOURCE,
            functions=["count_at_least"],
            extra_cflags=["-O3", "-march=native"],
            verbose=False,
        )
    except Exception as error:  # no compiler, no ninja, a failed build: fall back, say so once
        warnings.warn(f"OV scores: fused counter unavailable ({error}); counting with torch", stacklevel=2)
        return None
    return module.count_at_least
