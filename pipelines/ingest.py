r"""Ingest job: videos -> uniformly sampled JPEG frames and caption keywords, in Delta Lake.

    vtr ingest --manifest manifest.csv --data out/
    vtr ingest --videos s3://bucket/clips/ --data s3://bucket/ingest/ --update
    ray job submit --working-dir . -- \
        python pipelines/ingest.py --videos s3://bucket/clips/ --data s3://bucket/ingest/

Ray Data streams the videos to decode through a pool of decode actors (each
with a crash-isolated decoder process) and new captions through a pool of
KeyBERT actors. The output is three Delta tables plus a log of committed runs
(``pipelines/ingestion/output.py``): ``--update`` compares the source with the
committed rows and decodes only new and changed videos, deletes vanished ones,
re-extracts keywords only for edited captions, and commits once.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.core import storage
from pipelines.core.failpoints import failpoint
from pipelines.core.job_config import flag
from pipelines.core.keywords import (
    STOP_WORD_LISTS,
    KeywordModelError,
    KeywordOptions,
    load_sentence_model,
)
from pipelines.core.ray_job import start_job
from pipelines.ingestion import schemas
from pipelines.ingestion.change_plan import plan_captions, plan_videos
from pipelines.ingestion.manifest import (
    Manifest,
    ManifestError,
    manifest_from_folder,
    read_manifest,
)
from pipelines.ingestion.output import (
    ERROR_KEY_COLUMNS,
    FINGERPRINT_COLUMNS,
    PARTS,
    IngestFormatError,
    IngestStore,
    IngestVersion,
    error_keys,
)
from pipelines.ingestion.pools import decode_videos, extract_keywords
from pipelines.ingestion.video_decode import SamplingOptions
from pipelines.sources.msrvtt import read_msrvtt

log = logging.getLogger("ingest")


@dataclass
class IngestConfig:
    """Every setting of the ingest job; each field is a CLI flag of the same name."""

    data: str = field(metadata=flag(
        "the ingest output: a folder or s3:// prefix for videos/, captions/, errors/ (what "
        "train, evaluate and embed read as --data)", aliases=("--output",)))
    manifest: str | None = field(default=None, metadata=flag(
        "manifest file (.csv, .jsonl, .parquet) with video_id, uri, caption[, split]; "
        "with --manifest-format msrvtt, the MSR-VTT annotation folder; exactly one of "
        "--manifest and --videos is required", one_of="source"))
    videos: str | None = field(default=None, metadata=flag(
        "instead of a manifest: a folder or s3:// prefix of videos to ingest without captions",
        one_of="source"))
    manifest_format: str = field(default="auto", metadata=flag(
        "'auto' (by file extension) or 'msrvtt' (MSRVTT_data.json + 1k-A split CSVs)",
        choices=("auto", "msrvtt")))
    video_root: str | None = field(default=None, metadata=flag(
        "msrvtt only: folder of <video_id>.mp4 files (default: MANIFEST/videos/all)"))
    update: bool = field(default=False, metadata=flag(
        "bring an existing output up to date with the source: decode only new and changed "
        "videos, delete vanished ones, retry failed ones, commit once (builds the output "
        "when there is none)"))
    overwrite: bool = field(default=False, metadata=flag(
        "rebuild an existing output from scratch (readers keep the old run until the new "
        "one commits)"))
    allow_empty: bool = field(default=False, metadata=flag(
        "with --update: accept a source that lists no videos and delete every video "
        "(otherwise refused, since an empty listing is more often a wrong path)"))
    fps: float = field(default=1.0, metadata=flag("frames sampled per second of video"))
    max_frames: int = field(default=12, metadata=flag(
        "cap on frames per window (a clip no longer than --segment-seconds is one window); "
        "a window's frames beyond it are thinned evenly"))
    segment_seconds: float = field(default=12.0, metadata=flag(
        "a video longer than this becomes overlapping windows of this many seconds, one "
        "row each (12: the 12 frames of --max-frames at 1 fps, the frames a model sees; "
        "0: every video is one row, thinned to --max-frames)"))
    segment_stride: float = field(default=4.0, metadata=flag(
        "seconds between window starts: a moment up to --segment-seconds minus this "
        "long is whole in at least one window (8 s at the defaults); each frame is "
        "stored in up to --segment-seconds / --segment-stride windows"))
    frame_size: int = field(default=224, metadata=flag("short side of stored frames, pixels"))
    jpeg_quality: int = field(default=90, metadata=flag("JPEG quality of stored frames (1-95)"))
    decode_threads: int = field(default=1, metadata=flag(
        "decoder threads per decode actor (0: decord's choice)"))
    decode_timeout_s: float = field(default=600.0, metadata=flag(
        "seconds one video may take to decode before its decoder is killed and it is skipped"))
    decode_workers: int | None = field(default=None, metadata=flag(
        "most decode actors (default: no cap; the pool starts with one per CPU of the "
        "cluster and grows onto nodes that join while videos wait)",
        aliases=("--decode-concurrency",)))
    keyword_model: str = field(default=KeywordOptions.model, metadata=flag(
        "sentence-transformers model for KeyBERT: a hub name or a local folder"))
    num_keywords: int = field(default=KeywordOptions.num_keywords, metadata=flag(
        "keywords per caption (K)"))
    keyword_ngram: int = field(default=KeywordOptions.max_ngram, metadata=flag(
        "longest keyword, in words (L)"))
    keyword_mmr: bool = field(default=True, metadata=flag(
        "diversify keywords with Maximal Marginal Relevance"))
    keyword_diversity: float = field(default=KeywordOptions.diversity, metadata=flag(
        "MMR diversity, 0 (similar) to 1 (diverse)"))
    keyword_stop_words: str = field(default=KeywordOptions.stop_words, metadata=flag(
        "stop words KeyBERT never picks: english-motion (scikit-learn's English list "
        "without direction words such as up, down, behind, which captions of motion "
        "need), english (scikit-learn's whole list) or none",
        choices=STOP_WORD_LISTS))
    keyword_languages: str = field(default="en", metadata=flag(
        "comma-separated language codes for the simplemma lemmatiser, e.g. 'en' or 'de,en'"))
    keyword_workers: int | None = field(default=None, metadata=flag(
        "most KeyBERT actors (default: no cap; the pool starts with one and grows while "
        "captions wait)", aliases=("--keyword-concurrency",)))
    keyword_batch_size: int = field(default=64, metadata=flag("captions per KeyBERT batch"))
    local_max_videos: int = field(default=64, metadata=flag(
        "decode (in refresh.py also embed) in the driver when at most this many videos "
        "need it: starting a pool of actors costs seconds, more than a few dozen videos "
        "take; 0: always on Ray"))
    max_error_rate: float = field(default=1.0, metadata=flag(
        "exit non-zero when more than this fraction of videos fail (outputs are still written)"))
    ray_address: str | None = field(default=None, metadata=flag(
        "Ray cluster to join (default: the one the job was submitted to, else a local one)"))

    def __post_init__(self) -> None:
        self.data = storage.absolute(self.data)
        if (self.manifest is None) == (self.videos is None):
            raise ValueError("give exactly one of --manifest or --videos")
        if self.update and self.overwrite:
            raise ValueError("give at most one of --update and --overwrite")
        if self.fps <= 0 or self.max_frames < 1 or self.frame_size < 8:
            raise ValueError("--fps must be > 0, --max-frames >= 1 and --frame-size >= 8")
        if self.segment_seconds < 0 or (self.segment_seconds
                                        and not 0 < self.segment_stride <= self.segment_seconds):
            raise ValueError("--segment-seconds must be >= 0, and --segment-stride between 0 "
                             "(exclusive) and --segment-seconds")
        if not 0.0 <= self.max_error_rate <= 1.0:
            raise ValueError("--max-error-rate must be between 0 and 1")

    @property
    def sampling(self) -> SamplingOptions:
        return SamplingOptions(self.fps, self.max_frames, self.frame_size, self.jpeg_quality,
                               self.decode_threads, self.segment_seconds,
                               self.segment_stride)

    @property
    def keywords(self) -> KeywordOptions:
        stop = None if self.keyword_stop_words.lower() == "none" else self.keyword_stop_words
        return KeywordOptions(
            model=self.keyword_model, num_keywords=self.num_keywords,
            max_ngram=self.keyword_ngram, use_mmr=self.keyword_mmr,
            diversity=self.keyword_diversity, stop_words=stop,
            languages=tuple(x.strip() for x in self.keyword_languages.split(",") if x.strip()),
        )

    @property
    def output_settings(self) -> dict:
        """The settings that shape the output's rows (recorded with each run; ``--update``
        must keep them, or one output would mix two samplings)."""
        sampling = dataclasses.asdict(self.sampling)
        sampling.pop("decode_threads")  # how fast, not what
        return {"sampling": sampling, "keyword_options": self.keywords.to_dict()}


@dataclass
class IngestSummary:
    """What one run did; the job prints it as its last line."""

    version: int | None  # the run committed (None: nothing changed, nothing committed)
    added: int
    changed: int
    retried: int
    deleted: int
    unchanged: int
    failed: int
    failed_again: int  # of the retried videos
    captions: int  # caption rows written
    frames: int  # frames of the videos decoded
    wall_s: float

    @property
    def attempted(self) -> int:
        return self.added + self.changed + self.retried

    def __str__(self) -> str:
        committed = (f"version {self.version} committed" if self.version is not None
                     else "nothing changed, nothing committed")
        return (
            f"ingest done: {committed}: {self.added} added, {self.changed} changed, "
            f"{self.retried} retried, {self.deleted} deleted, {self.unchanged} unchanged; "
            f"{self.attempted - self.failed} decoded ok, {self.failed} failed, "
            f"{self.captions} captions and {self.frames} frames written in {self.wall_s:.1f} s "
            f"({self.attempted / max(self.wall_s, 1e-9):.2f} videos decoded/s)"
        )


def load_inputs(config: IngestConfig) -> Manifest:
    """The validated manifest the config points at (raises ManifestError)."""
    if config.videos is not None:
        return manifest_from_folder(config.videos)
    if config.manifest_format == "msrvtt":
        return read_msrvtt(config.manifest, config.video_root)
    return read_manifest(config.manifest)


def _check_output(store: IngestStore, config: IngestConfig) -> IngestVersion | None:
    """The output's newest committed run (None: none yet), after refusing what the flags
    do not allow: touching a committed output without --update or --overwrite, updating
    a format-1 output, or updating with other settings than the output was built with."""
    try:
        latest = store.latest()
    except IngestFormatError:
        if not config.overwrite:
            raise
        store.remove_legacy()
        return None
    if latest is None or config.overwrite:
        return latest
    if not config.update:
        raise FileExistsError(
            f"output {config.data} already holds ingest version {latest.version}; pass "
            "--update to bring it up to date with the source, --overwrite to rebuild it, "
            "or choose another --data")
    if "segment_seconds" not in latest.settings.get("sampling", {}):
        raise IngestFormatError(
            f"output {config.data} was written before videos had windows (ingest version "
            f"{latest.version}); rebuild it with --overwrite")
    if latest.settings != config.output_settings:
        raise IngestFormatError(
            f"output {config.data} was built with other sampling or keyword settings "
            f"({latest.settings}) than these ({config.output_settings}); --update keeps "
            "an output's settings: pass the old ones, or --overwrite to rebuild with the new")
    return latest


def _source_rows(config: IngestConfig, manifest: Manifest, committed_videos: int) -> list[dict]:
    """The source's videos with their fingerprints; refuses a listing that is empty."""
    if not manifest.videos and not (config.update and config.allow_empty):
        where = config.videos or config.manifest
        if committed_videos:
            raise ManifestError(
                f"{where} lists no videos, but {config.data} holds {committed_videos}: "
                "check the path and credentials, or pass --allow-empty to delete them all")
        raise ManifestError(f"{where}: no video files ({', '.join(storage.VIDEO_EXTENSIONS)})")
    fingerprints = manifest.fingerprints
    if fingerprints is None:
        fingerprints = storage.fingerprints([v["uri"] for v in manifest.videos])
    return [{**v, "fingerprint": fingerprints.get(v["uri"])} for v in manifest.videos]


