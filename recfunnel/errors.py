"""User-facing errors.

Every error a user can cause (bad files, missing columns, unknown options) is a
:class:`RecfunnelError` with a one-line message; the CLI prints it and exits
non-zero instead of showing a traceback.
"""

from __future__ import annotations


class RecfunnelError(Exception):
    """An error caused by the user's input, reported as one line."""


class DataError(RecfunnelError):
    """The input data does not meet the contract (columns, types, emptiness)."""


class ConfigError(RecfunnelError):
    """A configuration file or option is invalid."""


class ArtifactError(RecfunnelError):
    """A model artifact is missing, corrupt, tampered with or unsafe to load."""
