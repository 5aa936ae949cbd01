"""Replay an arrival trace through a scaling policy and count what it costs and how long tasks wait.

The scalejob policy runs through exactly :func:`autoscale.policy.decide` (so the numbers are the
controller's, minus I/O); the reference policies model KEDA and the HPA with their defaults
(:mod:`autoscale.simulate.policies`). :mod:`~autoscale.simulate.engine` is the discrete-event
replay, :mod:`~autoscale.simulate.report` what is printed and drawn.
"""

from autoscale.simulate.engine import SimResult, SimWorker, Task, load_trace, simulate
from autoscale.simulate.policies import HpaPolicy, Policy, ScalejobPolicy, hpa_policy, keda_policy, scalejob_label
from autoscale.simulate.report import compare, config_for, plot, row, run_cli, table

__all__ = [
    "HpaPolicy", "Policy", "ScalejobPolicy", "SimResult", "SimWorker", "Task", "compare", "config_for", "hpa_policy",
    "keda_policy", "load_trace", "plot", "row", "run_cli", "scalejob_label", "simulate", "table",
]
