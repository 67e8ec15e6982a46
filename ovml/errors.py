"""The library's errors: every failure it expects (bad input, a file that cannot be used, a fault
it can name) is an `OvmlError`, so a face (the CLI, a script) catches them all in one clause and
shows the message as one line. Each stage keeps its own subclass beside the code that raises it;
the second base (ValueError or RuntimeError) says whether the input or the run was at fault."""


class OvmlError(Exception):
    """An expected failure; the message names the file or option and the problem, in one line."""


class UsageError(OvmlError, ValueError):
    """Options or inputs that cannot be used together; the message says what to change."""


class ExtractError(OvmlError, RuntimeError):
    """Extraction stopped on purpose (--strict), by a fault, or by splits or adapter options the
    dataset does not have; the message says where and why."""
