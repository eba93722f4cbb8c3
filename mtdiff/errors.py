"""Errors that reach the user as one line, not a traceback.

Every check on user input (config values, dataset paths, checkpoints, sample folders) raises
:class:`MtdiffError` or a subclass with a message that names the bad value, what is accepted,
and what to change. ``mtdiff.cli`` prints ``error: <message>`` and exits with status 2.
"""

import sys


class MtdiffError(Exception):
    """Base class of the errors mtdiff reports to the user as one line."""


class ConfigError(MtdiffError, ValueError):
    """A config key or value is unknown, of the wrong type or inconsistent."""


class DatasetError(MtdiffError):
    """A dataset is missing, incomplete or corrupt."""


class CheckpointError(MtdiffError):
    """A checkpoint is missing, truncated or belongs to another configuration."""


def choice_error(option: str, value, accepted) -> ConfigError:
    """``ConfigError`` for a value outside a known set, listing the accepted ones."""
    accepted = sorted(accepted)
    return ConfigError(f"{option}={value!r} is not known; accepted: {', '.join(map(str, accepted))}")


def exit_status(work) -> int:
    """Run an entry point's ``work()``: status 0 when it succeeds; a :class:`MtdiffError`
    becomes one line, ``error: <message>`` on stderr, and status 2 (no traceback)."""
    try:
        work()
    except MtdiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
