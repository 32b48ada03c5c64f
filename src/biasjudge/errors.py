"""The few exception types biasjudge raises on purpose.

Everything a user can cause (bad input files, bad configs, a missing optional package, an
unknown backend) raises a subclass of :class:`BiasJudgeError`, so the CLI can print one clean
line instead of a traceback.
"""

from __future__ import annotations


class BiasJudgeError(Exception):
    """Base class of every error biasjudge raises for a user to read."""


class DataError(BiasJudgeError):
    """A record in an input file is invalid.

    The message always names the file, the line (1-based) and the field, so the user can open
    the file at the right place.
    """

    def __init__(self, path: str, line: int | None, field: str | None, message: str) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.message = message
        parts = [path if line is None else f"{path}:{line}"]
        if field:
            parts.append(f"field '{field}'")
        parts.append(message)
        super().__init__(": ".join(parts))


class ConfigError(BiasJudgeError):
    """A config file or a flag has a bad value; the message names the key."""


class MissingDependency(BiasJudgeError):
    """An optional package is needed for this feature; the message says what to pip-install."""

    def __init__(self, package: str, extra: str | None = None, feature: str = "") -> None:
        self.package = package
        self.extra = extra
        install = f"pip install 'biasjudge[{extra}]'" if extra else f"pip install {package}"
        for_what = f" for {feature}" if feature else ""
        super().__init__(f"the package '{package}' is needed{for_what}: {install}")


class BackendError(BiasJudgeError):
    """A judge backend could not be created or failed in a way retrying will not fix."""


class ThinkingModeError(BiasJudgeError):
    """A rendered prompt or template would switch Gemma's thinking mode on (`<|think|>`)."""


class LeakageError(BiasJudgeError):
    """A training file shares a pair or question with the evaluation holdout."""


class MetricInputError(BiasJudgeError, ValueError):
    """A metric was given inputs it cannot score: lengths differ, a value is not a label, a bad
    probability row, or nothing to score at all (no predictions, no labelled pair predicted).

    Also a ValueError, so a library caller catching ValueError (as with scikit-learn's metrics)
    still catches it, while the CLI prints it as one line like every BiasJudgeError.
    """
