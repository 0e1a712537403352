"""Exceptions for bad input.

Every error the suite raises for something a user wrote (a case file, a tolerance file, a
golden manifest, a command-line value) is a :class:`ConformanceInputError`: its message names
the file, the key or the flag, and what is accepted. The pytest plugin and the command line
turn it into a one-line message instead of a traceback.
"""

from __future__ import annotations

from pathlib import Path


class ConformanceInputError(Exception):
    """Bad user input, with the place it was found."""

    def __init__(self, where: str | Path, message: str) -> None:
        self.where = str(where)
        self.message = message
        super().__init__(f"{self.where}: {message}")


class CaseFileError(ConformanceInputError):
    """A problem in a case file (TOML)."""


class ToleranceFileError(ConformanceInputError):
    """A problem in a tolerance file (TOML)."""


class ManifestError(ConformanceInputError):
    """A golden manifest or golden image that cannot be trusted."""


class GoldenExistsError(ConformanceInputError):
    """Recording would overwrite an existing golden and ``--force`` was not given."""


class OutputError(ConformanceInputError):
    """A file or folder the suite writes cannot be written: a full disk, a read-only or
    unwritable folder, a lock file that cannot be opened. The message names the path and the
    operating system's reason; no temporary file is left behind."""


def type_name(value: object) -> str:
    """The TOML/JSON name of a parsed value's type, for messages."""
    names = {
        bool: "boolean",
        int: "integer",
        float: "float",
        str: "string",
        list: "array",
        dict: "table",
    }
    return names.get(type(value), type(value).__name__)
