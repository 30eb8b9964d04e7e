"""The one exception type for user mistakes: the CLI prints its message on one line and exits with code 2."""

from __future__ import annotations


class CmkdError(Exception):
    """A user-facing error (bad config, bad data, missing file). Its message says what to fix."""
