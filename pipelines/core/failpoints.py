"""Named points where a fault test stops a job, to kill it there (as fail-rs and
FoundationDB do): inert unless the ``VTR_FAILPOINT`` environment variable names the point.

    VTR_FAILPOINT=ingest.commit python pipelines/refresh.py ...   # prints, then waits

The job prints ``failpoint NAME reached`` and waits; the test then kills the
job's processes with SIGKILL and checks what readers see.

    VTR_FAILPOINT=decode.video:1 ...   # every pass of the point takes one more second

``NAME:SECONDS`` slows a point down instead, so that a test can kill a node
while a job's actors are busy; Ray workers inherit the variable from the job's
runtime environment.
"""

from __future__ import annotations

import os
import time


def failpoint(name: str) -> None:
    """Wait here, for good, when ``VTR_FAILPOINT`` is ``name``; sleep when it is
    ``name:SECONDS``."""
    setting = os.environ.get("VTR_FAILPOINT", "")
    if setting.startswith(f"{name}:"):
        time.sleep(float(setting.removeprefix(f"{name}:")))
        return
    if setting != name:
        return
    print(f"failpoint {name} reached", flush=True)
    while True:
        time.sleep(1)
