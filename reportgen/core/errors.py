"""Errors that reach the user as one clear line each.

Every class here is a *user* error: the CLI prints ``Error: <message>`` and exits
with status 1, no traceback. Anything else that escapes is a bug and keeps its
traceback. This module must not import click, so library users can catch these.
"""

from __future__ import annotations


class ReportgenError(Exception):
    """Base class of every error caused by the user's input or environment."""


class SpecError(ReportgenError):
    """One or more problems in a report spec.

    ``problems`` holds one line per problem, each already formatted as
    ``file:line: key.path: what is wrong; how to fix it``.
    """

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            msg = self.problems[0]
        else:
            msg = f"{len(self.problems)} problems in the spec:\n" + "\n".join(
                f"  {p}" for p in self.problems
            )
        super().__init__(msg)

    def __reduce__(self):
        # Rebuilt from its problems when it crosses a process boundary (a worker of the build).
        return type(self), (self.problems,)


class ModelLoadError(ReportgenError):
    """A model's architecture or checkpoint could not be loaded."""


class ImageError(ReportgenError):
    """A test image could not be read or is unusable."""


class DeviceError(ReportgenError):
    """The requested compute device does not exist on this machine."""


class BuildLockedError(ReportgenError):
    """Another build of the same report holds its lock."""


class StrictWarningsError(ReportgenError):
    """``--strict`` was given and the build produced warnings."""


class ExecutorError(ReportgenError):
    """The asked-for executor is not installed or cannot start."""
