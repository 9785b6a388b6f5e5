"""Every name of the public API resolves to the object of its module, and is documented."""

import importlib
import inspect

import pytest

import headscope


@pytest.mark.parametrize("name", sorted(headscope._EXPORTS))
def test_public_name_resolves(name):
    module = importlib.import_module(headscope._EXPORTS[name])
    assert getattr(headscope, name) is getattr(module, name)


def test_plot_is_the_plot_module():
    assert headscope.plot is importlib.import_module("headscope.plot")
    assert "plot" in headscope.__all__ and "plot" in dir(headscope)


WEIGHTS_ONLY = ["atlas", "composition_scores"]  # the analyses of the model alone, no task
NOTEBOOK = [name for name, module in headscope._EXPORTS.items() if module == "headscope.api"]
PLOTS = list(importlib.import_module("headscope.plot").__all__)
FUNCTIONS = [name for name in headscope._EXPORTS if inspect.isfunction(getattr(headscope, name))]


@pytest.mark.parametrize("name", NOTEBOOK)
def test_notebook_functions_take_model_then_task(name):
    parameters = list(inspect.signature(getattr(headscope, name)).parameters)
    if name in WEIGHTS_ONLY:
        assert parameters[0] == "model" and "task" not in parameters
    else:
        assert parameters[:2] == ["model", "task"]


def test_weights_only_analyses_are_the_notebook_apis():
    """hs.atlas and hs.composition_scores live in headscope.api with every other hs.<analysis>."""
    assert {name: headscope._EXPORTS[name] for name in WEIGHTS_ONLY} == dict.fromkeys(
        WEIGHTS_ONLY, "headscope.api"
    )


@pytest.mark.parametrize(
    "function", [getattr(headscope, n) for n in FUNCTIONS] + [getattr(headscope.plot, n) for n in PLOTS]
)
def test_public_functions_document_args_returns_and_an_example(function):
    doc = inspect.getdoc(function) or ""
    for section in ("Args:", "Returns:", "Example:"):
        assert section in doc, f"{function.__name__} lacks {section}"
    documented = doc.split("Args:")[1].split("Returns:")[0]
    for parameter in inspect.signature(function).parameters:
        if parameter != "where":
            assert parameter in documented, f"{function.__name__}: {parameter} is not documented"


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError):
        headscope.not_a_name  # noqa: B018
