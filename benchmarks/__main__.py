"""`python -m benchmarks [NAME ...]`: run every benchmark (or the named ones) and print figures."""

from __future__ import annotations

import importlib
import sys

# Each module defines `main() -> None` that prints its own figures.
BENCHMARKS: tuple[str, ...] = (
    "ov",
    "ov_cli",
    "capture_memory",
    "ablation",
    "edges",
    "circuit_mib",
    "precision",
    "threads",
    "report_gpt2",
    "report",
    "ov_vocab",
    "ov_exit",
    "ov_detail",
    "atlas",
    "sweep",
    "flops",
    "budget",
    "streamed",
    "streamed_gguf",
)


def run(names: list[str]) -> None:
    for name in names or list(BENCHMARKS):
        if name not in BENCHMARKS:
            raise SystemExit(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
        print(f"== {name} ==", flush=True)
        importlib.import_module(f"benchmarks.{name}").main()


if __name__ == "__main__":
    run(sys.argv[1:])
