"""MSR-VTT as distributed, turned into an ingest manifest (the 1k-A split).

Expected files, as in the CLIP4Clip release of the annotations::

    MSRVTT_DIR/MSRVTT_data.json          {"videos": [...], "sentences": [{"video_id", "caption"}]}
    MSRVTT_DIR/MSRVTT_train.9k.csv       column video_id: the 9k training videos
    MSRVTT_DIR/MSRVTT_JSFUSION_test.csv  columns video_id, sentence: 1k test videos, one caption

Training videos get all their captions (split ``train``); each test video gets
its single JSFUSION caption (split ``test``), as the papers evaluate. Videos in
neither list are left out. Each video is at ``VIDEO_ROOT/<video_id>.mp4``.
"""

from __future__ import annotations

import io
import json

import pandas as pd

from pipelines.core import storage
from pipelines.ingestion.manifest import Manifest, ManifestError, validate

DATA_JSON = "MSRVTT_data.json"
TRAIN_CSV = "MSRVTT_train.9k.csv"
TEST_CSV = "MSRVTT_JSFUSION_test.csv"


def _read(root: str, name: str) -> bytes:
    fs, path = storage.filesystem(storage.join(root, name))
    if not fs.exists(path):
        raise ManifestError(f"MSR-VTT folder {root}: {name} not found")
    return fs.cat_file(path)


def read_msrvtt(root: str, video_root: str | None = None) -> Manifest:
    """The 1k-A manifest of the MSR-VTT annotations under ``root``."""
    video_root = video_root or storage.join(root, "videos", "all")
    data = json.loads(_read(root, DATA_JSON))
    train_ids = pd.read_csv(io.BytesIO(_read(root, TRAIN_CSV)), dtype=str)["video_id"]
    test = pd.read_csv(io.BytesIO(_read(root, TEST_CSV)), dtype=str)
    train_set = set(train_ids)
    rows = [
        (s["video_id"], s["caption"], "train")
        for s in data["sentences"]
        if s["video_id"] in train_set
    ]
    rows += [(r.video_id, r.sentence, "test") for r in test.itertuples(index=False)]
    df = pd.DataFrame(rows, columns=["video_id", "caption", "split"])
    df["uri"] = [storage.join(video_root, f"{vid}.mp4") for vid in df["video_id"]]
    return validate(df, f"{root} (msrvtt)")
