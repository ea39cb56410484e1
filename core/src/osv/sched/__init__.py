"""Processes and threads of the application."""

from osv.sched._task import DEFAULT_RLIMITS, RLIM_INFINITY, Process, ProcessExit, Task

__all__ = ["DEFAULT_RLIMITS", "RLIM_INFINITY", "Process", "ProcessExit", "Task"]
