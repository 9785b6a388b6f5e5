"""A tiny model and one generated report shared by the report tests.

The report includes a task whose template and description carry `<script>` markup, and
the tiny model's vocabulary knows those pieces, so the markup reaches prompts, tokens,
tables and the attention viewer.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from headscope.models.loading import Model, load_model
from headscope.report.compute import ReportOptions
from headscope.report.html import write_report
from headscope.report.plan import build_run
from headscope.run import Run
from headscope.tasks import words
from headscope.tasks.prompt import Prompt, PromptPair, fill, occurrence_roles
from headscope.tasks.registry import get_task
from headscope.tasks.task import Task, WordFilter
from tests.conftest import save_tiny_gpt2

MARKUP = "<script>alert(1)</script>"
XSS_TEMPLATE = MARKUP + " When {IO} and {S} went to the {PLACE}, {S} gave it to"
XSS_PIECES = ["<", "script", ">", "alert", "(", "1", ")</"]
REPORT_TASKS = ("ioi", "seq-digits", "induction")


def _xss_prompts(n: int, rng: random.Random, word_ok: WordFilter) -> list[PromptPair]:
    names = [w for w in words.NAMES if word_ok(w)]
    roles = occurrence_roles(XSS_TEMPLATE)
    pairs = []
    for _ in range(n):
        io, s, c = rng.sample(names, 3)
        place = rng.choice(words.PLACES)
        clean = fill(XSS_TEMPLATE, {"IO": io, "S": s, "PLACE": place}, roles)
        corrupted = fill(XSS_TEMPLATE, {"IO": io, "S": c, "PLACE": place}, roles)
        pairs.append(PromptPair(Prompt(clean, io, s), Prompt(corrupted, io, s)))
    return pairs


def xss_task() -> Task:
    return Task(
        name="xss<b>task</b>",
        description=f"a user task with markup {MARKUP} in its template",
        generator=_xss_prompts,
        keyword_roles=("IO", "S1", "S2"),
        answer_role="IO",
        contrast_role="S1",
        role_groups={"S": ("S1", "S2")},
    )


@pytest.fixture(scope="session")
def report_model_dir(tmp_path_factory, vocabulary) -> Path:
    known = sorted(set(vocabulary) | set(XSS_PIECES))
    return save_tiny_gpt2(tmp_path_factory.mktemp("report-model"), known, seed=1)


@pytest.fixture(scope="session")
def report_model(report_model_dir) -> Model:
    return load_model(str(report_model_dir))


def make_run(model: Model, tasks: list[Task], n: int = 12, seed: int = 0) -> Run:
    names = tuple(t.name for t in tasks)
    options = ReportOptions(tasks=names, n=n, seed=seed, top_heads=3, n_boot=50)
    return build_run(model, tasks, options, say=lambda message: None)


@pytest.fixture(scope="session")
def report_run(report_model) -> Run:
    return make_run(report_model, [*(get_task(name) for name in REPORT_TASKS), xss_task()])


@pytest.fixture(scope="session")
def report_dir(tmp_path_factory, report_run) -> Path:
    folder = tmp_path_factory.mktemp("report")
    write_report(report_run, folder, say=lambda message: None, pngs=True)
    return folder


ORGANISM_TASKS = ("ioi", "seq-digits")


@pytest.fixture(scope="session")
def organism_run() -> Run:
    """The organism on ioi and seq-digits, small: its heads have known jobs (README, organism card)."""
    options = ReportOptions(tasks=ORGANISM_TASKS, n=24, n_boot=50, knockout_n=8, example_prompts=3)
    model = load_model("organism")
    return build_run(model, [get_task(name) for name in ORGANISM_TASKS], options, say=lambda message: None)


@pytest.fixture(scope="session")
def organism_report_dir(tmp_path_factory, organism_run) -> Path:
    folder = tmp_path_factory.mktemp("organism-report")
    write_report(organism_run, folder, say=lambda message: None, pngs=True)
    return folder


GEMMA2_OPTIONS = ReportOptions(tasks=("ioi",), n=8, n_boot=50, knockout_n=6, example_prompts=2, top_heads=3)
NO_DLA = "left out for this test (as where the attribution step refuses)"


@pytest.fixture(scope="session")
def gemma2_model(tmp_path_factory) -> Model:
    """A tiny random Gemma 2: norms on the head outputs and soft-capped logits (frozen-norm)."""
    from tests.models.families import BY_NAME, headscope_model, save_family

    return headscope_model(save_family(BY_NAME["gemma2"], tmp_path_factory.mktemp("gemma2")))


@pytest.fixture(scope="session")
def gemma2_run(gemma2_model) -> Run:
    """The Gemma 2 on ioi: DLA and the circuit under the frozen-norm convention."""
    return build_run(gemma2_model, [get_task("ioi")], GEMMA2_OPTIONS, say=lambda message: None)


@pytest.fixture(scope="session")
def gemma2_report_dir(tmp_path_factory, gemma2_run) -> Path:
    folder = tmp_path_factory.mktemp("gemma2-report")
    write_report(gemma2_run, folder, say=lambda message: None)
    return folder


@pytest.fixture(scope="session")
def no_dla_run(gemma2_model) -> Run:
    """The Gemma 2 run with DLA left out (no architecture refuses it now): the page's fallbacks."""
    from headscope.analyses import logits

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(logits, "dla_refusal", lambda model: NO_DLA)
        return build_run(gemma2_model, [get_task("ioi")], GEMMA2_OPTIONS, say=lambda message: None)


@pytest.fixture(scope="session")
def no_dla_report_dir(tmp_path_factory, no_dla_run) -> Path:
    folder = tmp_path_factory.mktemp("no-dla-report")
    write_report(no_dla_run, folder, say=lambda message: None)
    return folder
