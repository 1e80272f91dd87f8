"""Alarms: their lifecycle, timeline and flapping control."""

from alerts.alarms import model
from alerts.alarms.flapping import FlapDetector
from alerts.alarms.lifecycle import AlarmBook
from alerts.alarms.model import *  # noqa: F403

# the records and states are model's own surface, listed once in its __all__
__all__ = ["AlarmBook", "FlapDetector"]
__all__ += model.__all__
