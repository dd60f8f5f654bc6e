"""Two-stage text search over a video table: LanceDB vector search, then the full model.

    from pipelines.index.search import VideoSearch
    search = VideoSearch("s3://bucket/lancedb", "videos", "ckpt/final")
    search.search("a dog catches a frisbee on the beach", k=10, candidates=100)

The full model's score depends on the text, so a video cannot be one stored
vector (docs/method.md). Stage one asks LanceDB for the
``candidates`` nearest neighbours of the text's global feature (optionally
filtered by a SQL ``where`` on the metadata columns); stage two rescores those
candidates with the full model from their stored features and keeps the top
``k`` videos. A table's rows are windows of its videos (one for a clip, several
overlapping ones for a long video, ``pipelines.index.table``), so the rerank
groups them: each video is answered once, by its best window, and where in
that window the text matches (``vtr_models.moments``). The query text is only
ever a model input, never part of a SQL string.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
import warnings
from collections.abc import Callable, Iterable
from datetime import timedelta

import pandas as pd
import pyarrow as pa
import torch
import torch.nn.functional as F

from pipelines.core import storage
from pipelines.core.keywords import KeywordExtractor, KeywordOptions, query_keyword_model
from pipelines.core.sql import sql_equals
from pipelines.index import rerank_features
from pipelines.index.media import UnknownVideoError, VideoMedia, checked_image
from pipelines.index.table import (
    TAGS_COLUMN,
    TableState,
    keyword_options_of,
    table_state,
    vector_index_type,
    video_features,
)
from pipelines.ingestion.schemas import has_windows
from vtr_models import (
    Moment,
    TextFeatures,
    VideoFeatures,
    best_moment,
    caption_tags,
    example_evidence,
    frame_evidence,
    frame_times,
    open_model,
    trim_padding,
)

RESULT_COLUMNS = ["rank", "video_id", "uri", "score", "first_stage_score", "start_s", "end_s",
                  "moment_score"]
NPROBES = 20  # IVF partitions searched per query
# candidates x this re-ranked by exact distance, by the vector index's type (see
# VideoSearch): product quantisation needs it, 8-bit scalar quantisation does not
REFINE_FACTORS = {"IVF_PQ": 10, "HNSW_SQ": 1, "HNSW_FLAT": 1}
# an HNSW index's search breadth (ef) per candidate asked for. Lance's default, 1.5, held
# 0.958 of the exhaustive 100 candidates at a million clustered rows; 3 held 0.979 with no
# slower a vector search (docs/history.md, "HNSW's search breadth")
EF_PER_CANDIDATE = 3
# what a search answers with, fetched for the top k after the rerank rather than for every
# candidate: a string costs Lance's take about as much per row as a row's whole features
# (docs/history.md, "answer columns after the rerank")
ANSWER_COLUMNS = ["video_id", "uri"]
# what the moments need of the top k: each stored frame's time, and where its window ends
MOMENT_COLUMNS = ["timestamps_s", "window_end_s"]
# what a table written before windows holds instead (a row is a whole video)
LEGACY_MOMENT_COLUMNS = ["timestamps_s", "duration_s"]
# fetched per candidate from a table of windows, so that the rerank keeps one per video
GROUP_COLUMN = "video_id"
# each candidate's offset in the table version searched, which Lance's public `take` reads
ROW_OFFSET = "_rowoffset"
# what a ranking holds for each window kept (VideoSearch._top), and "windows" per video
RANKED_KEYS = (ROW_OFFSET, "score", "first_stage_score", "evidence", "frames", "windows")


def fetched_columns(schema) -> list[str]:
    """The stored columns stage one fetches per candidate from a table of ``schema``
    (besides ``ROW_OFFSET``, for the answer columns): the rerank features at the table's
    precision and the frame count. No other metadata (the model is checked once per
    table version, not per row; each column costs a search 0.4 to 2 ms to fetch), and
    not ``_distance``: the first stage's score is recomputed from the features (see
    VideoSearch._ranked). A table of windows adds ``video_id``, to group them by video."""
    group = [GROUP_COLUMN] if has_windows(schema) else []
    return ["feature_frames", *rerank_features.stored_columns(schema), *group]


def best_per_video(order: list[int], video_ids: list[str] | None, k: int,
                   per_video: int = 1) -> list[list[int]]:
    """The candidate positions ``order`` (best first) grouped by video: the first ``k``
    videos to come, each with its best ``per_video`` windows in that order. With no
    ``video_ids`` (a table of one row per video), each of the first ``k`` alone."""
    if video_ids is None:
        return [[position] for position in order[:k]]
    kept: dict[str, list[int]] = {}
    for position in order:
        windows = kept.get(video_ids[position])
        if windows is None:
            if len(kept) < k:
                kept[video_ids[position]] = [position]
        elif len(windows) < per_video:
            windows.append(position)
    return list(kept.values())


def distinct_moments(moments: list[Moment], positions: Iterable[int]) -> list[int]:
    """The ``positions`` of ``moments`` (best first) whose moment overlaps none kept
    before it: a video's neighbouring windows often find the same seconds."""
    kept: list[int] = []
    for i in positions:
        if all(moments[i].end_s <= moments[j].start_s or moments[i].start_s >= moments[j].end_s
               for j in kept):
            kept.append(i)
    return kept


