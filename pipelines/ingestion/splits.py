"""Splits for captions whose manifest gives none: a fixed share by a hash of ``video_id``.

A manifest's ``split`` column is optional, and a row may leave it empty. Training
still needs a validation split and evaluation a test split, and the table's
``split`` column should say which videos were held out. Hashing the id (not drawing
at random, not counting rows) gives every video the same split on every machine and
in every run, and keeps it when the archive grows or other rows gain a split: a
video seen in training never moves into the test split.
"""

from __future__ import annotations

import hashlib
import logging

import pyarrow as pa

log = logging.getLogger(__name__)

#: the splits by hash, in order, with their shares of the videos
HASH_SPLITS: tuple[tuple[str, float], ...] = (("train", 0.8), ("val", 0.1), ("test", 0.1))
#: what a user reads when the hash split is used (once per ingest output and process)
HASH_SPLIT_NOTE = ("{output}: {count} caption(s) have no split in the manifest; each of their "
                   "videos' split is drawn from a hash of its video_id, {shares} (give the "
                   "manifest's split column a value to choose)")
_noted: set[str] = set()


def hash_split(video_id: str) -> str:
    """The split of a video without one: where a hash of its id falls among HASH_SPLITS."""
    digest = hashlib.sha256(video_id.encode("utf-8")).digest()
    point = int.from_bytes(digest[:8], "big") / 2**64
    for split, share in HASH_SPLITS:
        point -= share
        if point < 0:
            return split
    return HASH_SPLITS[-1][0]


def with_splits(captions: pa.Table, output: str) -> pa.Table:
    """``captions`` with each missing ``split`` filled by ``hash_split`` of its video
    (the splits the manifest gives are kept)."""
    splits = captions.column("split")
    if not splits.null_count:
        return captions
    if output not in _noted:
        _noted.add(output)
        shares = ", ".join(f"{share:.0%} {split}" for split, share in HASH_SPLITS)
        log.warning(HASH_SPLIT_NOTE.format(output=output, count=splits.null_count,
                                           shares=shares))
    filled = pa.array([given if given is not None else hash_split(video_id)
                       for video_id, given in zip(captions.column("video_id").to_pylist(),
                                                  splits.to_pylist(), strict=True)], pa.string())
    return captions.set_column(captions.schema.get_field_index("split"), "split", filled)
