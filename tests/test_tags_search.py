"""Tags for users: a model with semantic levels stores each video's predicted tags in its
LanceDB row, searchable with a filter and, in a hybrid search, through the full-text index."""

from __future__ import annotations

import json

import lancedb
import pytest
import torch
from conftest import run, wake

from pipelines.index.search import VideoSearch
from pipelines.index.table import video_features
from pipelines.query import main as query_main
from pipelines.training.evaluation import encode_split, load_split
from vtr_models import create_model, save_checkpoint

VOCAB = (("circle", "square", "zebra"), ("move", "slide"), ("left", "then", "up"))


@pytest.fixture(scope="module")
def tagged(synthetic_data, tmp_path_factory) -> dict:
    """A table embedded by an (awake, untrained) meanp with the three semantic levels."""
    root = tmp_path_factory.mktemp("tagged")
    torch.manual_seed(0)
    model = wake(create_model("meanp", max_frames=8,
                              semantic_levels=("entity", "action", "relationship"),
                              tag_vocab=VOCAB))
    _, video = encode_split(model, load_split(model, str(synthetic_data), "test"))
    with torch.no_grad():  # each tag's threshold at its median video: tags vary by video
        for level in model.semantic:
            logits = level.project(level.video_pool(video.frames, video.mask))
            level.project.bias -= logits.median(dim=0).values + 1e-4
    checkpoint = save_checkpoint(model, root / "ckpt")
    db = root / "db"
    result = run(["pipelines/embed.py", "--data", str(synthetic_data), "--checkpoint",
                  str(checkpoint), "--db", str(db), "--table", "videos", "--split", "test",
                  "--batch-size", "4"])
    assert result.returncode == 0, result.stderr[-3000:]
    return {"db": str(db), "checkpoint": str(checkpoint), "data": synthetic_data}


def test_each_row_holds_the_tags_its_model_predicts(tagged, keyword_model):
    search = VideoSearch(tagged["db"], "videos", tagged["checkpoint"],
                         keyword_model=keyword_model)
    rows = {r["video_id"]: r["tags"] for r in
            search.table.to_arrow().select(["video_id", "tags"]).to_pylist()}
    inputs = load_split(search.model, str(tagged["data"]), "test")
    _, video = encode_split(search.model, inputs)
    expected = dict(zip(inputs.video_ids, search.model.predict_tags(video), strict=True))
    assert rows == expected
    assert any(rows.values()) and len({tuple(t) for t in rows.values()}) > 1
    assert "tags" in [i.columns[0] for i in search.table.list_indices()]
    found = search.search("a red circle moves left", k=3, candidates=6)
    assert [list(t) for t in found["tags"]] == [rows[v] for v in found["video_id"]]


def test_a_tag_filter_and_a_hybrid_search_change_the_answer(tagged, keyword_model, capsys):
    """Give the video the plain search ranks last tags no other has (it rewrites the
    tags: the tests after it see them): a filter on that
    tag answers with it alone, and a hybrid search for the tag's word takes it as a
    candidate that the vector search alone left out."""
    db = lancedb.connect(tagged["db"])
    search = VideoSearch(tagged["db"], "videos", tagged["checkpoint"],
                         keyword_model=keyword_model)
    text = "a zebra slides up"
    everything = search.search(text, k=6, candidates=6)
    last = everything["video_id"].iloc[-1]
    rows = db.open_table("videos")
    rows.update(where=f"video_id != '{last}'", values={"tags": ["circle"]})
    rows.update(where=f"video_id = '{last}'", values={"tags": ["zebra", "up"]})
    search = VideoSearch(tagged["db"], "videos", tagged["checkpoint"],
                         keyword_model=keyword_model)  # sees the new tags
    assert search.tag_query(text) == "zebra slide up"
    plain = search.search(text, k=2, candidates=2)
    assert last not in set(plain["video_id"])
    filtered = search.search(text, k=2, candidates=2, where="array_has_any(tags, ['zebra'])")
    assert filtered["video_id"].tolist() == [last]
    features = search.encode_texts([text])
    vector_only = search.first_stage(features, 2)[0].column("video_id").to_pylist()
    hybrid = search.first_stage(features, 2, tag_queries=["zebra"])[0]
    assert last not in vector_only and last in hybrid.column("video_id").to_pylist()
    assert hybrid.column("video_id").to_pylist()[:2] == vector_only  # vector ones first
    # a relationship tag is a stop word to a default full-text index: this one keeps it
    by_direction = search.first_stage(features, 2, tag_queries=["up"])[0]
    assert last in by_direction.column("video_id").to_pylist()
    answer = search.search(text, k=2, candidates=2, hybrid=True)
    scores = search.model.score(features, video_features(hybrid, search.model.config))[0]
    best = [hybrid.column("video_id")[i].as_py() for i in scores.argsort(descending=True)[:2]]
    assert answer["video_id"].tolist() == best  # the rerank of every candidate, tagged too
    assert query_main(["--db", tagged["db"], "--table", "videos", "--checkpoint",
                       tagged["checkpoint"], "--text", text, "--k", "2", "--candidates", "2",
                       "--hybrid", "--json", "--keyword-model", keyword_model]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["video_id"] for r in records] == best  # the CLI searches hybrid too
    assert [r["tags"] for r in records] == [list(t) for t in answer["tags"]]
