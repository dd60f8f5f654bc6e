"""Moments in long videos: which video, and where in it, for the synthetic benchmark's stories.

    python benchmarks/long_video_moments.py --workdir bench-moments/ \\
        --checkpoint lfemi=ckpt-lfemi-s0/final --checkpoint lfemi=ckpt-lfemi-s1/final ...

Builds long videos from the synthetic benchmark's easy tier
(``pipelines/sources/synthetic.py``, ``--groups`` test groups of unseen
clips): each video is ``--stories`` clips, shuffled across groups, with still
black gaps of ``--gap-min``..``--gap-max`` whole seconds before, between and
after them, so each story lies at a known span. The videos are ingested once at
the ingest job's default windows (``--segment-seconds 12 --segment-stride 4``,
or ``--ingest-flags``), and each checkpoint embeds them into its own LanceDB
table; every caption of every story is then searched (``VideoSearch``, every
window a candidate, ``k=1``). Per checkpoint, and per label as mean and
standard deviation over its checkpoints:

- ``video_R@1``: the top video is the story's;
- ``HIT@1``: that, and the centre of the answer's moment lies inside the story's span;
- ``R1@0.5``, ``R1@0.7``: that, and the moment's temporal IoU with the span is at least
  0.5 / 0.7 (QVHighlights' R1 at those thresholds).

Also the seconds ingest and each embed took, per hour of video. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import time
from collections import defaultdict
from pathlib import Path

import av
import numpy as np
import pandas as pd
from bench_data import script

from pipelines.index.search import VideoSearch
from pipelines.ingestion.output import open_ingest
from pipelines.sources.samples import bundled_minilm, write_video
from pipelines.sources.synthetic import generate

FPS = 4  # the synthetic clips' frame rate


def clip_frames(path: str) -> list[np.ndarray]:
    with av.open(path) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def build_videos(workdir: Path, groups: int, stories: int, gap_min: int, gap_max: int,
                 seed: int) -> pd.DataFrame:
    """Write the long videos under ``workdir/videos``; one row per caption: the long video's
    file name, the caption, and its story's span (s)."""
    manifest = pd.read_csv(generate(workdir / "stories", train_groups=0, test_groups=groups,
                                    seed=seed, tier="easy"))
    clips = manifest.drop_duplicates("video_id")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(clips))
    (workdir / "videos").mkdir(parents=True, exist_ok=True)
    rows = []
    for number, start in enumerate(range(0, len(order) - stories + 1, stories)):
        name = f"long{number:03d}.mp4"
        frames: list[np.ndarray] = []
        for position in order[start:start + stories]:
            clip = clips.iloc[position]
            story = clip_frames(clip["uri"])
            black = np.zeros_like(story[0])
            frames += [black] * (FPS * int(rng.integers(gap_min, gap_max + 1)))
            span = (len(frames) / FPS, (len(frames) + len(story)) / FPS)
            frames += story
            for caption in manifest[manifest["video_id"] == clip["video_id"]]["caption"]:
                rows.append({"file": name, "caption": caption, "start_s": span[0],
                             "end_s": span[1]})
        frames += [np.zeros_like(frames[0])] * (FPS * int(rng.integers(gap_min, gap_max + 1)))
        write_video(workdir / "videos" / name, frames, FPS)
    return pd.DataFrame(rows)


def iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def measure(search: VideoSearch, queries: pd.DataFrame, ids: dict[str, str],
            candidates: int) -> dict:
    """The four measures (percent) over ``queries``."""
    hits = defaultdict(list)
    for query in queries.itertuples():
        top = search.search(query.caption, k=1, candidates=candidates).iloc[0]
        right = top["video_id"] == ids[query.file]
        span = (query.start_s, query.end_s)
        moment = (float(top["start_s"]), float(top["end_s"]))
        overlap = iou(moment, span)
        hits["video_R@1"].append(right)
        hits["HIT@1"].append(right and span[0] <= sum(moment) / 2 < span[1])
        hits["R1@0.5"].append(right and overlap >= 0.5)
        hits["R1@0.7"].append(right and overlap >= 0.7)
        hits["IoU"].append(overlap if right else 0.0)
    return {name: 100.0 * float(np.mean(values)) for name, values in hits.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="videos, ingest output and tables")
    parser.add_argument("--checkpoint", action="append", required=True,
                        help="LABEL=PATH of a trained checkpoint (repeat; one label per model)")
    parser.add_argument("--groups", type=int, default=33, help="test groups of stories")
    parser.add_argument("--stories", type=int, default=3, help="stories per long video")
    parser.add_argument("--gap-min", type=int, default=4, help="shortest still gap (s)")
    parser.add_argument("--gap-max", type=int, default=12, help="longest still gap (s)")
    parser.add_argument("--seed", type=int, default=7, help="stories and gaps")
    parser.add_argument("--ingest-flags", default="", help="extra flags for vtr ingest")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    queries_file = workdir / "queries.csv"
    if not queries_file.exists():
        build_videos(workdir, args.groups, args.stories, args.gap_min, args.gap_max,
                     args.seed).to_csv(queries_file, index=False)
    queries = pd.read_csv(queries_file)
    data = workdir / "ingest"
    started = time.perf_counter()
    if not (data / "_ingest_log").exists():
        script(["pipelines/ingest.py", "--videos", str(workdir / "videos"), "--data", str(data),
                "--frame-size", "64", "--keyword-model", str(bundled_minilm()),
                *shlex.split(args.ingest_flags)])
    ingest_s = time.perf_counter() - started
    videos = open_ingest(str(data)).dataset("videos").to_table(
        columns=["video_id", "uri", "duration_s"]).to_pandas()
    ids = {Path(uri).name: vid for vid, uri in zip(videos["video_id"], videos["uri"],
                                                   strict=True)}
    hours = videos.drop_duplicates("video_id")["duration_s"].sum() / 3600
    runs = []
    for number, item in enumerate(args.checkpoint):
        label, path = item.split("=", 1)
        table = f"run{number}"
        started = time.perf_counter()
        script(["pipelines/embed.py", "--data", str(data), "--checkpoint", path,
                "--db", str(workdir / "db"), "--table", table, "--overwrite"])
        embed_s = time.perf_counter() - started
        search = VideoSearch(str(workdir / "db"), table, path)
        figures = measure(search, queries, ids, candidates=len(videos))
        runs.append({"label": label, "checkpoint": path, **figures,
                     "embed_s_per_hour": embed_s / hours})
    by_label = defaultdict(list)
    for run in runs:
        by_label[run["label"]].append(run)
    summary = {
        label: {name: {"mean": statistics.mean(r[name] for r in rows),
                       "std": statistics.stdev(r[name] for r in rows) if len(rows) > 1 else 0.0}
                for name in ("video_R@1", "HIT@1", "R1@0.5", "R1@0.7", "IoU")}
        for label, rows in by_label.items()}
    print(json.dumps({"videos": int(videos["video_id"].nunique()), "windows": len(videos),
                      "queries": len(queries), "hours": hours,
                      "ingest_s_per_hour": ingest_s / hours if ingest_s > 1 else None,
                      "summary": summary, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
