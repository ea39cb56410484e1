"""Processes and threads of the application."""

from osv.sched._futex import FutexTable
from osv.sched._lock import KERNEL_LOCK, blocking
from osv.sched._task import (
    DEFAULT_RLIMITS,
    RLIM_INFINITY,
    Process,
    ProcessExit,
    RegistersLoaded,
    Task,
    ThreadExit,
)

__all__ = [
    "KERNEL_LOCK",
    "DEFAULT_RLIMITS",
    "RLIM_INFINITY",
    "FutexTable",
    "Process",
    "ProcessExit",
    "RegistersLoaded",
    "Task",
    "ThreadExit",
    "blocking",
]
