"""Errors every stage may raise for bad input that the CLI shows as one line."""


class UsageError(ValueError):
    """Options or inputs that cannot be used together; the message says what to change."""
