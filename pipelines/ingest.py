"""Ingest job: videos -> uniformly sampled JPEG frames and caption keywords, in Parquet.

    python pipelines/ingest.py --manifest manifest.csv --output out/
    ray job submit --working-dir . -- \
        python pipelines/ingest.py --videos s3://bucket/clips/ --output s3://bucket/ingest/

Ray Data streams the videos through a pool of decode actors (each with a
crash-isolated decoder process) and the captions through a pool of KeyBERT
actors, writing ``videos/``, ``captions/`` and ``errors/`` under a staging
folder that is published only when every part is written.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from pipelines import schemas, storage
from pipelines.job_config import flag
from pipelines.keywords import KeywordModelError, KeywordOptions, load_sentence_model
from pipelines.manifest import Manifest, ManifestError, manifest_from_folder, read_manifest
from pipelines.msrvtt import read_msrvtt
from pipelines.ray_job import start_job
from pipelines.video_decode import SamplingOptions

PARTS = ("videos", "captions", "errors")


@dataclass
class IngestConfig:
    """Every setting of the ingest job; each field is a CLI flag of the same name."""

    output: str = field(metadata=flag(
        "output folder or s3:// prefix for videos/, captions/, errors/"))
    manifest: str | None = field(default=None, metadata=flag(
        "manifest file (.csv, .jsonl, .parquet) with video_id, uri, caption[, split]; "
        "with --manifest-format msrvtt, the MSR-VTT annotation folder"))
    videos: str | None = field(default=None, metadata=flag(
        "instead of a manifest: a folder or s3:// prefix of videos to ingest without captions"))
    manifest_format: str = field(default="auto", metadata=flag(
        "'auto' (by file extension) or 'msrvtt' (MSRVTT_data.json + 1k-A split CSVs)",
        choices=("auto", "msrvtt")))
    video_root: str | None = field(default=None, metadata=flag(
        "msrvtt only: folder of <video_id>.mp4 files (default: MANIFEST/videos/all)"))
    overwrite: bool = field(default=False, metadata=flag("replace an existing output"))
    fps: float = field(default=1.0, metadata=flag("frames sampled per second of video"))
    max_frames: int = field(default=12, metadata=flag(
        "cap on frames per video; longer videos are subsampled uniformly"))
    frame_size: int = field(default=224, metadata=flag("short side of stored frames, pixels"))
    jpeg_quality: int = field(default=90, metadata=flag("JPEG quality of stored frames (1-95)"))
    decode_threads: int = field(default=1, metadata=flag(
        "decoder threads per decode actor (0: decord's choice)"))
    decode_timeout_s: float = field(default=600.0, metadata=flag(
        "seconds one video may take to decode before its decoder is killed and it is skipped"))
    decode_concurrency: int | None = field(default=None, metadata=flag(
        "number of decode actors (default: one per CPU of the cluster)"))
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
    keyword_stop_words: str = field(default="english", metadata=flag(
        "stop-word list passed to KeyBERT's vectoriser, or 'none'"))
    keyword_languages: str = field(default="en", metadata=flag(
        "comma-separated language codes for the simplemma lemmatiser, e.g. 'en' or 'de,en'"))
    keyword_concurrency: int = field(default=1, metadata=flag("number of KeyBERT actors"))
    keyword_batch_size: int = field(default=64, metadata=flag("captions per KeyBERT batch"))
    max_error_rate: float = field(default=1.0, metadata=flag(
        "exit non-zero when more than this fraction of videos fail (outputs are still written)"))
    ray_address: str | None = field(default=None, metadata=flag(
        "Ray cluster to join (default: the one the job was submitted to, else a local one)"))

    def __post_init__(self) -> None:
        self.output = storage.absolute(self.output)
        if (self.manifest is None) == (self.videos is None):
            raise ValueError("give exactly one of --manifest or --videos")
        if self.fps <= 0 or self.max_frames < 1 or self.frame_size < 8:
            raise ValueError("--fps must be > 0, --max-frames >= 1 and --frame-size >= 8")
        if not 0.0 <= self.max_error_rate <= 1.0:
            raise ValueError("--max-error-rate must be between 0 and 1")

    @property
    def sampling(self) -> SamplingOptions:
        return SamplingOptions(self.fps, self.max_frames, self.frame_size, self.jpeg_quality,
                               self.decode_threads)

    @property
    def keywords(self) -> KeywordOptions:
        stop = None if self.keyword_stop_words.lower() == "none" else self.keyword_stop_words
        return KeywordOptions(
            model=self.keyword_model, num_keywords=self.num_keywords,
            max_ngram=self.keyword_ngram, use_mmr=self.keyword_mmr,
            diversity=self.keyword_diversity, stop_words=stop,
            languages=tuple(x.strip() for x in self.keyword_languages.split(",") if x.strip()),
        )


@dataclass
class IngestSummary:
    """What one run did; the job prints it as its last line."""

    videos_ok: int
    videos_failed: int
    captions: int
    frames: int
    wall_s: float

    def __str__(self) -> str:
        total = self.videos_ok + self.videos_failed
        return (
            f"ingest done: {self.videos_ok} videos ok, {self.videos_failed} failed, "
            f"{self.captions} captions, {self.frames} frames written in {self.wall_s:.1f} s "
            f"({total / max(self.wall_s, 1e-9):.2f} videos/s)"
        )


def load_inputs(config: IngestConfig) -> Manifest:
    """The validated manifest the config points at (raises ManifestError)."""
    if config.videos is not None:
        return manifest_from_folder(config.videos)
    if config.manifest_format == "msrvtt":
        return read_msrvtt(config.manifest, config.video_root)
    return read_manifest(config.manifest)


def _error_log_actor():
    import ray

    @ray.remote(num_cpus=0)
    class ErrorLog:
        """Collects errors/ rows from every decode actor; one row per video, first wins."""

        def __init__(self) -> None:
            self.rows: dict[str, dict] = {}

        def record(self, rows: list[dict]) -> None:
            for row in rows:
                self.rows.setdefault(row["video_id"], row)

        def all(self) -> list[dict]:
            return list(self.rows.values())

    return ErrorLog.remote()


def _write_table(uri: str, table: pa.Table) -> None:
    """Write one Parquet file into part folder ``uri`` (used for small or empty parts)."""
    fs, path = storage.arrow_filesystem(uri)
    fs.create_dir(path, recursive=True)
    pq.write_table(table, f"{path}/part-0.parquet", filesystem=fs)


def _ensure_part(uri: str, schema: pa.Schema) -> pa.Table | None:
    """Give an empty part a schema-only file, so readers see its columns."""
    fs, path = storage.filesystem(uri)
    if fs.exists(path) and fs.find(path):
        return None
    _write_table(uri, schema.empty_table())
    return schema.empty_table()


def _count_frames(uri: str) -> tuple[int, int]:
    fs, path = storage.arrow_filesystem(uri)
    table = pads.dataset(path, filesystem=fs, format="parquet").to_table(columns=["num_frames"])
    return table.num_rows, int(pc.sum(table.column("num_frames")).as_py() or 0)


def run_ingest(config: IngestConfig) -> IngestSummary:
    """Run the job on the connected Ray cluster and publish its outputs."""
    import ray

    from pipelines.ingest_stages import CaptionKeywords, VideoSampler

    start = time.perf_counter()
    manifest = load_inputs(config)
    if manifest.captions:
        load_sentence_model(config.keyword_model)  # fail fast, before any decoding
    staged = storage.StagedOutput(config.output, PARTS, config.overwrite)
    try:
        errors = _error_log_actor()
        decoders = config.decode_concurrency or max(1, int(ray.cluster_resources().get("CPU", 1)))
        videos = ray.data.from_items(
            manifest.videos, override_num_blocks=max(1, math.ceil(len(manifest.videos) / 8))
        ).map_batches(
            VideoSampler,
            fn_constructor_kwargs={
                "options": config.sampling,
                "on_error": lambda rows: ray.get(errors.record.remote(rows)),
                "timeout_s": config.decode_timeout_s,
            },
            batch_size=1,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=decoders),
            num_cpus=1,
        )
        videos_uri = staged.part("videos")
        fs, path = storage.arrow_filesystem(videos_uri)
        videos.write_parquet(path, filesystem=fs)
        _ensure_part(videos_uri, schemas.VIDEOS)
        error_rows = ray.get(errors.all.remote())
        _write_table(staged.part("errors"), pa.Table.from_pylist(error_rows, schema=schemas.ERRORS))

        failed = {row["video_id"] for row in error_rows}
        captions = [c for c in manifest.captions if c["video_id"] not in failed]
        captions_uri = staged.part("captions")
        if captions:
            fs, path = storage.arrow_filesystem(captions_uri)
            ray.data.from_items(captions).map_batches(
                CaptionKeywords,
                fn_constructor_kwargs={"options": config.keywords},
                batch_size=config.keyword_batch_size,
                batch_format="pyarrow",
                compute=ray.data.ActorPoolStrategy(size=config.keyword_concurrency),
                num_cpus=1,
            ).write_parquet(path, filesystem=fs)
        _ensure_part(captions_uri, schemas.CAPTIONS)
        num_videos, num_frames = _count_frames(videos_uri)
        # later jobs (the query side's keywords) read the settings back from _SUCCESS
        staged.publish(json.dumps(
            {"keyword_options": dataclasses.asdict(config.keywords)}).encode())
    except BaseException:
        staged.discard_staging()
        raise
    return IngestSummary(num_videos, len(failed), len(captions), num_frames,
                         time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    config = start_job(IngestConfig, __doc__.splitlines()[0], argv)
    try:
        summary = run_ingest(config)
    except (ManifestError, KeywordModelError, FileExistsError) as exc:
        print(f"ingest: error: {exc}", file=sys.stderr)
        return 2
    print(summary, flush=True)
    total = summary.videos_ok + summary.videos_failed
    rate = summary.videos_failed / total if total else 0.0
    if rate > config.max_error_rate:
        print(
            f"ingest: error: {summary.videos_failed} of {total} videos failed ({rate:.1%}), "
            f"more than --max-error-rate {config.max_error_rate:.1%}; see {config.output}/errors",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
