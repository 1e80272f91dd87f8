"""The wall clock and the estates' local time zone: one of each for the whole tree.

Wall time is when something reached us or a person acted; data time (when a value was
measured) comes in the messages and is never read from here.
"""

import time
from zoneinfo import ZoneInfo

__all__ = ["SHANGHAI", "now_ms"]

# Every estate is in China: Asia/Shanghai, UTC+8 all year (no summer time since 1991).
SHANGHAI = ZoneInfo("Asia/Shanghai")


def now_ms() -> int:
    """Wall time now, in epoch milliseconds."""
    return time.time_ns() // 1_000_000
