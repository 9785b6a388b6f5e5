"""default_relations: what a task defines, each relation able to have a target."""

from headscope.scores.relations import default_relations, related_word
from headscope.tasks.registry import builtin_tasks
from headscope.tasks.task import Family, Task


def _task(**fields) -> Task:
    base = dict(
        name="t",
        description="",
        generator=lambda n, rng, ok: [],
        keyword_roles=("X",),
        answer_role=None,
        contrast_role=None,
    )
    return Task(**(base | fields))


def test_every_builtin_default_has_a_target_for_some_keyword_word():
    """Checked against related_word on every family member (a plain loop, independent of the filter)."""
    for task in builtin_tasks().values():
        relations = default_relations(task)
        assert relations[0] == "copy", task.name
        words = [w for f in task.families for w in f.members] or ["Mary"]
        for relation in relations:
            assert any(related_word(task, relation, w) is not None for w in words), (task.name, relation)


def test_name_tasks_default_to_copy_and_sequences_to_copy_next():
    tasks = builtin_tasks()
    assert default_relations(tasks["ioi"]) == ("copy",)
    assert default_relations(tasks["induction"]) == ("copy",)
    assert default_relations(tasks["seq-digits"]) == ("copy", "next")


def test_relations_without_any_target_are_left_out():
    single = Family("one", ("a",))  # no neighbour: next and prev never have a target
    task = _task(families=(single,), relations=("copy", "next", "prev", "cap"), mappings={"cap": {}})
    assert default_relations(task) == ("copy",)
    cyclic = Family("days", ("Mon", "Tue"), cyclic=True)
    task = _task(families=(cyclic,), relations=("prev", "cap"), mappings={"cap": {"a": "b"}})
    assert default_relations(task) == ("copy", "prev", "cap")


def test_a_task_without_keywords_has_no_relations():
    assert default_relations(_task(keyword_roles=())) == ()
