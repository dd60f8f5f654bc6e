"""What an ingest run must do: the source compared with the rows already committed.

Pure functions over plain rows, so the rules are unit-tested without Ray or
storage. A video is identified by ``video_id`` and compared by its uri and
fingerprint (size plus mtime or ETag): new and changed videos are decoded,
vanished ones deleted, the rest left alone. Captions are compared per video,
so an edited caption gets new keywords without its video being decoded again.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import pyarrow as pa

from pipelines.core.storage import UNREADABLE, Fingerprint


@dataclass
class VideoPlan:
    """The videos of one run, by what happens to them."""

    added: list[dict] = field(default_factory=list)  # {"video_id", "uri"}: not committed yet
    changed: list[dict] = field(default_factory=list)  # committed, but another file now
    retried: list[dict] = field(default_factory=list)  # failed in the last run, tried again
    deleted: list[str] = field(default_factory=list)  # committed, gone from the source
    unchanged: list[str] = field(default_factory=list)

    @property
    def to_decode(self) -> list[dict]:
        return [*self.added, *self.changed, *self.retried]


def _committed_fingerprints(committed: pa.Table) -> dict[str, tuple[str, Fingerprint]]:
    columns = [committed.column(c).to_pylist()
               for c in ("video_id", "uri", "size_bytes", "mtime", "etag")]
    return {vid: (uri, Fingerprint(size, mtime, etag))
            for vid, uri, size, mtime, etag in zip(*columns, strict=True)}


def plan_videos(source: list[dict], committed: pa.Table, failed_before: set[str]) -> VideoPlan:
    """Sort the source's videos against the committed ``videos/`` rows.

    ``source`` rows hold ``video_id``, ``uri`` and ``fingerprint`` (None when
    there is no such file: it is tried, and fails with its reason; ``UNREADABLE``
    when its metadata call failed: a committed video is then kept as it is);
    ``committed`` has the ``videos/`` columns ``video_id, uri, size_bytes,
    mtime, etag``; ``failed_before`` are the ids of the last run's errors.
    """
    known = _committed_fingerprints(committed)
    plan = VideoPlan()
    for row in source:
        video = {"video_id": row["video_id"], "uri": row["uri"]}
        if row["fingerprint"] is UNREADABLE and row["video_id"] in known:
            plan.unchanged.append(row["video_id"])  # a failed metadata call is no change
        elif row["video_id"] not in known:
            (plan.retried if row["video_id"] in failed_before else plan.added).append(video)
        elif (known[row["video_id"]][0] != row["uri"]
              or not known[row["video_id"]][1].matches(row["fingerprint"])):
            plan.changed.append(video)
        else:
            plan.unchanged.append(row["video_id"])
    wanted = {row["video_id"] for row in source}
    plan.deleted = sorted(set(known) - wanted)
    return plan


@dataclass
class CaptionPlan:
    """The caption rows to replace: every caption of the videos in ``rewrite``."""

    rewrite: set[str] = field(default_factory=set)  # videos whose captions are replaced
    known: list[dict] = field(default_factory=list)  # new rows whose keywords are known
    to_extract: list[dict] = field(default_factory=list)  # new rows that need keywords


def _group(rows: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        grouped[row["video_id"]].append(row)
    return grouped


def _texts(rows: list[dict]) -> list[tuple]:
    return sorted(((r["caption"], r["split"], r.get("start_s"), r.get("end_s")) for r in rows),
                  key=str)


def plan_captions(desired: list[dict] | None, current: list[dict],
                  videos: set[str]) -> CaptionPlan:
    """Bring the committed captions (``current``) to ``desired`` for the ``videos`` kept.

    ``desired`` is the manifest's captions (``video_id``, ``caption``,
    ``split``, optional ``start_s`` and ``end_s``), or None for a source without
    captions (a folder), which keeps the committed captions of the videos that
    remain. A caption text that a video already has keeps its keywords; only new
    texts are sent to KeyBERT.
    """
    have = _group(current)
    want = _group([r for r in (current if desired is None else desired)
                   if r["video_id"] in videos])
    plan = CaptionPlan()
    for video_id in set(have) | set(want):
        if _texts(have.get(video_id, [])) == _texts(want.get(video_id, [])):
            continue
        plan.rewrite.add(video_id)
        keywords = {r["caption"]: r["keywords"] for r in have.get(video_id, [])}
        for row in want.get(video_id, []):
            new = {"video_id": video_id, "caption": row["caption"], "split": row["split"],
                   "start_s": row.get("start_s"), "end_s": row.get("end_s")}
            if row["caption"] in keywords:
                plan.known.append({**new, "keywords": keywords[row["caption"]]})
            else:
                plan.to_extract.append(new)
    return plan
