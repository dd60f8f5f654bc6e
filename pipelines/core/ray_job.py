"""What every Ray job script does first: parse its config, set up logging, join Ray."""

from __future__ import annotations

import logging
from typing import TypeVar

from pipelines.core.job_config import parse_config

T = TypeVar("T")


def start_job(cls: type[T], doc: str, argv: list[str] | None) -> T:
    """Parse flags into ``cls``, configure logging and connect to Ray.

    With no ``ray_address`` the job joins the cluster that ``ray job submit``
    runs it on (``RAY_ADDRESS``), else starts a local one; a Ray already
    initialised in this process (a test, the demo) is reused.
    """
    return join_ray(parse_config(cls, doc, argv))


def join_ray(config: T) -> T:
    """Configure logging and connect to Ray (see :func:`start_job`), for a job that checks
    its inputs between parsing its flags and starting Ray; returns ``config``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import ray

    ray.init(address=config.ray_address, ignore_reinit_error=True)
    survive_lost_nodes()
    return config


def survive_lost_nodes() -> None:
    """Ray Data settings under which a job outlives a lost worker node.

    Ray Data's v2 Parquet reader (the default since Ray 2.5x) reads file footers
    on actors it spreads over the cluster and does not replace: a node lost while
    one of them works fails the whole read. The v1 reader's tasks are retried.
    """
    import ray.data

    ray.data.DataContext.get_current().use_datasource_v2 = False


def quiet_ray_data() -> None:
    """No Ray Data progress bars or per-dataset INFO lines, for a job whose datasets are
    a short step of its work (training reads its pairs once; its log is one line per
    epoch)."""
    import ray.data

    context = ray.data.DataContext.get_current()  # travels with the datasets to Ray Train
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # and "progress bars disabled"
