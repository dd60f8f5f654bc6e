"""Benchmark inputs shared by the scripts in this folder: synthetic clips, ingested."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pipelines.sources.samples import bundled_minilm
from pipelines.sources.synthetic import generate

REPO = Path(__file__).resolve().parents[1]


def script(args: list[str]) -> str:
    """Run a repository script; its stdout. A failed script stops the benchmark with the
    end of its stderr, which would otherwise stay captured (a training killed by Ray's
    memory monitor says so there)."""
    done = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(args[:1])} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def make_data(folder: Path, groups: int) -> str:
    """Synthetic clips (``groups`` of 3 to train on, 4 to validate), ingested at 64 px."""
    manifest = generate(folder / "synthetic", train_groups=groups, test_groups=0, val_groups=4)
    output = folder / "ingest"
    subprocess.run(
        [sys.executable, "pipelines/ingest.py", "--manifest", str(manifest), "--data",
         str(output), "--frame-size", "64", "--keyword-model", str(bundled_minilm())],
        cwd=REPO, check=True, capture_output=True,
    )
    return str(output)
