"""A fused scan for the OV kernel: one pass over a logits block for every relation and sign.

`scan_block(block, twice_c, threshold, count, top_v, top_i, signs, start, skip)` reads one logits
block [head, row, column] whose columns start at vocabulary id `start`, with
`logit_{+1} = block` and `logit_{-1} = twice_c - block` (the same float subtraction the plain
torch path does, so every comparison is identical), and for each head, row and sign s:

- adds to `count[s, head, row, r]` the number of columns j with
  `logit_s[j] >= threshold[s, head, row, r]`, for every relation r, leaving out the columns
  `skip[row, :]` (vocabulary ids; -1 for none), whose logits the caller counts itself; a
  relation whose threshold equals an earlier one's of the same row takes that count instead of a
  pass of its own (the same comparisons: a shared pass repeats each row's first relation);
- merges the block into the running top-k `top_v[s, head, row, :]` (values, descending) and
  `top_i` (their token ids, int64): a value enters only when strictly greater than the current
  k-th, after every equal value already held, so among equal values the lower token id comes
  first and stays (the rule the torch path follows too). A top-k of width 0 is skipped.

It is a small C++ loop compiled once with torch's own extension builder (cached under
~/.cache/torch_extensions, by a versioned name so a stale build is never loaded) that lets go
of the GIL while it runs, so the kernel's worker threads scan at once. Where no compiler is at
hand, or HEADSCOPE_OV_FUSED=0, `fused()` is None and the kernel uses plain torch operations
instead (same numbers, slower).
"""

from __future__ import annotations

import functools
import os
import warnings

NAME = "headscope_ov_scan_v6"  # a new name whenever SOURCE changes: the build cache is keyed by it

