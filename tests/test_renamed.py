"""Modules renamed for their jobs keep their old names for one release, with a warning."""

from __future__ import annotations

import importlib
import sys

import pytest

RENAMED = {
    "headscope.io": "headscope.files",
    "headscope.scores.attribution": "headscope.scores.direct_logit",
    "headscope.scores.circuit.attribution": "headscope.scores.circuit.eap",
    "headscope.scores.resume": "headscope.scores.interventions",
    "headscope.report.analyses": "headscope.report.compute",
    "headscope.report.content": "headscope.report.page",
}


@pytest.mark.parametrize(("old", "new"), RENAMED.items())
def test_an_old_name_warns_and_gives_the_new_modules_objects(old, new, monkeypatch):
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=f"{old} is renamed {new};"):
        aliased = importlib.import_module(old)
    module = importlib.import_module(new)
    public = [name for name in vars(module) if not name.startswith("_")]
    assert public and all(getattr(aliased, name) is getattr(module, name) for name in public)


def test_a_renamed_class_keeps_its_old_name(monkeypatch):
    from headscope.scores.interventions import InterventionRunner

    monkeypatch.delitem(sys.modules, "headscope.scores.resume", raising=False)
    with pytest.warns(DeprecationWarning, match="Resumer is now InterventionRunner"):
        from headscope.scores.resume import Resumer
    assert Resumer is InterventionRunner


def test_no_module_of_headscope_imports_an_old_name():
    """The package itself uses the new names only: importing it raises no rename warning."""
    import subprocess

    code = "import warnings; warnings.filterwarnings('error', 'headscope.* is renamed'); " + "; ".join(
        f"import {new}" for new in [*RENAMED.values(), "headscope", "headscope.cli", "headscope.api"]
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
