"""The search service on Ray Serve: started with ``vtr serve`` from the shipped config,
asked over real HTTP, answering what the Python API answers."""

from __future__ import annotations

import copy
import json
import threading
import urllib.error
import urllib.request

import lancedb
import pytest
import yaml
from conftest import REPO, free_port, serving

from pipelines.index.search import VideoSearch
from vtr_models.checkpoint import checkpoint_id, model_id

pytestmark = pytest.mark.slow
TEXTS = ["a red circle moves left", "a blue square moves up", "a green bar sweeps right",
         "a yellow dot falls down", "a shape crosses the frame", "a white bar moves",
         "something moves to the left", "a circle rises"]


def request(url: str, body: dict | bytes | None = None) -> tuple[int, dict]:
    """Status and JSON body of a GET (no body) or a POST of ``body``."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def service(table, zero_shot_table, keyword_model, tmp_path_factory):
    """``vtr serve cluster/serve-search.yaml`` (``serve run`` of it), with this table,
    checkpoint and a free port; beside it, under ``/zero-shot``, the same app over a table
    embedded zero-shot."""
    config = yaml.safe_load((REPO / "cluster" / "serve-search.yaml").read_text())
    port = free_port()
    config["http_options"] = {"host": "127.0.0.1", "port": port}
    config["applications"][0]["args"].update(
        db=table["db"], checkpoint=str(table["checkpoint"]), keyword_model=keyword_model,
        max_replicas=1, batch_wait_timeout_s=0.05)
    zero_shot = copy.deepcopy(config["applications"][0])
    zero_shot.update(name="zero-shot", route_prefix="/zero-shot")
    zero_shot["args"].update(db=zero_shot_table["db"], checkpoint=zero_shot_table["spec"])
    config["applications"].append(zero_shot)
    with serving(config, tmp_path_factory.mktemp("serve")) as url:
        yield url


@pytest.fixture(scope="module")
def api(table, keyword_model) -> VideoSearch:
    return VideoSearch(table["db"], "videos", str(table["checkpoint"]),
                       keyword_model=keyword_model)


def test_search_over_http_answers_what_the_api_answers(service, api, table):
    status, info = request(service + "/info")
    assert status == 200 and info["rows"] == table["rows"]
    assert info["model_id"] == checkpoint_id(table["checkpoint"])
    assert "split" in info["filterable_columns"]
    status, body = request(service + "/search", {"text": TEXTS[0], "k": 3, "candidates": 10})
    assert status == 200, body
    expected = api.search(TEXTS[0], k=3, candidates=10)
    assert [r["video_id"] for r in body["results"]] == list(expected["video_id"])
    assert [r["rank"] for r in body["results"]] == [1, 2, 3]
    assert [r["score"] for r in body["results"]] == pytest.approx(list(expected["score"]),
                                                                   abs=1e-4)
    assert set(body["timings_ms"]) == {"text", "search", "rerank", "answer"} and body["notes"] == []
    assert all(r["start_s"] < r["end_s"] for r in body["results"])  # each video's moment
    status, more = request(service + "/search", {"text": TEXTS[0], "k": 3, "candidates": 10,
                                                 "moments": 2})
    assert status == 200 and [r["video_id"] for r in more["results"]] == list(
        expected["video_id"])
    # a clip is one window: its one moment, as the result's own
    assert [[(m["start_s"], m["end_s"]) for m in r["moments"]] for r in more["results"]] == [
        [(r["start_s"], r["end_s"])] for r in more["results"]]
    splits = dict(lancedb.connect(table["db"]).open_table("videos").to_pandas()[
        ["video_id", "split"]].itertuples(index=False))
    status, body = request(service + "/search", {"text": TEXTS[0], "k": 5,
                                                 "filter": {"split": "test"}})
    assert status == 200 and body["results"], body
    assert {splits[r["video_id"]] for r in body["results"]} == {"test"}
    expected = api.search(TEXTS[0], k=5, where="split = 'test'")
    assert [r["video_id"] for r in body["results"]] == list(expected["video_id"])
    status, body = request(service + "/search", {"text": TEXTS[0], "k": 5,
                                                 "where": "split = 'test'"})
    assert status == 200  # the command line's SQL where, over HTTP too
    assert [r["video_id"] for r in body["results"]] == list(expected["video_id"])


def test_a_table_embedded_zero_shot_is_served_from_the_backbone_spec(service, zero_shot_table):
    """No checkpoint: the app loads the untrained full model from the spec's weights file,
    and each result's full score is its first-stage cosine (CLIP mean pooling)."""
    status, info = request(service + "/zero-shot/info")
    assert status == 200 and info["rows"] == zero_shot_table["rows"]
    assert info["model_id"] == model_id(zero_shot_table["spec"])
    status, body = request(service + "/zero-shot/search", {"text": TEXTS[0], "k": 3})
    assert status == 200 and len(body["results"]) == 3, body
    for result in body["results"]:
        assert result["score"] == pytest.approx(result["first_stage_score"], abs=1e-3)


def test_concurrent_queries_are_searched_together_and_answered_alike(service, api):
    """Concurrent requests share a batch whatever they ask: each gets what the Python API
    answers it alone, with its own k, candidates and filter."""
    asks = {text: {"k": 1 + i % 3, "candidates": (10, 10, 6)[i % 3],
                   "filter": {"split": "test"} if i % 2 else {}}
            for i, text in enumerate(TEXTS)}
    answers: dict[str, tuple[int, dict]] = {}
    start = threading.Barrier(len(TEXTS))

    def ask(text: str) -> None:
        start.wait()
        answers[text] = request(service + "/search", {"text": text, **asks[text]})

    threads = [threading.Thread(target=ask, args=(text,)) for text in TEXTS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(status == 200 for status, _ in answers.values()), answers
    assert max(body["text_batch"] for _, body in answers.values()) > 1  # @serve.batch
    for text, (_, body) in answers.items():  # a batch's padding changes no query's answer
        where = "split = 'test'" if asks[text]["filter"] else None
        expected = api.search(text, k=asks[text]["k"], candidates=asks[text]["candidates"],
                              where=where)
        assert [r["video_id"] for r in body["results"]] == list(expected["video_id"]), text
        assert [r["score"] for r in body["results"]] == pytest.approx(
            list(expected["score"]), abs=1e-4)


def test_bad_requests_get_a_one_line_reason(service):
    for body, status, reason in (
            ({"text": "   "}, 400, "the query text is empty"),
            ({"text": "a shape", "k": 20, "candidates": 10}, 400, "at most candidates"),
            ({"text": "a shape", "filter": {"colour": "red"}}, 400, "cannot filter on colour"),
            ({"text": "a shape", "where": "no_such_column = 1"}, 400, "no_such_column"),
            ({"text": "a shape", "filter": {"split": "test"}, "where": "true) OR (true"}, 400,
             "unbalanced"),
            ({"text": "a shape", "hybrid": True}, 400, "has no tags"),  # no semantic levels
            ({"text": "a shape", "filter": {"split": "x' OR '1'='1"}}, 200, None)):
        got, answer = request(service + "/search", body)
        assert got == status, answer
        if reason:
            assert reason in answer["detail"] and "\n" not in answer["detail"]
        else:  # a quote in a value is a value, not SQL
            assert answer["results"] == []
    got, answer = request(service + "/search", b"not json")
    assert got == 422
    got, answer = request(service + "/search", {"text": "a red shape moves " * 200, "k": 2,
                                                "candidates": 5})
    assert got == 200 and len(answer["results"]) == 2
    assert len(answer["notes"]) == 1 and "tokens were not read" in answer["notes"][0]
