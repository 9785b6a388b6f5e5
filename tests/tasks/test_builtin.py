"""Built-in task generators: deterministic for a seed, positions on the right tokens."""

import pytest

from headscope.tasks.builtin import builtin_tasks
from headscope.tasks.dataset import build_dataset

TASKS = sorted(builtin_tasks())


@pytest.mark.parametrize("name", TASKS)
def test_same_seed_same_prompts(name):
    task = builtin_tasks()[name]
    first = [p.clean.text for p in task.generate(30, seed=7)]
    again = [p.clean.text for p in task.generate(30, seed=7)]
    other = [p.clean.text for p in task.generate(30, seed=8)]
    assert first == again
    assert first != other


@pytest.mark.parametrize("name", TASKS)
def test_role_positions_point_at_their_fillers(name, tiny_model):
    dataset = build_dataset(builtin_tasks()[name], tiny_model.tokens, 40, seed=1)
    assert dataset.dropped == 0
    for i, prompt in enumerate(dataset.prompts):
        for role, word in prompt.fillers().items():
            token = int(dataset.tokens[i, dataset.roles[role].index[i]])
            assert tiny_model.tokens.decode(token).strip() == word
        words = tiny_model.tokens.tokenizer.encode(prompt.text, add_special_tokens=False)
        assert int(dataset.end[i]) == len(words)  # BOS sits at 0


@pytest.mark.parametrize("name", TASKS)
def test_corrupted_twin_lines_up(name, tiny_model):
    dataset = build_dataset(builtin_tasks()[name], tiny_model.tokens, 40, seed=2)
    twin = dataset.corrupted
    assert twin.tokens.shape == dataset.tokens.shape
    for role in dataset.roles:
        assert (twin.roles[role].index == dataset.roles[role].index).all()
    assert (twin.tokens != dataset.tokens).any(dim=1).all()


def test_ioi_answer_is_the_indirect_object(tiny_model):
    dataset = build_dataset(builtin_tasks()["ioi"], tiny_model.tokens, 20, seed=3)
    for i, prompt in enumerate(dataset.prompts):
        fillers = prompt.fillers()
        assert prompt.answer == fillers["IO"]
        assert prompt.contrast == fillers["S1"] == fillers["S2"]
        assert int(dataset.roles["S1+1"].index[i]) == int(dataset.roles["S1"].index[i]) + 1


def test_sequence_answer_is_the_next_member(tiny_model):
    task = builtin_tasks()["seq-months"]
    family = task.families[0]
    for pair in task.generate(50, seed=4):
        fillers = pair.clean.fillers()
        assert family.successor(fillers["x4"]) == pair.clean.answer
    assert family.successor("December") == "January"
    assert builtin_tasks()["seq-letters"].families[0].successor("Z") is None


def _first_and_repeat(dataset, i):
    roles = dataset.roles
    first = [int(dataset.tokens[i, roles[f"t{k}"].index[i]]) for k in range(1, 9)]
    repeat = [int(dataset.tokens[i, roles[f"r{k}"].index[i]]) for k in range(1, 8)]
    return first, repeat


def test_induction_default_twin_replaces_the_first_occurrence(tiny_model):
    task = builtin_tasks()["induction"]
    assert task.twin_kind == "first"
    dataset = build_dataset(task, tiny_model.tokens, 30, seed=5)
    for i, prompt in enumerate(dataset.prompts):
        first, repeat = _first_and_repeat(dataset, i)
        twin_first, twin_repeat = _first_and_repeat(dataset.corrupted, i)
        assert twin_repeat == repeat  # the current token and the whole repeat unchanged
        assert not set(twin_first) & set(first)  # every word of the first occurrence replaced
        twin_words = dataset.corrupted.prompts[i].text.split()
        assert prompt.answer not in twin_words and prompt.contrast not in twin_words
        assert prompt.contrast not in prompt.text.split()


def test_induction_repeat_twin_is_the_old_one_and_clean_prompts_do_not_depend_on_the_twin(tiny_model):
    from headscope.tasks.registry import get_task

    task = get_task("induction:repeat")
    assert task.name == "induction" and task.twin_kind == "repeat"
    new, old = (build_dataset(t, tiny_model.tokens, 20, seed=6) for t in (get_task("induction"), task))
    assert (new.tokens == old.tokens).all() and (new.contrasts == old.contrasts).all()
    for i in range(new.n):
        first, repeat = _first_and_repeat(old, i)
        twin_first, twin_repeat = _first_and_repeat(old.corrupted, i)
        assert twin_first == first and not set(twin_repeat) & set(repeat)


def test_every_builtin_task_names_its_twins_and_a_wrong_twin_is_one_line():
    from headscope.errors import HeadscopeError
    from headscope.tasks.registry import get_task

    for task in builtin_tasks().values():
        assert task.twins and all(t.changes and t.reveals for t in task.twins)
    with pytest.raises(HeadscopeError, match="no twin 'nope'.*first, repeat"):
        get_task("induction:nope")