SOURCE = r"""
#include <torch/extension.h>
#include <algorithm>
#include <limits>
#include <vector>

// logit_s[j] of one row: the block itself (sign +1) or twice_c minus it (sign -1).
template <typename T, bool Plus>
static inline T logit(const T* L, const T* tc, int64_t j) {
  return Plus ? L[j] : tc[j] - L[j];
}

template <typename T, bool Plus>
static int32_t count_at_least(const T* L, const T* tc, int64_t n, T t) {
  int32_t hits = 0;
  for (int64_t j = 0; j < n; ++j) hits += logit<T, Plus>(L, tc, j) >= t;
  return hits;
}

// Insert a value (column id) into the sorted top-k, after the values equal to it.
template <typename T>
static inline void insert(T v, int64_t id, T* tv, int64_t* ti, int64_t k) {
  int64_t p = k - 1;
  for (; p > 0 && tv[p - 1] < v; --p) {
    tv[p] = tv[p - 1];
    ti[p] = ti[p - 1];
  }
  tv[p] = v;
  ti[p] = id;
}

constexpr int64_t CHUNK = 64;  // columns checked at once (vectorised) before any insertion

// The first relation before r with the same threshold (its count is r's: the same comparisons),
// or -1. The stacked rows of a shared pass repeat a row's first relation to the widest call's.
template <typename T>
static inline int64_t same_threshold(const T* thr, int64_t r) {
  for (int64_t q = 0; q < r; ++q) {
    if (thr[q] == thr[r]) return q;
  }
  return -1;
}

// One row of one sign. The top-k check shares a pass with the first relation's count, CHUNK
// columns at a time: a chunk holding a value above the k-th is read again, a column at a time,
// to insert (a value enters when strictly greater than the k-th). The other relations: a pass
// each, but one whose threshold equals an earlier relation's takes that count (hits: scratch).
template <typename T, bool Plus>
static void scan_row(const T* L, const T* tc, int64_t n, const T* thr, T* count, int64_t relations,
                     T* tv, int64_t* ti, int64_t k, int64_t start, int32_t* hits) {
  int64_t r = 0;
  if (k > 0) {
    const T t = relations > 0 ? thr[0] : std::numeric_limits<T>::infinity();
    int32_t first = 0;
    for (int64_t c0 = 0; c0 < n; c0 += CHUNK) {
      const int64_t c1 = std::min(n, c0 + CHUNK);
      const T kth = tv[k - 1];
      int32_t above = 0;
      for (int64_t j = c0; j < c1; ++j) {
        const T v = logit<T, Plus>(L, tc, j);
        first += v >= t;
        above |= v > kth;
      }
      if (!above) continue;
      for (int64_t j = c0; j < c1; ++j) {
        const T v = logit<T, Plus>(L, tc, j);
        if (v > tv[k - 1]) insert(v, start + j, tv, ti, k);
      }
    }
    if (relations > 0) hits[0] = first;
    r = 1;
  }
  for (; r < relations; ++r) {
    const int64_t q = same_threshold(thr, r);
    hits[r] = q >= 0 ? hits[q] : count_at_least<T, Plus>(L, tc, n, thr[r]);
  }
  for (r = 0; r < relations; ++r) count[r] += static_cast<T>(hits[r]);
}

// Take back the row's comparisons at its target columns (skip: vocabulary ids, -1 for none), whose
// values the caller counts from its own small product instead.
template <typename T, bool Plus>
static void unskip_row(const T* L, const T* tc, int64_t n, const T* thr, T* count, int64_t relations,
                       const int64_t* skip, int64_t slots, int64_t start) {
  for (int64_t j = 0; j < slots; ++j) {
    const int64_t col = skip[j] - start;
    if (skip[j] < 0 || col < 0 || col >= n) continue;
    const T v = logit<T, Plus>(L, tc, col);
    for (int64_t r = 0; r < relations; ++r) count[r] -= static_cast<T>(v >= thr[r]);
  }
}

// block [head, row, col] (unit column stride); twice_c [col]; threshold and count
// [sign, head, row, relation] (count is added to in place); top_v, top_i [sign, head, row, k]
// (updated in place; k may be 0); skip [row, slot] int64 (slot may be 0): columns not counted.
void scan_block(at::Tensor block, at::Tensor twice_c, at::Tensor threshold, at::Tensor count,
                at::Tensor top_v, at::Tensor top_i, std::vector<int64_t> signs, int64_t start,
                at::Tensor skip) {
  TORCH_CHECK(block.dim() == 3 && threshold.dim() == 4 && top_v.dim() == 4, "block 3-d, the rest 4-d");
  TORCH_CHECK(block.stride(2) == 1 && twice_c.is_contiguous(), "columns must be contiguous");
  TORCH_CHECK(twice_c.size(0) == block.size(2), "twice_c must have the block's columns");
  TORCH_CHECK(threshold.stride(3) == 1 && count.stride(3) == 1, "relations must be contiguous");
  TORCH_CHECK(threshold.strides() == count.strides(), "threshold and count must share strides");
  TORCH_CHECK(top_v.sizes() == top_i.sizes() && top_v.strides() == top_i.strides(),
              "top_v and top_i must share sizes and strides");
  TORCH_CHECK(top_v.size(3) == 0 || top_v.stride(3) == 1, "top-k must be contiguous");
  TORCH_CHECK(top_i.scalar_type() == at::kLong, "top_i must be int64");
  TORCH_CHECK(block.size(2) < (int64_t{1} << 31), "at most 2^31 - 1 columns per block");
  TORCH_CHECK(skip.dim() == 2 && skip.size(0) == block.size(1) && skip.scalar_type() == at::kLong
              && skip.is_contiguous(), "skip must be [row, slot] int64, contiguous");
  TORCH_CHECK(block.scalar_type() == twice_c.scalar_type() && block.scalar_type() == threshold.scalar_type()
              && block.scalar_type() == count.scalar_type() && block.scalar_type() == top_v.scalar_type(),
              "block, twice_c, threshold, count and top_v must share one dtype");
  const int64_t heads = block.size(0), rows = block.size(1), n = block.size(2);
  const int64_t relations = threshold.size(3), k = top_v.size(3);
  for (int64_t d = 0; d < 3; ++d) {
    TORCH_CHECK(threshold.size(d) == count.size(d) && threshold.size(d) == top_v.size(d),
                "threshold, count and top-k must share [sign, head, row]");
  }
  TORCH_CHECK(threshold.size(0) == static_cast<int64_t>(signs.size()) && threshold.size(1) == heads
              && threshold.size(2) == rows, "threshold must be [sign, head, row, relation] of the block");
  AT_DISPATCH_FLOATING_TYPES(block.scalar_type(), "scan_block", [&] {
    const scalar_t* tc = twice_c.data_ptr<scalar_t>();
    const scalar_t* B = block.data_ptr<scalar_t>();
    const scalar_t* thr = threshold.data_ptr<scalar_t>();
    scalar_t* cnt = count.data_ptr<scalar_t>();
    scalar_t* tv = k ? top_v.data_ptr<scalar_t>() : nullptr;
    int64_t* ti = k ? top_i.data_ptr<int64_t>() : nullptr;
    const int64_t slots = skip.size(1);
    const int64_t* sk = skip.data_ptr<int64_t>();
    std::vector<int32_t> hits(std::max<int64_t>(relations, 1));  // one row's counts in this block
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < rows; ++i) {  // one row (a few KB) read for every sign while cached
        const scalar_t* L = B + h * block.stride(0) + i * block.stride(1);
        for (size_t s = 0; s < signs.size(); ++s) {
          const int64_t at = s * threshold.stride(0) + h * threshold.stride(1) + i * threshold.stride(2);
          const int64_t top = s * top_v.stride(0) + h * top_v.stride(1) + i * top_v.stride(2);
          scalar_t* row_v = k ? tv + top : nullptr;
          const int64_t* row_skip = sk + i * slots;
          int64_t* row_i = k ? ti + top : nullptr;
          if (signs[s] > 0) {
            scan_row<scalar_t, true>(L, tc, n, thr + at, cnt + at, relations, row_v, row_i, k, start,
                hits.data());
            unskip_row<scalar_t, true>(L, tc, n, thr + at, cnt + at, relations, row_skip, slots, start);
          } else {
            scan_row<scalar_t, false>(L, tc, n, thr + at, cnt + at, relations, row_v, row_i, k, start,
                hits.data());
            unskip_row<scalar_t, false>(L, tc, n, thr + at, cnt + at, relations, row_skip, slots, start);
          }
        }
      }
    }
  });
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("scan_block", &scan_block, "count and top-k of one OV logits block",
        py::call_guard<py::gil_scoped_release>());
}
"""


@functools.cache
def fused():
    """The compiled `scan_block`, or None (no compiler, or HEADSCOPE_OV_FUSED=0)."""
    if os.environ.get("HEADSCOPE_OV_FUSED", "1") == "0":
        return None
    try:
        from torch.utils.cpp_extension import load_inline

        module = load_inline(
            name=NAME, cpp_sources=SOURCE, extra_cflags=["-O3", "-march=native"], verbose=False
        )
    except Exception as error:  # no compiler, no ninja, a failed build: fall back, say so once
        warnings.warn(f"OV scores: fused scan unavailable ({error}); counting with torch", stacklevel=2)
        return None
    return module.scan_block
