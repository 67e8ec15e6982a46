"""One house for errors and backbones: every error the library defines is an OvmlError (so the
CLI catches them in one clause) and keeps the second base its callers catch; the two backbone
families are siblings under one abstract interface."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import ovml
from ovml.cache.schema import CacheError
from ovml.errors import ExtractError, OvmlError, UsageError
from ovml.extract.backbone import Backbone, BackboneError, ResnetBackbone, VitBackbone
from ovml.extract.datasets import DatasetError
from ovml.extract.text import PromptError
from ovml.train.run_folder import CheckpointError


def defined_errors() -> list[type]:
    """Every exception class defined in an ovml module."""
    errors = []
    for module in pkgutil.walk_packages(ovml.__path__, "ovml."):
        if module.name.endswith("__main__"):
            continue
        for _, value in inspect.getmembers(importlib.import_module(module.name), inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.name:
                errors.append(value)
    return errors


def test_every_error_the_library_defines_is_an_ovml_error():
    errors = defined_errors()
    assert {UsageError, CacheError, BackboneError, PromptError, DatasetError, ExtractError} <= set(errors)
    assert [error for error in errors if not issubclass(error, OvmlError)] == []


@pytest.mark.parametrize("error, second_base", [
    (UsageError, ValueError), (CacheError, RuntimeError), (BackboneError, RuntimeError),
    (PromptError, ValueError), (DatasetError, ValueError), (ExtractError, RuntimeError),
    (CheckpointError, ValueError)])
def test_errors_keep_their_second_base(error, second_base):
    assert issubclass(error, second_base)


def test_backbone_families_are_siblings_of_the_abstract_base():
    assert inspect.isabstract(Backbone)
    for family in (ResnetBackbone, VitBackbone):
        assert family.__bases__ == (Backbone,) and not inspect.isabstract(family)
    assert {ResnetBackbone.kind, VitBackbone.kind} == {"resnet", "vit"}
