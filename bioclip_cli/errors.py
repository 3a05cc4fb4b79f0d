"""Typed errors of the library. The command line turns each into one sentence and a hint.

Library code raises these; only :mod:`bioclip_cli.cli.app` prints them and picks the exit code.
"""

from __future__ import annotations

from pathlib import Path


class BioclipError(Exception):
    """An error the user can fix: `message` says what is wrong, `hint` what to do next."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:  # the message alone; the hint is printed separately
        return self.message

    def __reduce__(self):  # pickled as it is (raised in a worker process, re-raised in the caller)
        return _rebuilt, (type(self), self.args, self.__dict__)


def _rebuilt(cls: type[BioclipError], args: tuple, state: dict) -> BioclipError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class ConfigError(BioclipError):
    """A configuration key is unknown, has the wrong type or an impossible value."""

    def __init__(self, key: str, message: str, hint: str | None = None):
        super().__init__(message, hint)
        self.key = key


class DataError(BioclipError):
    """An input file is missing, unreadable or not in the expected layout."""

    def __init__(self, path: str | Path, message: str, hint: str | None = None):
        super().__init__(message, hint)
        self.path = Path(path)


class ChecksumMismatch(BioclipError):
    """A downloaded file does not have the published checksum."""

    def __init__(self, path: str | Path, algorithm: str, expected: str, actual: str, hint: str | None = None):
        super().__init__(
            f"checksum mismatch for {path}: expected {algorithm} {expected}, got {actual}",
            hint,
        )
        self.path = Path(path)
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual


class MissingArtifact(BioclipError):
    """Weights, data or embeddings that the operation needs are not on disk and cannot be fetched."""

    def __init__(self, name: str, message: str, hint: str | None = None):
        super().__init__(message, hint)
        self.name = name


class NotAvailableYet(BioclipError):
    """A command whose workflow is not built yet. Exits with code 2; never pretends to succeed."""

    exit_code = 2

    def __init__(self, what: str):
        super().__init__(f"not available yet: {what}", "see the project's issues for progress")
        self.what = what


class Interrupted(BioclipError):
    """The user pressed Ctrl-C; the message says what was saved."""

    exit_code = 130
