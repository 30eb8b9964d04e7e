"""The one exception type for user mistakes: the CLI prints its message on one line and exits with code 2."""

from __future__ import annotations


class CmkdError(Exception):
    """A user-facing error (bad config, bad data, missing file). Its message says what to fix."""


def require(module: str, extra: str, purpose: str):  # noqa: ANN201 - the module
    """Import an optional dependency, or a one-line :class:`CmkdError` naming the extra that installs it.

    Args:
        module: the import name (``optuna``).
        extra: cmkd's extra that installs it (``tune`` -> ``pip install 'cmkd[tune]'``).
        purpose: what needs it, for the message.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise CmkdError(f"{purpose} needs the optional package '{module}': pip install 'cmkd[{extra}]'") from None
