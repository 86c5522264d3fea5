"""Errors a user can cause and fix.

Every error raised for bad input derives from :class:`FinalMLPError`; the CLI turns these into
one clear line on stderr and a non-zero exit, never a traceback. Messages say what was expected,
what came, where (file, line, column or config key) and how to fix it.
"""

from __future__ import annotations


class FinalMLPError(Exception):
    """Base class of all user-facing errors."""


class ConfigError(FinalMLPError, ValueError):
    """A configuration file or option is invalid (unknown key, wrong type, bad value)."""


class SchemaError(FinalMLPError, ValueError):
    """The data does not match the declared schema (missing column, wrong type)."""


class DataError(FinalMLPError, ValueError):
    """A data file cannot be read or holds a value that cannot be parsed."""


class NotFittedError(FinalMLPError, RuntimeError):
    """A processor or model was used before it was fitted or loaded."""


class TrainingError(FinalMLPError, RuntimeError):
    """Training cannot go on (the loss became NaN or infinite)."""
