"""Every name of the public API resolves to the object of its module."""

import importlib

import pytest

import headscope


@pytest.mark.parametrize("name", headscope.__all__)
def test_public_name_resolves(name):
    module = importlib.import_module(headscope._EXPORTS[name])
    assert getattr(headscope, name) is getattr(module, name)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError):
        headscope.not_a_name  # noqa: B018
