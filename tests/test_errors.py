"""HeadscopeError: a message names the Python argument; the CLI's flag replaces it there alone."""

from __future__ import annotations

import pytest

from headscope.errors import HeadscopeError
from headscope.scores.ov import OVOptions, ov_scores
from headscope.tasks.dataset import TaskError, build_dataset
from headscope.tasks.registry import get_task

FLAGS = {"k": "--k", "roles": "--roles", "words": "--keywords"}


def test_the_leading_argument_is_read_and_renamed():
    error = HeadscopeError("k=0: k must be at least 1")
    assert error.argument == "k"
    assert error.naming(FLAGS) == "--k 0: k must be at least 1"  # only the leading name changes
    assert HeadscopeError("words='a a' repeats a").naming(FLAGS) == "--keywords 'a a' repeats a"


def test_a_left_out_argument_reads_not_given():
    error = HeadscopeError("roles=None: task t has no answer role; name the roles")
    assert error.naming(FLAGS) == "--roles not given: task t has no answer role; name the roles"


@pytest.mark.parametrize(
    "message",
    ["unknown task 'nope'", "n=3: fine but no flag for n here", "task=x but spelt after a space k=1"],
)
def test_a_message_without_a_known_leading_argument_is_left_alone(message):
    assert HeadscopeError(message).naming(FLAGS) == message


def test_subclasses_share_it():
    assert TaskError("k=2: x").naming(FLAGS) == "--k 2: x"


def test_python_errors_name_python_arguments(tiny_model):
    """What a notebook user sees: `k=0` and `n=0`, never a command-line flag."""
    data = build_dataset(get_task("seq-digits"), tiny_model.tokens, 2, 0)
    with pytest.raises(HeadscopeError) as caught:
        ov_scores(tiny_model, data, OVOptions(relations=("copy",), k=0))
    assert str(caught.value).startswith("k=0: ") and "--" not in str(caught.value)
    with pytest.raises(TaskError) as caught:
        build_dataset(get_task("ioi"), tiny_model.tokens, 0, 0)
    assert str(caught.value).startswith("n=0: ") and "--" not in str(caught.value)
