"""Work too small to repay an actor pool, run in the driver by the same Ray Data callable.

Starting a pool of Ray actors costs seconds: a process per actor, its imports,
a model load (``benchmarks/refresh_cost.py --local-max-videos 0`` shows what
that adds to a small refresh). A refresh that decodes and embeds a few dozen
videos would pay that for nothing, so both jobs run work of at most
``--local-max-videos`` videos in the driver, through the very callable class
their actors run (same code, same results); larger work goes to Ray Data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import pyarrow as pa


def map_batches_here(udf: Callable[[pa.Table], pa.Table | Iterable[pa.Table]],
                     rows: pa.Table, batch_size: int) -> Iterator[pa.Table]:
    """``udf`` over ``rows`` in batches of ``batch_size``, in this process, lazily; a
    ``udf`` that yields several tables per batch (as Ray Data allows) yields each."""
    for start in range(0, rows.num_rows, batch_size):
        out = udf(rows.slice(start, batch_size))
        if isinstance(out, pa.Table):
            yield out
        else:
            yield from out
