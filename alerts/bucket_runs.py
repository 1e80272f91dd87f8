"""How many samples a window series' buckets get as a flush joins its arrays: the check
behind the summaries (``alerts.windows.SeriesWindow``: at most ``per_bucket`` samples a bucket
of the kind's reporting interval, first, lowest, highest, last)."""

from __future__ import annotations

from array import array

import numpy as np
import numpy.typing as npt

__all__ = ["BY_COLUMN", "bucket_runs"]

# A flush of this many samples or more counts them per bucket by column (a few numpy calls).
BY_COLUMN = 16


def bucket_runs(
    tail_ts: array[int],
    times: npt.NDArray[np.int64],
    bucket_ms: int,
    run: tuple[int | None, int],
    per_bucket: int,
    by_column: int = BY_COLUMN,
) -> tuple[bool, int | None, int]:
    """Whether a bucket gets more than ``per_bucket`` samples with a flush's samples (``times``
    as numpy, ``tail_ts`` as they waited; in time order), counting in the newest bucket's
    ``run`` before them (its id, its samples); with the newest bucket's run after them."""
    rid, rn = run
    k = len(times)
    if k < by_column:  # a Python loop: most short flushes are a sample or two
        full = False
        for t in tail_ts:
            i = t // bucket_ms
            if i == rid:
                rn += 1
            else:
                rid, rn = i, 1
            full = full or rn > per_bucket
        return full, rid, rn
    # By column: in time order a bucket holds more than p samples iff some sample's bucket
    # is that of the one p before it (the run before the flush counted in).
    ids = times // bucket_ms
    p = per_bucket
    first, last = int(ids[0]), int(ids[-1])
    full = bool((ids[p:] == ids[:-p]).any())
    if first == rid and rn + int(np.searchsorted(ids, first, side="right")) > p:
        full = True  # the run before the flush goes on into it
    n = 1 if k > 1 and int(ids[-2]) != last else k - int(np.searchsorted(ids, last))
    if last == rid and n == k:
        n += rn
    return full, last, n
