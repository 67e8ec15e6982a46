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
from ovml.errors import ExtractError, OvmlError, UsageError, os_reason, system_errno
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


def test_an_os_error_of_many_lines_is_told_in_one():
    """h5py's OSErrors run over several lines (a full disk while creating an HDF5 cache did)."""
    many = OSError(28, "Unable to synchronously create file (file write failed: time = Mon\n, errno = 28)")
    assert os_reason(many) == "No space left on device"
    assert os_reason(OSError("first line\nsecond line")) == "first line"
    assert os_reason(OSError(2, "No such file or directory")) == "No such file or directory"
    named = RuntimeError("Unable to synchronously flush file (file write failed: time = Mon\n, errno = 28, ...)")
    assert system_errno(named) == 28 and system_errno(RuntimeError("no number")) is None
