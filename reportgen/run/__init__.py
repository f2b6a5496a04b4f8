"""The per-run task: load a run's model once and do every per-run analysis.

``run_task(RunTask) -> RunResult`` (reportgen.run.task) is what every executor maps over
the runs of a build; layers.py, units.py, trace.py and extensions.py are its steps.
"""

from reportgen.run.task import RunTask, run_task

__all__ = ["RunTask", "run_task"]
