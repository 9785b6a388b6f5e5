"""Run the command line as a user does: a subprocess, output captured."""

import subprocess
import sys


def run_cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "headscope.cli", *args], capture_output=True, text=True, timeout=timeout
    )
