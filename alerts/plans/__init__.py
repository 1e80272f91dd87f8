"""Emergency plans: the plans as data, and their activations per estate."""

from alerts.plans.activation import (
    ActivationChange,
    ActivationEntry,
    ActivationTask,
    PlanActivation,
    PlanBook,
    Source,
)
from alerts.plans.model import BUNDLED_PLANS, Plan, PlanLevel, ResponseLevel, TaskSpec, load_plans

__all__ = [
    "BUNDLED_PLANS",
    "ActivationChange",
    "ActivationEntry",
    "ActivationTask",
    "Plan",
    "PlanActivation",
    "PlanBook",
    "PlanLevel",
    "ResponseLevel",
    "Source",
    "TaskSpec",
    "load_plans",
]
