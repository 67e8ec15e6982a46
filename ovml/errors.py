"""The library's errors: every failure it expects (bad input, a file that cannot be used, a fault
it can name) is an `OvmlError`, so a face (the CLI, a script) catches them all in one clause and
shows the message as one line. Each stage keeps its own subclass beside the code that raises it;
the second base (ValueError or RuntimeError) says whether the input or the run was at fault."""
from __future__ import annotations

import os
import re


class OvmlError(Exception):
    """An expected failure; the message names the file or option and the problem, in one line."""


class UsageError(OvmlError, ValueError):
    """Options or inputs that cannot be used together; the message says what to change."""


class ExtractError(OvmlError, RuntimeError):
    """Extraction stopped on purpose (--strict), by a fault, or by splits or adapter options the
    dataset does not have; the message says where and why."""


def system_errno(err: Exception) -> int | None:
    """The errno of an OSError, or the one HDF5 names inside its message (`errno = 28`)."""
    if isinstance(err, OSError) and err.errno:
        return err.errno
    named = re.search(r"errno = (\d+)", str(err))
    return int(named.group(1)) if named else None


def os_reason(err: OSError) -> str:
    """An OSError's reason in one line: its strerror, or the system's text for its errno where the
    message runs over several lines (as h5py's do), else its first line."""
    reason = err.strerror or str(err) or type(err).__name__
    if "\n" not in reason:
        return reason
    code = system_errno(err)
    return os.strerror(code) if code else reason.splitlines()[0]