def index_refine_factor(dataset) -> int:
    """The refine factor the vector index of a table's Lance ``dataset`` needs (1 with
    none: exact search)."""
    return REFINE_FACTORS.get(vector_index_type(dataset), 1)


@dataclasses.dataclass(frozen=True)
class TableVersion:
    """One version of the table as a search reads it, worked out once when the search
    first sees that version (the schema and index lookups cost 1.2 ms, too much for
    each search): its Lance dataset, the columns to fetch per candidate and the refine
    factor of its vector index."""

    dataset: object  # lance.LanceDataset
    columns: list[str]
    refine_factor: int
    moment_columns: list[str]
    state: TableState  # the table's record: the model and ingest run its rows come from


def filtered_scanner(version: TableVersion, columns: list[str], where: str | None,
                     with_row_id: bool, **search):
    """A Lance scanner of ``version`` for a vector (``nearest=``) or full-text
    (``full_text_query=``) search, ``where`` applied before it, no score column."""
    return version.dataset.scanner(columns=columns, filter=where or None, prefilter=bool(where),
                                   with_row_id=with_row_id, disable_scoring_autoprojection=True,
                                   **search)


class ModelMismatchError(ValueError):
    """The table was written by another checkpoint than the one querying it."""


class QueryTruncatedWarning(UserWarning):
    """A query longer than the text encoder's context: its end was cut off."""