def spans_inside(captions: list[dict], store: IngestStore, videos: set[str],
                 config: IngestConfig) -> list[dict]:
    """The manifest's ``captions`` less those whose time span ends after their video
    does (by more than a sampling period), each refused with a warning that names its
    manifest row: a span outside the video would train on frames it does not have."""
    spanned = {c["video_id"] for c in captions if c.get("end_s") is not None} & videos
    if not spanned:
        return captions
    rows = store.delta("videos").to_pyarrow_dataset().to_table(
        columns=["video_id", "duration_s"], filter=pc.field("video_id").isin(sorted(spanned)))
    duration = dict(zip(rows.column("video_id").to_pylist(),
                        rows.column("duration_s").to_pylist(), strict=True))
    kept = []
    for caption in captions:
        length = duration.get(caption["video_id"])
        if caption.get("end_s") is not None and length is not None \
                and caption["end_s"] > length + 1 / config.fps:
            log.warning("manifest row %d: the span %g-%g s of video %s's caption ends after the "
                        "video (%.2f s); caption refused", caption["row"], caption["start_s"],
                        caption["end_s"], caption["video_id"], length)
            continue
        kept.append(caption)
    return kept


def run_ingest(config: IngestConfig) -> IngestSummary:
    """Run the job on the connected Ray cluster and commit its outputs.

    Each part gets at most one Delta commit, then the run's log file commits
    them together. Without ``--overwrite`` the run starts from each table's
    latest rows, so a run killed after some commits loses none of that work.
    """
    start = time.perf_counter()
    store = IngestStore(config.data)
    latest = _check_output(store, config)
    manifest = load_inputs(config)
    if manifest.captions:
        load_sentence_model(config.keyword_model)  # fail fast, before any decoding
    rebuild = config.overwrite
    version = (latest.version if latest else 0) + 1
    # each part's latest version, committed by a run or left by a killed one: both are
    # built on, so a killed run's work is kept (None: the part does not exist yet)
    tables = {part: store.delta(part) for part in PARTS}

    def state(part: str, columns: list[str], schema: pa.Schema) -> pa.Table:
        if rebuild or tables[part] is None:
            return schema.empty_table().select(columns)
        return tables[part].to_pyarrow_dataset().to_table(columns=columns)

    def must_write(part: str) -> bool:
        return rebuild or tables[part] is None

    committed = state("videos", FINGERPRINT_COLUMNS, schemas.VIDEOS)
    before = state("errors", ERROR_KEY_COLUMNS, schemas.ERRORS).to_pylist()
    plan = plan_videos(_source_rows(config, manifest, committed.num_rows), committed,
                       {row["video_id"] for row in before})
    written: set[str] = set()
    wrote: set[str] = set()  # the parts this run committed
    frames = 0
    error_rows: list[dict] = []

    def decoded() -> Iterator[pa.RecordBatch]:
        nonlocal frames
        for batch in (decode_videos(plan.to_decode, config.sampling, config.decode_timeout_s,
                                    version, error_rows,
                                    local_max_videos=config.local_max_videos,
                                    concurrency=config.decode_workers)
                      if plan.to_decode else []):
            written.update(batch.column("video_id").to_pylist())
            frames += sum(batch.column("num_frames").to_pylist())
            yield batch
            failpoint("ingest.decode")  # some rows with the Delta writer, none committed

    rows = decoded()
    first = next(rows, None)  # decodes until the first good video, if there is one
    if first is not None or plan.changed or plan.deleted or must_write("videos"):
        replace = {v["video_id"] for v in plan.to_decode} | set(plan.deleted)
        store.write_part("videos", pa.RecordBatchReader.from_batches(
            schemas.VIDEOS, itertools.chain([first] if first else [], rows)),
            must_write("videos"), replace)
        wrote.add("videos")
    failpoint("ingest.captions")  # videos/ committed, captions/ and errors/ not
    current = state("captions", ["video_id", "caption", "keywords", "split", "start_s",
                                 "end_s"], schemas.CAPTIONS)
    kept = set(plan.unchanged) | written
    desired = (spans_inside(manifest.captions, store, kept, config)
               if manifest.captions else None)  # None: a folder, no captions to compare
    captions = plan_captions(desired, current.to_pylist(), kept)
    caption_rows = 0
    if captions.rewrite or must_write("captions"):
        new = pa.concat_tables([pa.Table.from_pylist(captions.known, schema=schemas.CAPTIONS),
                                extract_keywords(captions.to_extract, config.keywords,
                                                 config.keyword_batch_size,
                                                 config.keyword_workers)])
        store.write_part("captions", new, must_write("captions"), captions.rewrite)
        wrote.add("captions")
        caption_rows = new.num_rows
    if error_keys(error_rows) != error_keys(before) or must_write("errors"):
        # the errors of this run only: every earlier failure was tried again
        store.write_part("errors", pa.Table.from_pylist(error_rows, schema=schemas.ERRORS),
                    whole=True, replace=set())
        wrote.add("errors")
    retried = {v["video_id"] for v in plan.retried}
    changes = {"added": len(plan.added), "changed": len(plan.changed),
               "retried": len(plan.retried), "deleted": len(plan.deleted),
               "unchanged": len(plan.unchanged), "failed": len(error_rows),
               "failed_again": sum(row["video_id"] in retried for row in error_rows),
               "captions_written": caption_rows}
    versions = {p: (store.delta(p) if p in wrote else tables[p]).version() for p in PARTS}
    # a killed run may have committed tables without its log file: commit them now
    committed_now = bool(wrote) or latest is None or versions != latest.tables
    if committed_now:
        failpoint("ingest.commit")  # every table committed, the run not yet
        store.commit(IngestVersion(version, versions, config.output_settings, changes))
    return IngestSummary(version if committed_now else None, *changes.values(), frames,
                         time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    config = start_job(IngestConfig, __doc__, argv)
    try:
        summary = run_ingest(config)
    except (ManifestError, KeywordModelError, FileExistsError, IngestFormatError) as exc:
        print(f"ingest: error: {exc}", file=sys.stderr)
        return 2
    print(summary, flush=True)
    return exit_code(summary, config)


def exit_code(summary: IngestSummary, config: IngestConfig) -> int:
    """1 when every new or changed video failed, or more than ``--max-error-rate`` of the
    videos tried; else 0. (The good videos are committed either way. A file that fails
    again unchanged is retried every run but fails no run on its own, or one broken file
    would fail every nightly refresh.)
    """
    total = summary.attempted
    rate = summary.failed / total if total else 0.0
    fresh = summary.added + summary.changed
    if (fresh and summary.failed - summary.failed_again == fresh) or (
            rate > config.max_error_rate):
        print(
            f"ingest: error: {summary.failed} of the {total} videos tried failed ({rate:.1%}, "
            f"--max-error-rate {config.max_error_rate:.1%}); see {config.data}/errors",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
