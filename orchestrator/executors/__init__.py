"""Executors run the commands of attempts: locally as child processes, or on a cluster.

All of them implement :class:`~orchestrator.executors.base.Executor`; the daemon does not
care where an attempt ran.
"""
