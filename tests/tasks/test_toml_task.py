"""User tasks from TOML files: parsing, validation errors, datasets and their corrupted twins."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tomllib
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headscope.models.loading import Model, load_model
from headscope.tasks.dataset import TaskError, Tokenization, build_dataset
from headscope.tasks.registry import get_task
from headscope.tasks.toml_task import load_task_file
from headscope.tasks.vocabulary import split_words
from tests.conftest import save_tiny_gpt2
from tests.tasks.task_files import MINIMAL

EXAMPLES = Path(__file__).parents[2] / "examples"
EXTRA_WORDS = ["xylophone", "zebra", "quokka", "Oslo", "Norway"]


def example_words() -> list[str]:
    """Every word of the example task files, so a word-level tokenizer can spell their prompts."""
    found: set[str] = set()
    for path in EXAMPLES.glob("*.toml"):
        data = tomllib.loads(path.read_text())
        texts = [*data["templates"], *(w for ws in data["slots"].values() for w in ws)]
        texts += [w for table in data.get("mappings", {}).values() for w in table.values()]
        for text in texts:
            found.update(split_words(text))
    return sorted(found)


@pytest.fixture(scope="module")
def words_dir(tmp_path_factory, vocabulary) -> Path:
    """A tiny random GPT-2 whose tokenizer knows the built-in and the example tasks' words."""
    words = sorted(set(vocabulary) | set(example_words()) | set(EXTRA_WORDS))
    return save_tiny_gpt2(tmp_path_factory.mktemp("words"), words)


@pytest.fixture(scope="module")
def words_model(words_dir) -> Model:
    return load_model(str(words_dir))


