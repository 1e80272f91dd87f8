"""Alarms: their lifecycle, timeline and flapping control."""

from alerts.alarms.flapping import FlapDetector
from alerts.alarms.lifecycle import AlarmBook
from alerts.alarms.model import (
    SYSTEM,
    Alarm,
    AlarmChange,
    AlarmKey,
    AlarmState,
    InvalidTransition,
    TimelineEntry,
)

__all__ = [
    "SYSTEM",
    "Alarm",
    "AlarmBook",
    "AlarmChange",
    "AlarmKey",
    "AlarmState",
    "FlapDetector",
    "InvalidTransition",
    "TimelineEntry",
]
