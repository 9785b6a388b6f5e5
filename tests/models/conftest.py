"""Fixtures: the tiny model of each architecture family, saved once per session."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from tests.models.families import BY_NAME, save_family


@pytest.fixture(scope="session")
def family_dir(tmp_path_factory):
    """name -> the folder of that family's tiny model (built on first use)."""

    @functools.cache
    def folder(name: str) -> Path:
        return save_family(BY_NAME[name], tmp_path_factory.mktemp(name))

    return folder