class VideoSearch:
    """Query one LanceDB video table with one checkpoint (build once, search many times).

    ``keyword_model`` is where this machine keeps the sentence model the ingest
    job used for caption keywords (a folder, or a hub name in the local Hugging
    Face cache); by default, the model the table records, by its name, or by its
    folder where this machine has that folder. The other keyword settings come
    from the table, so queries get the keywords captions got.
    ``nprobes`` and ``refine_factor`` tune the vector index, when the table has one
    (LanceDB's meaning: IVF partitions searched; candidates x factor re-ranked by
    exact distance before the full model sees them). The default refine factor
    follows the table's index: 10 for IVF_PQ, whose product-quantised distances
    need it (at a million clustered rows the final top 10 then holds 1.0 of the
    exhaustive one, against 0.26 with no refinement, for a vector search of 21
    ms instead of 11), and 1 for HNSW_SQ, which keeps 0.96 without it and whose
    search takes 32 ms with a factor of 10 against 10 ms
    (``benchmarks/query_latency.py``). It is looked up with each new table version,
    so a long-lived search follows the index a later embed run builds.
    ``ef`` is an HNSW index's search breadth: by default ``EF_PER_CANDIDATE`` times
    the candidates asked for, and never fewer than Lance is asked for.
    ``storage_options`` go to LanceDB for an ``s3://`` table; by default they
    spell out the AWS environment's endpoint and region, and allow plain HTTP
    for an ``http://`` endpoint (MinIO, moto), which LanceDB otherwise refuses.
    A long-lived search (a notebook, a service) sees rows that later embed or
    refresh runs commit within ``consistency_interval_s`` seconds (LanceDB's
    read consistency interval; 0: check on every search, None: never). Stage one
    asks Lance, under LanceDB, directly (:meth:`first_stage` says why).
    """

    def __init__(self, db_uri: str, table: str, checkpoint: str,
                 keyword_model: str | None = None, nprobes: int = NPROBES,
                 refine_factor: int | None = None, storage_options: dict[str, str] | None = None,
                 consistency_interval_s: float | None = 5.0, ef: int | None = None,
                 device: str = "cpu") -> None:
        import lancedb

        self.local = "://" not in db_uri  # a folder here, with a page cache to fill
        if self.local and not os.path.isdir(db_uri):  # connect() would create it
            raise FileNotFoundError(f"no LanceDB database at {db_uri}: pass the --db folder "
                                    "pipelines/embed.py wrote")
        if storage_options is None:
            storage_options = storage.object_store_options(db_uri)
        interval = (None if consistency_interval_s is None
                    else timedelta(seconds=consistency_interval_s))
        db = lancedb.connect(db_uri, storage_options=storage_options,
                             read_consistency_interval=interval)
        self.table = db.open_table(table)  # before the models: a wrong --db fails fast
        self.device = torch.device(device)  # the model's; features are read on the CPU
        self.model, self.model_id = open_model(checkpoint, device=device)
        self.nprobes = nprobes
        self.refine_factor = refine_factor  # None: the table's index's
        self.ef = ef  # None: EF_PER_CANDIDATE x the candidates
        self.consistency_interval_s = consistency_interval_s
        self._version = self._read(self.table.to_lance())
        self._checked_at = time.monotonic()
        self.media = VideoMedia(self.current_version)  # thumbnails and video files
        self.keywords = None
        if self.model.text_enhance is not None:  # keywords matter to it alone
            options = KeywordOptions.from_dict(keyword_options_of(self.table.schema))
            model = query_keyword_model(options.model, keyword_model)
            self.keywords = KeywordExtractor(dataclasses.replace(options, model=model))
        self.timings: dict[str, float] = {}

    def _read(self, dataset) -> TableVersion:
        """The search's view of one version of the table's Lance ``dataset``, once the
        table's own record says this checkpoint wrote it (ModelMismatchError if not)."""
        state = table_state(dataset)  # the table's record, not one row
        if state is None:
            raise ValueError(f"table {self.table.name!r} records no model: it was not "
                             "written by pipelines/embed.py")
        if state.model_id != self.model_id:
            raise ModelMismatchError(
                f"the table holds embeddings of model {state.model_id}, not of this "
                f"checkpoint ({self.model_id}); re-run pipelines/embed.py with this checkpoint "
                "or query with the checkpoint that wrote the table")
        factor = (self.refine_factor if self.refine_factor is not None
                  else index_refine_factor(dataset))
        return TableVersion(dataset, fetched_columns(dataset.schema), factor,
                            MOMENT_COLUMNS if has_windows(dataset.schema)
                            else LEGACY_MOMENT_COLUMNS, state)

    def current_version(self) -> TableVersion:
        """The table version to search: the newest one when ``consistency_interval_s``
        has passed since the last check (LanceDB's read consistency, kept here as the
        search asks Lance directly). A new version shares the index cache of the ones
        before, so it does not load the index again."""
        interval = self.consistency_interval_s
        now = time.monotonic()
        if interval is not None and now - self._checked_at >= interval:
            self._checked_at = now
            dataset = self._version.dataset
            latest = dataset.latest_version
            if latest != dataset.version:
                self._version = self._read(dataset.checkout_version(latest))
        return self._version

    def prewarm(self) -> float:
        """Load the current table version's vector index into Lance's cache and, for a
        table on local disk, read once the columns a search fetches, so that no search
        waits for the disk (the operating system's page cache keeps them where the
        host's memory holds them: 15 GB at a million ViT-B-32 rows with int8 features).
        Seconds taken. A service calls it before its first request; straight after an
        index build, searches at a million rows took 20 to 34 ms at p50 instead of 16 to
        20 (docs/history.md, "a million rows served warm"). An object-store table
        has no page cache to fill: only its index is loaded."""
        started = time.perf_counter()
        version = self.current_version()
        for index in version.dataset.list_indices():
            # an index whose rows were all rewritten since covers no fragment, and its
            # files may be gone: searches scan those rows, and there is nothing to load
            if index["fields"] == ["vector"] and len(index["fragment_ids"]):
                version.dataset.prewarm_index(index["name"])
        if self.local:
            read = list(dict.fromkeys([*version.columns, *ANSWER_COLUMNS]))
            for _ in version.dataset.to_batches(columns=read):
                pass
        return time.perf_counter() - started

    @torch.no_grad()
    def encode_texts(self, texts: list[str]) -> TextFeatures:
        """The queries' text features, in one pass of the text tower (caption tokens and,
        when the model uses them, keywords): a service encodes concurrent queries together."""
        tokenizer = self.model.tokenizer
        tokens = trim_padding(tokenizer.captions(texts)).to(self.device)
        if self.keywords is None:
            return self.model.encode_text(tokens)
        kw_tokens, kw_mask = tokenizer.keywords(self.keywords(texts),
                                                self.model.config.max_keywords)
        return self.model.encode_text(tokens, kw_tokens.to(self.device), kw_mask.to(self.device))

    def checked_query(self, text: str, k: int, candidates: int) -> tuple[str, str | None]:
        """``text`` stripped, once the query is known to be one this search can answer,
        and a note when the model reads only part of it (None otherwise).

        Raises ValueError for an empty text or a ``k`` outside ``1..candidates``.
        """
        if not isinstance(text, str) or not text.strip():
            raise ValueError("the query text is empty")
        if k < 1 or candidates < k:
            raise ValueError(f"k ({k}) must be at least 1 and at most candidates ({candidates})")
        text = text.strip()
        dropped = self.model.tokenizer.dropped_tokens(text)
        note = None
        if dropped:
            note = (f"the query is longer than the model's "
                    f"{self.model.tokenizer.context_length}-token context: its last {dropped} "
                    "tokens were not read")
        return text, note

    def tag_query(self, text: str) -> str | None:
        """The full-text query of a hybrid search for ``text``: the text's tags
        (``vtr_models.tags``, the rule the model's tag vocabulary was mined with) that
        the model predicts, space-separated; None when it has none of them. ValueError
        for a table without tags."""
        if TAGS_COLUMN not in self.current_version().dataset.schema.names:
            raise ValueError(f"table {self.table.name!r} has no tags: a hybrid search needs a "
                             "table embedded by a model trained with --semantic-levels")
        vocabulary = {tag for vocab in self.model.config.tag_vocab for tag in vocab}
        found = [tag for tags in caption_tags(text).values() for tag in tags
                 if tag in vocabulary]
        return " ".join(found) or None

    def search(self, text: str, k: int = 10, candidates: int = 100,
               where: str | None = None, moments: int = 1, hybrid: bool = False
               ) -> pd.DataFrame:
        """The top ``k`` videos for ``text``: ``rank``, ``video_id``, ``uri``, ``score``
        (full model), ``first_stage_score`` (cosine of the vectors), and the moment that
        matches best: ``start_s``, ``end_s`` and ``moment_score``, its frames' mean
        evidence (``vtr_models.moments``). A video with several windows among the
        ``candidates`` is answered by its best-scoring one, so ``k`` videos need at
        least ``k`` candidate videos, not windows. ``moments`` above 1 adds a column
        ``moments``: for each video, the moments of up to that many of its best
        windows among the candidates (``start_s``, ``end_s``, ``moment_score``,
        ``score``), best first, less those overlapping one before.

        ``where`` is a LanceDB SQL filter over the table's metadata columns,
        applied before the vector search (e.g. ``"duration_s < 30"``; a table of a
        model with semantic levels has each row's predicted ``tags``:
        ``"array_has_any(tags, ['dog'])"``). ``hybrid`` (such a table only) adds to the
        vector search's candidates up to as many rows whose tags match the text's
        (:meth:`tag_query`, LanceDB's full-text index), all reranked alike.
        ``timings`` holds the seconds of each step of the last search.
        """
        text, note = self.checked_query(text, k, candidates)
        if note:
            warnings.warn(QueryTruncatedWarning(note), stacklevel=2)
        tag_query = self.tag_query(text) if hybrid else None
        started = time.perf_counter()
        features = self.encode_texts([text])
        text_s = time.perf_counter() - started
        result, timings = self.search_encoded(features, k, candidates, where, moments,
                                              tag_query)
        self.timings = {"text_s": text_s, **timings}
        return result

    @torch.no_grad()
    def similar(self, video_id: str, k: int = 10, candidates: int = 100,
                where: str | None = None, moments: int = 1,
                at_s: float | None = None) -> pd.DataFrame:
        """"More like this": the top ``k`` other videos for the stored features of
        ``video_id`` (its window holding second ``at_s``, else all its windows), as
        :meth:`search` answers (:meth:`search_example` says how they are ranked).
        UnknownVideoError for an id no row has."""
        version = self.current_version()
        windows = ["window_end_s"] if has_windows(version.dataset.schema) else []
        rows = version.dataset.to_table(columns=[*version.columns, *windows],
                                        filter=sql_equals("video_id", video_id))
        if not rows.num_rows:
            raise UnknownVideoError(video_id)
        if at_s is not None and windows:
            ends = rows.column("window_end_s").to_pylist()
            # the first window still running at at_s (the last one past the video's end)
            inside = [i for i, end in enumerate(ends) if end > at_s] or [len(ends) - 1]
            rows = rows.take([min(inside, key=lambda i: ends[i])])
        video = video_features(rows, self.model.config)
        vector = F.normalize(self.model.video_embedding(video).mean(dim=0), dim=-1)
        others = f"NOT ({sql_equals('video_id', video_id)})"
        return self.search_example(vector, video.frames[video.mask], k, candidates,
                                   f"({where}) AND {others}" if where else others, moments)

    @torch.no_grad()
    def search_image(self, image: bytes, k: int = 10, candidates: int = 100,
                     where: str | None = None, moments: int = 1) -> pd.DataFrame:
        """The top ``k`` videos for an image (JPEG, PNG or WebP bytes), as :meth:`search`
        answers: the image is encoded as a video of one frame by the model's video
        tower, the one the table's vectors came from (for CLIP, the image tower's
        embedding), and searched by :meth:`search_example`. ValueError for bytes that
        are not such an image."""
        frames, mask = self.model.preprocess([checked_image(image)])
        video = self.model.encode_video(frames[None].to(self.device), mask[None].to(self.device))
        vector = self.model.video_embedding(video)[0].float().cpu()
        return self.search_example(vector, video.frames[0, :1].float().cpu(), k, candidates,
                                   where, moments)

    @torch.no_grad()
    def search_example(self, vector: torch.Tensor, frames: torch.Tensor, k: int = 10,
                       candidates: int = 100, where: str | None = None,
                       moments: int = 1) -> pd.DataFrame:
        """The top ``k`` videos for an example rather than a text: its first-stage
        ``vector`` (unit length) and its ``[Q, D]`` temporal frame features.

        The full model's score is a function of a text and a video, and an example has
        no text, so there is no rerank: the ``candidates`` are ranked by the cosine of
        their vectors with the example's (``score`` is that cosine, as is
        ``first_stage_score``), grouped by video as a text search is. What the second
        stage does is find each video's moment: the frames most like the example's
        (``vtr_models.example_evidence``), spanned as a text's moment is."""
        if k < 1 or candidates < k:
            raise ValueError(f"k ({k}) must be at least 1 and at most candidates ({candidates})")
        version = self.current_version()
        rows = self.first_stage_scanner(vector.numpy(), candidates, where=where,
                                        version=version).to_table()
        ranked = {key: [] for key in RANKED_KEYS}
        if rows.num_rows:
            videos = video_features(rows, self.model.config)
            cosine = self.model.video_embedding(videos) @ vector
            ranked = self._top(rows, videos, cosine, cosine, k, moments,
                               lambda kept: example_evidence(frames, kept))
        return self._answered(version, [ranked], moments)[0]

    @torch.no_grad()
    def first_stage(self, features: TextFeatures, candidates: int,
                    columns: list[str] | None = None, where: str | None = None,
                    with_row_id: bool = False, version: TableVersion | None = None,
                    tag_queries: list[str | None] | None = None) -> list[pa.Table]:
        """For each encoded text, its ``candidates`` nearest neighbours in ``version``
        (by default the current table version; ``columns``: by default what the rerank
        needs), nearest first; then, for a text with a ``tag_queries`` entry, up to
        ``candidates`` more rows whose tags match it (best match first, each row once).

        One Lance query per text: asked through LanceDB, the same query took 3 ms more
        (docs/history.md, "stage one through Lance").
        """
        version = version or self.current_version()  # one for every text of a batch
        vectors = self.model.text_embedding(features).float().cpu().numpy()
        found = [self.first_stage_scanner(vector, candidates, columns, where, with_row_id,
                                          version).to_table() for vector in vectors]
        for i, query in enumerate(tag_queries or []):
            if query:
                matched = filtered_scanner(version, found[i].column_names, where, with_row_id,
                                           full_text_query=query, limit=candidates).to_table()
                seen = set(found[i].column(ROW_OFFSET).to_pylist())
                extra = [j for j, offset in enumerate(matched.column(ROW_OFFSET).to_pylist())
                         if offset not in seen]
                found[i] = pa.concat_tables([found[i], matched.take(extra)])
        return found

    def first_stage_scanner(self, vector, candidates: int, columns: list[str] | None = None,
                            where: str | None = None, with_row_id: bool = False,
                            version: TableVersion | None = None):
        """The Lance scanner of ``version`` (by default the current table version) for
        the ``candidates`` nearest neighbours of one first-stage ``vector``, by this
        search's index settings, with ``where`` applied before the search."""
        version = version or self.current_version()
        nearest = {"column": "vector", "q": vector, "k": candidates, "metric": "cosine",
                   "nprobes": self.nprobes}
        if version.refine_factor > 1:
            nearest["refine_factor"] = version.refine_factor
        nearest["ef"] = self.search_breadth(candidates, version)  # only HNSW reads it
        return filtered_scanner(version, columns or [*version.columns, ROW_OFFSET], where,
                                with_row_id, nearest=nearest)

    def search_breadth(self, candidates: int, version: TableVersion | None = None) -> int:
        """The ``ef`` an HNSW search of ``version`` (by default the current one) for
        ``candidates`` asks for: this search's ``ef``, by default ``EF_PER_CANDIDATE``
        times the candidates, and never narrower than what Lance is asked for (the
        candidates times the refine factor)."""
        version = version or self.current_version()
        return max(self.ef or EF_PER_CANDIDATE * candidates,
                   candidates * version.refine_factor)

    def search_encoded(self, features: TextFeatures, k: int, candidates: int,
                       where: str | None = None, moments: int = 1,
                       tag_query: str | None = None) -> tuple[pd.DataFrame, dict[str, float]]:
        """:meth:`search` for one query already encoded (``features`` of one text; its
        ``tag_query`` for a hybrid search): the results, and the seconds of its steps
        (:meth:`search_encoded_many`)."""
        results, timings = self.search_encoded_many(features, [k], candidates, where, moments,
                                                    [tag_query])
        return results[0], timings

    @torch.no_grad()
    def search_encoded_many(self, features: TextFeatures, ks: list[int], candidates: int,
                            where: str | None = None, moments: int = 1,
                            tag_queries: list[str | None] | None = None
                            ) -> tuple[list[pd.DataFrame], dict[str, float]]:
        """:meth:`search_encoded` for several encoded texts with the same ``candidates``,
        ``where`` and ``moments`` (``ks[i]`` results for text ``i``, ``tag_queries[i]``
        its hybrid search's tags): each text's results, and the seconds of the vector
        searches (with the fetch of the candidates' features), of the reranks, and of
        the one fetch of every text's answer columns."""
        started = time.perf_counter()
        version = self.current_version()
        found = self.first_stage(features, candidates, where=where, version=version,
                                 tag_queries=tag_queries)
        fetched = time.perf_counter()
        ranked = [self._ranked(features[i:i + 1], rows, k, moments)
                  for i, (k, rows) in enumerate(zip(ks, found, strict=True))]
        reranked = time.perf_counter()
        results = self._answered(version, ranked, moments)
        return results, {"search_s": fetched - started, "rerank_s": reranked - fetched,
                         "answer_s": time.perf_counter() - reranked}

    def _answered(self, version: TableVersion, ranked: list[dict[str, list]],
                  moments: int) -> list[pd.DataFrame]:
        """The result tables of ranked candidates (``_ranked``'s dicts, one per query):
        one fetch of every query's answer columns, then each video's best moment from its
        windows' per-frame evidence, and with ``moments`` above 1 its other moments."""
        offsets = [offset for top in ranked for offset in top[ROW_OFFSET]]
        stored_times, window_end = version.moment_columns
        tags = [TAGS_COLUMN] if TAGS_COLUMN in version.dataset.schema.names else []
        answers = version.dataset.take(offsets, columns=ANSWER_COLUMNS + tags
                                       + version.moment_columns).to_pydict()
        results, start = [], 0
        for top in ranked:
            end = start + len(top[ROW_OFFSET])
            found_moments = [
                best_moment(evidence, frame_times(stored, int(count),
                                                  self.model.config.max_frames), length)
                for evidence, count, stored, length in zip(
                    top["evidence"], top["frames"], answers[stored_times][start:end],
                    answers[window_end][start:end], strict=True)]
            # where each video's windows start in the lists: its best window
            firsts = list(itertools.accumulate([0, *top["windows"][:-1]])) if top["windows"] else []
            best = [found_moments[i] for i in firsts]
            result = pd.DataFrame({
                "rank": range(1, len(firsts) + 1),
                **{name: [answers[name][start + i] for i in firsts] for name in ANSWER_COLUMNS},
                "score": [top["score"][i] for i in firsts],
                "first_stage_score": [top["first_stage_score"][i] for i in firsts],
                "start_s": [m.start_s for m in best], "end_s": [m.end_s for m in best],
                "moment_score": [m.score for m in best],
            }, columns=RESULT_COLUMNS)
            if tags:  # what the model saw in each video (semantic levels)
                result.insert(3, TAGS_COLUMN, [answers[TAGS_COLUMN][start + i] for i in firsts])
            if moments > 1:
                result["moments"] = [
                    [{"start_s": found_moments[i].start_s, "end_s": found_moments[i].end_s,
                      "moment_score": found_moments[i].score, "score": top["score"][i]}
                     for i in distinct_moments(found_moments, range(first, first + n))]
                    for first, n in zip(firsts, top["windows"], strict=True)]
            results.append(result)
            start = end
        return results

    def _ranked(self, features: TextFeatures, rows: pa.Table, k: int,
                moments: int = 1) -> dict[str, list]:
        """One text's top ``k`` videos of its candidates ``rows`` by the full model's
        score, best first (:meth:`_top`). From the same features as the first stage's
        cosine (the index's ``_distance`` is not a cosine distance without refinement:
        HNSW_SQ gives the squared distance of the unit vectors, twice the cosine
        distance, and IVF_PQ its quantised approximation)."""
        if not rows.num_rows:
            return {key: [] for key in RANKED_KEYS}
        videos = video_features(rows, self.model.config).to(self.device)
        scores = self.model.score(features, videos)[0].cpu()
        first = self.model.first_stage_score(features, videos)[0].cpu()
        return self._top(rows, videos, scores, first, k, moments,
                         lambda kept: frame_evidence(self.model, features, kept)[0].cpu())

    def _top(self, rows: pa.Table, videos: VideoFeatures, scores: torch.Tensor,
             first: torch.Tensor, k: int, moments: int,
             evidence: Callable[[VideoFeatures], torch.Tensor]) -> dict[str, list]:
        """The top ``k`` videos of candidates ``rows`` (their ``videos`` features) by
        ``scores``, best first (``best_per_video``), each with its best ``moments``
        windows: for every window kept, in that order, its table offset, score,
        first-stage cosine (``first``), per-frame ``evidence`` of the kept features
        (``vtr_models.moments``) and number of frames, and ``windows``, how many each
        video has."""
        order = torch.argsort(scores, descending=True)
        groups = best_per_video(order.tolist(), rows.column(GROUP_COLUMN).to_pylist()
                                if GROUP_COLUMN in rows.column_names else None, k, moments)
        top = torch.as_tensor([p for group in groups for p in group], dtype=torch.long)
        kept = videos[top.to(videos.pooled.device)]
        return {ROW_OFFSET: rows.column(ROW_OFFSET).take(top.tolist()).to_pylist(),
                "score": scores[top].tolist(), "first_stage_score": first[top].tolist(),
                "evidence": evidence(kept),
                "frames": kept.mask.sum(dim=1).tolist(),
                "windows": [len(group) for group in groups]}
