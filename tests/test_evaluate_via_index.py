"""``evaluate_via_index``: ranks from a fixed two-stage search, on a tiny committed ingest
output (a captions Delta table and one log file; no Ray, no model)."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from pipelines.ingestion.output import IngestStore, IngestVersion
from pipelines.ingestion.schemas import CAPTIONS
from pipelines.training.evaluation import evaluate_via_index

CANDIDATES = 3
# caption -> (its video, what the search returns: (video_id, full score), best first)
RESULTS = {
    "first": ("v0", [("v0", 0.9), ("v1", 0.5), ("v2", 0.1)]),  # rank 1
    "tied": ("v1", [("v1", 0.8), ("v2", 0.8), ("v3", 0.2)]),  # listed first, tie: rank 2
    "missing": ("v4", [("v0", 0.7), ("v1", 0.6), ("v2", 0.5)]),  # not a candidate: 3 + 1
    "third": ("v3", [("v5", 0.9), ("v0", 0.7), ("v3", 0.6)]),  # rank 3
    "again": ("v0", [("v0", 0.95), ("v3", 0.3), ("v4", 0.2)]),  # v0's second caption: rank 1
}
RANKS = [1, 2, 4, 3, 1]


class FixedSearch:
    """What evaluate_via_index calls on a ``VideoSearch``: ``search`` and ``table``."""

    def __init__(self, results: dict) -> None:
        self.results = results
        self.calls: list[tuple] = []
        self.table = self  # table.count_rows(where)

    def search(self, text: str, k: int, candidates: int, where: str | None = None):
        self.calls.append((text, k, candidates, where))
        rows = self.results[text][1]
        return pd.DataFrame({"rank": range(1, len(rows) + 1),
                             "video_id": [v for v, _ in rows],
                             "score": [s for _, s in rows]})

    def count_rows(self, where: str | None = None) -> int:
        self.calls.append(("count_rows", where))
        return 6


def committed_captions(folder, rows: list[dict]) -> str:
    """An ingest output whose one committed run holds only ``captions``."""
    write_deltalake(str(folder / "captions"), pa.Table.from_pylist(rows, schema=CAPTIONS))
    store = IngestStore(str(folder))
    store.commit(IngestVersion(1, {"captions": store.delta("captions").version()}))
    return str(folder)


def caption_rows(split: str) -> list[dict]:
    rows = [{"video_id": video, "caption": caption, "keywords": [], "split": split}
            for caption, (video, _) in RESULTS.items()]
    return [*rows, {"video_id": "v9", "caption": "other split", "keywords": None,
                    "split": "train"}]


def test_a_target_outside_the_candidates_ranks_candidates_plus_one_and_ties_count_against(
        tmp_path):
    data = committed_captions(tmp_path / "ingest", caption_rows("test"))
    search = FixedSearch(RESULTS)
    metrics = evaluate_via_index(search, data, "test", CANDIDATES)
    n = len(RANKS)
    assert metrics["t2v"] == {
        # beyond the 3 candidates a missed target's rank is unknown: no R@5, no R@10
        "R@1": pytest.approx(100 * 2 / n), "R@5": None, "R@10": None, "MdR": pytest.approx(2.0),
        "MnR": pytest.approx(sum(RANKS) / n)}
    assert metrics["num_captions"] == n and metrics["candidates"] == CANDIDATES
    assert metrics["num_videos"] == 6
    # every caption of the split, none of another, each a query of the split's rows with
    # all of its candidates reranked and returned
    queries = [call for call in search.calls if call[0] != "count_rows"]
    assert sorted(q[0] for q in queries) == sorted(RESULTS)
    assert {q[1:] for q in queries} == {(CANDIDATES, CANDIDATES, "split = 'test'")}
    assert ("count_rows", "split = 'test'") in search.calls


def test_r_at_1_needs_the_target_strictly_first(tmp_path):
    """A caption whose video ties the top score is no hit, whichever row comes first."""
    results = {**RESULTS, "first": ("v0", [("v0", 0.9), ("v1", 0.9), ("v2", 0.1)])}
    data = committed_captions(tmp_path / "ingest", caption_rows("test"))
    metrics = evaluate_via_index(FixedSearch(results), data, "test", CANDIDATES)
    assert metrics["t2v"]["R@1"] == pytest.approx(100 * 1 / len(RANKS))


def test_a_split_name_with_a_quote_is_quoted_in_the_filter(tmp_path):
    data = committed_captions(tmp_path / "ingest", caption_rows("it's"))
    search = FixedSearch(RESULTS)
    evaluate_via_index(search, data, "it's", CANDIDATES)
    assert {call[-1] for call in search.calls} == {"split = 'it''s'"}


def test_the_table_shows_unmeasurable_recall_as_a_dash():
    from pipelines.evaluate import format_table

    table = format_table({"t2v": {"R@1": 40.0, "R@5": None, "R@10": None, "MdR": 2.0,
                                  "MnR": 2.2}, "num_videos": 6, "num_captions": 5})
    assert table.splitlines()[1].split() == ["t2v", "40.0", "-", "-", "2.0", "2.2"]
