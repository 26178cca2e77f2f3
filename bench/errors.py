"""User-facing errors.

Every error a user can cause (bad path, corrupt file, unknown name) is a `BenchError` with a
one-line message that names the file or value at fault. The CLI prints it without a traceback
and exits with status 2; library callers can catch it.
"""

from __future__ import annotations


class BenchError(Exception):
    """An error caused by input or configuration; its message is one line, shown as is."""


class DataError(BenchError):
    """A data file or folder is missing, corrupt or inconsistent."""


class ConfigError(BenchError):
    """A configuration value or name is invalid."""


class DiskSpaceError(DataError):
    """A write failed for lack of space (full disk, quota, ``ulimit -f``); the message names the path."""
