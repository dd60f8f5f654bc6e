"""`ray job submit` of the ingest job to a head node started by the test."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import free_port
from deltalake import DeltaTable

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def head_node(tmp_path):
    """A single-node Ray cluster on loopback; stopped at the end whatever happens."""
    bin_dir = Path(sys.executable).parent
    ray = str(bin_dir / "ray")
    dashboard = free_port()
    # A throwaway loopback cluster: no token auth (a real cluster should keep it on).
    # The job's `python` must be this environment's, as it is on an activated venv.
    env = {**os.environ, "RAY_AUTH_MODE": "disabled",
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    subprocess.run(
        [ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={free_port()}",
         "--num-cpus=2", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard}", "--disable-usage-stats"],
        check=True, env=env, capture_output=True, timeout=180,
    )
    try:
        yield ray, f"http://127.0.0.1:{dashboard}", env
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_ingest_through_ray_job_submit(head_node, sample_videos, keyword_model, tmp_path):
    ray, address, env = head_node
    manifest = tmp_path / "manifest.jsonl"
    pd.DataFrame(
        [
            {"video_id": "bikes", "uri": str(sample_videos / "bikes.mp4"), "caption": "bikes"},
            {"video_id": "bunny", "uri": str(sample_videos / "bigbuckbunny.mp4"),
             "caption": "a big rabbit wakes up in the forest"},
            {"video_id": "gone", "uri": str(tmp_path / "gone.mp4"), "caption": "nothing"},
        ]
    ).to_json(manifest, orient="records", lines=True)
    output = tmp_path / "out"
    command = [ray, "job", "submit", "--address", address, "--working-dir", str(REPO), "--",
               "python", "pipelines/ingest.py", "--manifest", str(manifest), "--output",
               str(output), "--keyword-model", keyword_model, "--frame-size", "112"]
    deadline = time.monotonic() + 120
    while True:  # the head's job agent may still be starting: it then refuses the job
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if "No available agent" not in result.stderr or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 decoded ok, 1 failed" in result.stdout
    videos = DeltaTable(str(output / "videos")).to_pandas()  # no project code
    assert sorted(videos["video_id"]) == ["bikes", "bunny"]
    assert dict(zip(videos["video_id"], videos["num_frames"], strict=True)) == {
        "bikes": 10, "bunny": 6}
    errors = DeltaTable(str(output / "errors")).to_pandas()
    assert list(errors["video_id"]) == ["gone"]
    captions = DeltaTable(str(output / "captions")).to_pandas()
    assert sorted(captions["video_id"]) == ["bikes", "bunny"]
