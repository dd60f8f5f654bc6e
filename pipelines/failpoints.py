"""Named points where a fault test stops a job, to kill it there (as fail-rs and
FoundationDB do): inert unless the ``VTR_FAILPOINT`` environment variable names the point.

    VTR_FAILPOINT=ingest.commit python pipelines/refresh.py ...   # prints, then waits

The job prints ``failpoint NAME reached`` and waits; the test then kills the
job's processes with SIGKILL and checks what readers see.
"""

from __future__ import annotations

import os
import time


def failpoint(name: str) -> None:
    """Wait here, for good, when ``VTR_FAILPOINT`` is ``name``."""
    if os.environ.get("VTR_FAILPOINT") != name:
        return
    print(f"failpoint {name} reached", flush=True)
    while True:
        time.sleep(1)