def write(tmp_path: Path, text: str, name: str = "task.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# ---- loading the examples and building datasets ---------------------------------------------


def test_capitals_example_builds_a_dataset(words_model):
    task = get_task(str(EXAMPLES / "capitals.toml"))
    data = build_dataset(task, words_model.tokens, 40, seed=1)
    capital = tomllib.loads((EXAMPLES / "capitals.toml").read_text())["mappings"]["capital"]
    assert task.relations == ("copy", "capital") and task.mappings["capital"] == capital
    assert data.n == 40 and data.dropped == 0
    for i, prompt in enumerate(data.prompts):
        country = prompt.fillers()["COUNTRY"]
        assert prompt.answer == capital[country]
        assert prompt.contrast != prompt.answer and prompt.contrast in capital.values()
        assert words_model.tokens.decode(int(data.answers[i])).strip() == capital[country]
        position = int(data.roles["COUNTRY"].index[i])
        assert words_model.tokens.decode(int(data.tokens[i, position])).strip() == country


def test_templates_of_different_lengths_keep_their_own_positions(words_model):
    task = get_task(str(EXAMPLES / "capitals.toml"))
    data = build_dataset(task, words_model.tokens, 60, seed=0)
    assert len(set(data.lengths.tolist())) == 3  # three templates, three prompt lengths
    twin = data.corrupted
    assert torch.equal(twin.lengths, data.lengths)
    for name, role in data.roles.items():
        assert torch.equal(twin.roles[name].index, role.index)
        assert torch.equal(twin.roles[name].present, role.present)
    for i in range(data.n):
        end = int(data.end[i])
        assert data.tokens[i, end] == twin.tokens[i, end]  # the same template text at the end
        assert (data.tokens[i, end + 1 :] == words_model.tokens.pad_id).all()


def test_corrupted_twin_changes_only_the_corrupt_slots(words_model):
    data = build_dataset(get_task(str(EXAMPLES / "capitals.toml")), words_model.tokens, 30, seed=2)
    for clean, twin in zip(data.prompts, data.corrupted.prompts, strict=True):
        changed = {r for r in clean.fillers() if clean.fillers()[r] != twin.fillers()[r]}
        assert changed == {"COUNTRY"}
        assert (twin.answer, twin.contrast) == (clean.answer, clean.contrast)


def test_repeated_slot_gets_numbered_roles_and_role_corruption(words_model):
    task = get_task(str(EXAMPLES / "next_day.toml"))
    assert task.role_groups == {"W": ("W1", "W2", "W3")}
    assert task.answer_role is None and task.contrast_role == "DAY"
    data = build_dataset(task, words_model.tokens, 30, seed=3)
    days = task.families[0]
    for clean, twin in zip(data.prompts, data.corrupted.prompts, strict=True):
        fillers, other = clean.fillers(), twin.fillers()
        assert fillers["W1"] == fillers["W2"]
        assert clean.answer == days.successor(fillers["DAY"]) and clean.contrast == fillers["DAY"]
        assert other["W1"] == fillers["W1"] and other["W2"] != fillers["W2"]
        assert other["DAY"] != fillers["DAY"]


def test_generation_is_deterministic_for_a_seed():
    task = load_task_file(EXAMPLES / "capitals.toml")
    first = [p.clean.text + p.corrupted.text for p in task.generate(20, 7)]
    assert first == [p.clean.text + p.corrupted.text for p in task.generate(20, 7)]
    assert first != [p.clean.text + p.corrupted.text for p in task.generate(20, 8)]


def test_fillers_of_one_prompt_are_distinct(tmp_path):
    task = load_task_file(write(tmp_path, MINIMAL.replace('"Tom", "Sarah", "Paul"', '"Mary", "Tom"')))
    for pair in task.generate(50, 0):
        fillers = pair.clean.fillers()
        assert fillers["IO"] != fillers["S1"]


def test_copy_answer_names_its_role(tmp_path, words_model):
    task = load_task_file(write(tmp_path, MINIMAL))
    assert (task.answer_role, task.contrast_role) == ("IO", "S1")
    assert task.keyword_roles == ("IO", "S1", "S2") and task.role_groups == {"S": ("S1", "S2")}
    data = build_dataset(task, words_model.tokens, 10, seed=0)
    assert data.keywords.words.count(data.prompts[0].answer) >= 1


def test_keywords_default_to_the_answer_and_contrast_slots(tmp_path):
    """Left out, keywords are what the answer and contrast come from: the file MINIMAL spells out."""
    explicit = load_task_file(write(tmp_path, MINIMAL, "explicit.toml"))
    implicit = load_task_file(write(tmp_path, MINIMAL.replace('keywords = ["IO", "S"]', ""), "implicit.toml"))
    assert implicit.keyword_roles == explicit.keyword_roles == ("IO", "S1", "S2")
    assert implicit.relations == ("copy",)


def test_relations_default_to_copy_and_the_answers_relation(tmp_path):
    """capitals.toml without its keywords and relations lines: COUNTRY scored on copy and capital."""
    text = (EXAMPLES / "capitals.toml").read_text()
    kept = [line for line in text.splitlines() if not line.startswith(("keywords", "relations"))]
    assert len(kept) == len(text.splitlines()) - 2
    task = load_task_file(write(tmp_path, "\n".join(kept) + "\n"))
    assert task.relations == ("copy", "capital")
    assert set(task.keyword_roles) == {"COUNTRY"}


# ---- validation: one clear TaskError per problem ---------------------------------------------


def _top(text: str, line: str) -> str:
    """The task file text with `line` added to its top-level keys (before [slots])."""
    return text.replace("    [slots]", f"    {line}\n    [slots]")


BAD_FILES = {
    "not toml": ("templates = [unclosed", "is not valid TOML"),
    "no answer": (MINIMAL.replace('answer = "IO"', ""), "no 'answer'; name the answer slot"),
    "unused slot": (MINIMAL + '    PLACE = ["park"]\n', "slot PLACE is not used by any template"),
    "empty slot": (MINIMAL.replace('"Tom", "Sarah", "Paul"', ""), "slot S has no fillers"),
    "unknown key": (_top(MINIMAL, 'templtes = ["x"]'), "unknown key 'templtes'"),
    "undefined slot": (MINIMAL.replace("gave it to", "gave {OBJ} to"), "uses {OBJ} but [slots] has no OBJ"),
    "unknown relation": (
        MINIMAL.replace('answer = "IO"', 'answer = "IO"\nrelations = ["copy", "capital"]'),
        "unknown relation 'capital'",
    ),
    "next without families": (
        MINIMAL.replace('answer = "IO"', 'answer = { slot = "IO", relation = "next" }'),
        "needs a [families] table",
    ),
    "mapping lacks a filler": (
        MINIMAL.replace('answer = "IO"', 'answer = { slot = "IO", relation = "m" }')
        + '    [mappings.m]\n    Mary = "Tom"\n',
        "m has no value for 'John', 'Anne' of slot IO",
    ),
    "keyword not a slot": (MINIMAL.replace('["IO", "S"]', '["IO", "X"]'), "keyword 'X' is not a slot"),
    "corrupt a one-filler slot": (
        MINIMAL.replace('"Mary", "John", "Anne"', '"Mary"'),
        "slot IO has one filler, so the twin cannot change it",
    ),
    "corrupt an unknown role": (_top(MINIMAL, 'corrupt = ["S3"]'), "'S3' is neither a slot nor a role"),
    "role clash": (
        MINIMAL.replace("gave it to", "and {S1} gave it to") + '    S1 = ["Kate"]\n',
        "role 'S1' of slot S clashes with the slot S1",
    ),
    "adjacent slots": (MINIMAL.replace("{IO} and {S}", "{IO}{S}"), "two slots with nothing between them"),
    "contrast is the answer": (
        MINIMAL.replace('contrast = "S"', 'contrast = "IO"'),
        "the contrast is the answer",
    ),
    "answer slot missing from a template": (
        MINIMAL.replace('gave it to"]', 'gave it to", "Then {S} left"]'),
        "template 2 does not use the answer slot {IO}",
    ),
    "templates not a list": (
        MINIMAL.replace('templates = ["', 'templates = "').replace('to"]', 'to"'),
        "templates must be a list",
    ),
    "multi-word filler": (MINIMAL.replace('"Anne"', '"Anne Marie"'), "fillers must be single words"),
    "empty keywords": (
        MINIMAL.replace('["IO", "S"]', "[]"),
        "keywords is empty, so the OV scores have no tokens",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_task_file_is_one_clear_error(case, tmp_path):
    text, expected = BAD_FILES[case]
    path = write(tmp_path, text)
    with pytest.raises(TaskError) as caught:
        load_task_file(path)
    message = str(caught.value)
    assert expected in message, message
    assert str(path) in message and "\n" not in message


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(TaskError, match="does not exist"):
        load_task_file(tmp_path / "absent.toml")


def test_fillers_that_are_not_single_tokens_are_named(tmp_path, tiny_model):
    path = write(tmp_path, MINIMAL.replace('"Anne"', '"Anne", "Bartholomew"'))
    with pytest.raises(TaskError) as caught:
        build_dataset(load_task_file(path), tiny_model.tokens, 5, seed=0)
    assert "not single tokens for this model: 'Bartholomew' (slot IO)" in str(caught.value)


def test_answers_that_are_not_single_tokens_are_named(tiny_model):
    with pytest.raises(TaskError) as caught:
        build_dataset(get_task(str(EXAMPLES / "capitals.toml")), tiny_model.tokens, 5, seed=0)
    assert "'France' (slot COUNTRY)" in str(caught.value)


def test_prompts_longer_than_the_context_are_refused(tmp_path, tiny_model):
    long_template = "When {IO} and {S} met," + " the" * 70 + " {S} gave it to"
    path = write(tmp_path, MINIMAL.replace("When {IO} and {S} met, {S} gave it to", long_template))
    with pytest.raises(TaskError) as caught:
        build_dataset(load_task_file(path), tiny_model.tokens, 3, seed=0)
    assert "a prompt is 81 tokens long (BOS included) but the model's context holds 64" in str(caught.value)


def test_no_context_limit_without_a_model(tmp_path, tiny_model):
    """A Tokenization made without n_ctx (a bare tokenizer) does not invent a limit."""
    long_template = "When {IO} and {S} met," + " the" * 70 + " {S} gave it to"
    path = write(tmp_path, MINIMAL.replace("When {IO} and {S} met, {S} gave it to", long_template))
    data = build_dataset(load_task_file(path), Tokenization(tiny_model.tokens.tokenizer), 3, seed=0)
    assert int(data.lengths[0]) == 81


# ---- property: random valid files either build or fail with one clear TaskError -------------

SLOT_NAMES = ("A", "B", "C", "PLACE", "X")
TEXT_WORDS = ("the", "went", "to", "and", "gave", "a", "in", ".", ",", "is", "quokka")
FILLERS = ("Mary", "John", "Anne", "Tom", "park", "store", "Monday", "zebra", "Bartholomew", "5")


@st.composite
def task_files(draw) -> str:
    slots = draw(st.lists(st.sampled_from(SLOT_NAMES), min_size=1, max_size=3, unique=True))
    templates = draw(st.lists(_template(slots), min_size=1, max_size=3))
    fillers = {
        s: draw(st.lists(st.sampled_from(FILLERS), min_size=1, max_size=5, unique=True)) for s in slots
    }
    answer = draw(st.sampled_from(slots))
    keywords = draw(st.lists(st.sampled_from(slots), unique=True))
    lines = [
        f"templates = {templates!r}".replace("'", '"'),
        f'answer = "{answer}"',
        f"keywords = {keywords!r}".replace("'", '"'),
        "[slots]",
        *(f"{s} = {ws!r}".replace("'", '"') for s, ws in fillers.items()),
    ]
    return "\n".join(lines) + "\n"


def _template(slots: list[str]):
    def build(words: list[str], picks: list[str]) -> str:
        parts = [*words]
        for i, slot in enumerate(picks):
            parts.insert(min(2 * i, len(parts)), "{" + slot + "}")
        return " ".join(parts) + " " + " ".join("{" + s + "}" for s in slots)

    return st.builds(
        build,
        st.lists(st.sampled_from(TEXT_WORDS), min_size=1, max_size=8),
        st.lists(st.sampled_from(slots), max_size=2),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=task_files(), seed=st.integers(0, 3))
def test_random_task_files_build_or_fail_clearly(text, seed, tiny_model, tmp_path):
    path = write(tmp_path, text, f"random_{seed}.toml")
    try:
        data = build_dataset(load_task_file(path), tiny_model.tokens, 8, seed)
    except TaskError as error:
        assert "\n" not in str(error) and str(error)
        return
    assert data.n + data.dropped == 8
    assert torch.equal(data.corrupted.lengths, data.lengths)


# ---- the command line -------------------------------------------------------------------------


def test_tasks_show_prints_a_toml_task(words_dir):
    command = ["tasks", "show", str(EXAMPLES / "capitals.toml"), "--model", str(words_dir), "--n", "2"]
    result = subprocess.run(
        [sys.executable, "-m", "headscope.cli", *command], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "COUNTRY" in result.stdout and "corrupted twin" in result.stdout
