"""Embedding into LanceDB and two-stage queries: the table, upserts, the API, the CLIs."""

from __future__ import annotations

import json
import math
import shutil

import lancedb
import pyarrow as pa
import pytest
import torch
from conftest import REPO, run

from pipelines.core.actor_pools import growing_pool
from pipelines.embed import EmbedConfig, actor_sizes
from pipelines.evaluate import main as evaluate_main
from pipelines.index.search import (
    EF_PER_CANDIDATE,
    RESULT_COLUMNS,
    ModelMismatchError,
    VideoSearch,
)
from pipelines.index.table import (
    FILE_VERSION,
    KEYWORD_OPTIONS_KEY,
    create_vector_index,
    vector_index_type,
)
from pipelines.ingestion.output import open_ingest
from pipelines.query import main as query_main
from pipelines.training.evaluation import encode_split, load_split
from vtr_models.checkpoint import checkpoint_id, load_checkpoint


def test_table_holds_one_row_per_video_of_the_latest_model(table, keyword_model):
    rows = lancedb.connect(table["db"]).open_table("videos").to_arrow()  # no project code
    ingest = open_ingest(str(table["data"])).dataset("videos").to_table(columns=["video_id"])
    good = set(ingest.column("video_id").to_pylist()) - {"broken"}
    assert sorted(rows.column("video_id").to_pylist()) == sorted(good)
    assert set(rows.column("model_id").to_pylist()) == {checkpoint_id(table["checkpoint"])}
    assert rows.schema.field("vector").type == pa.list_(pa.float32(), 64)
    # frame and local features (8 frames of 64 each) in one column: one take per candidate
    assert rows.schema.field("rerank_features").type == pa.list_(pa.float16(), 2 * 8 * 64)
    vectors = torch.tensor(rows.column("vector").to_pylist())
    assert torch.allclose(vectors.norm(dim=1), torch.ones(len(vectors)), atol=1e-4)
    assert set(rows.column("split").to_pylist()) == {"train", "val", "test"}
    assert all(n == 8 for n in rows.column("feature_frames").to_pylist())
    recorded = json.loads(rows.schema.field("vector").metadata[b"vtr.keyword_options"])
    assert recorded["num_keywords"] == 5 and recorded["model"] == keyword_model  # ingest's
    # the file format whose take of a search's candidates is fastest, not LanceDB's default
    assert lancedb.connect(table["db"]).open_table("videos").to_lance().data_storage_version \
        == FILE_VERSION


def test_broken_video_is_recorded_and_skipped(table):
    for result in table["outputs"]:
        assert "skipped broken (/nowhere/broken.mp4)" in result.stderr
        assert "1 failed" in result.stdout


def test_indexes_are_built(table):
    indexed = {c for i in lancedb.connect(table["db"]).open_table("videos").list_indices()
               for c in i.columns}
    assert indexed == {"video_id", "vector"}


def indexed_copy(table: dict, folder, index_type: str) -> str:
    """A copy of the fixture's table with each row ten times more (under new ids; 30 rows
    are too few for Lance to train a vector index on) and a vector index of
    ``index_type``: the copy's database folder."""
    db = folder / "db"
    shutil.copytree(table["db"], db)
    videos = lancedb.connect(str(db)).open_table("videos")
    rows = videos.to_arrow()
    ids = rows.schema.get_field_index("video_id")
    videos.add(pa.concat_tables(
        rows.set_column(ids, "video_id", pa.array([f"{v}-{copy}" for v in
                                                   rows.column("video_id").to_pylist()]))
        for copy in range(10)))
    create_vector_index(videos, index_type, replace=True)
    return str(db)


def test_a_search_refines_as_the_tables_index_needs(table, keyword_model, tmp_path):
    """With an IVF_PQ index a search by default re-ranks its candidates by exact
    distance (the index asked for 10 x as many, then the exact distances); a refine
    factor given is kept."""
    db = indexed_copy(table, tmp_path, "IVF_PQ")
    for given, used in [(None, 10), (1, 1), (3, 3)]:
        search = VideoSearch(db, "videos", str(table["checkpoint"]),
                             keyword_model=keyword_model, refine_factor=given)
        assert search.current_version().refine_factor == used, given
        vector = search.model.text_embedding(search.encode_texts(["a red circle"]))[0]
        plan = search.first_stage_scanner(vector.numpy(), 5, ["video_id"]).explain_plan()
        assert f"ANNSubIndex: name=vector_idx, k={5 * used}," in plan, given
        assert ("KNNVectorDistance" in plan) == (used > 1), given


@pytest.mark.parametrize("index_type", ["HNSW_SQ", "IVF_PQ"])
def test_the_first_stage_score_is_the_cosine_of_the_vectors(table, keyword_model, tmp_path,
                                                            index_type):
    """Without refinement an index's distances are not cosine distances (HNSW_SQ: twice
    them; IVF_PQ: quantised): the reported first-stage score is still the cosine of the
    query's vector and the stored one. Each answer's id is its own row's: with rows
    deleted before the others, the offsets that fetch the top k's ids after the rerank
    are not the rows' addresses, and with a filter too."""
    db = indexed_copy(table, tmp_path, index_type)
    videos = lancedb.connect(db).open_table("videos")
    first = videos.to_arrow().column("video_id").to_pylist()[:5]
    videos.delete(f"video_id IN ({', '.join(repr(v) for v in first)})")
    search = VideoSearch(db, "videos", str(table["checkpoint"]),
                         keyword_model=keyword_model, refine_factor=1)
    text = "a red circle moves left"
    query = search.model.text_embedding(search.encode_texts([text]))[0]
    rows = videos.to_arrow()
    stored = dict(zip(rows.column("video_id").to_pylist(),
                      rows.column("vector").to_pylist(), strict=True))
    for where in (None, "split = 'train'"):
        found = search.search(text, k=10, candidates=50, where=where)
        assert len(found) == 10 and not set(found["video_id"]) & set(first)
        cosines = [float(torch.tensor(stored[v]) @ query) for v in found["video_id"]]
        assert found["first_stage_score"].tolist() == pytest.approx(cosines, abs=5e-3)


def test_hnsw_searches_as_wide_as_asked_and_a_prewarm_loads_its_index(table, keyword_model,
                                                                       tmp_path, monkeypatch):
    """``ef`` sets HNSW's search breadth (never under the candidates asked for; by
    default ``EF_PER_CANDIDATE`` times them; Lance's plan does not show it, so the query
    handed to Lance is checked); a prewarm loads
    the vector index into Lance's cache before any search, and searches then find what
    they find without one."""
    import lance

    db = indexed_copy(table, tmp_path, "HNSW_SQ")
    asked = []
    scanner = lance.LanceDataset.scanner
    monkeypatch.setattr(lance.LanceDataset, "scanner",
                        lambda self, **kw: asked.append(kw["nearest"]) or scanner(self, **kw))
    text = "a red circle moves left"
    # each video is in the copy 11 times, with one vector: 55 candidates are 5 whole videos,
    # where 50 would split the fifth's copies, which HNSW returns in any order
    candidates = 55
    found = {}
    for ef in (None, 40, 200):
        search = VideoSearch(db, "videos", str(table["checkpoint"]),
                             keyword_model=keyword_model, ef=ef)
        if ef == 200:
            session = search.current_version().dataset.session()
            cached = session.index_cache_size_bytes()
            assert search.prewarm() > 0
            assert session.index_cache_size_bytes() > cached + 10_000  # the graph, the codes
        found[ef] = search.search(text, k=10, candidates=candidates)
        assert asked[-1]["ef"] == (max(ef, candidates) if ef else
                                   EF_PER_CANDIDATE * candidates), ef
    # 330 rows: every breadth finds the best, up to ties among the copies of a video
    assert found[200]["score"].tolist() == pytest.approx(found[None]["score"].tolist())


def test_search_returns_the_exhaustive_top_10(table, keyword_model):
    search = VideoSearch(table["db"], "videos", str(table["checkpoint"]),
                         keyword_model=keyword_model)
    text = "a red circle moves left, then a blue square moves up"
    found = search.search(text, k=10, candidates=100)
    assert list(found.columns) == ["rank", "video_id", "uri", "score", "first_stage_score",
                                   "start_s", "end_s", "moment_score"]
    assert found["rank"].tolist() == list(range(1, 11))
    lengths = {r["video_id"]: r["duration_s"] for r in
               search.table.to_arrow().select(["video_id", "duration_s"]).to_pylist()}
    for row in found.itertuples():  # each result's moment lies inside its video
        assert 0 <= row.start_s < row.end_s <= lengths[row.video_id] + 1e-6
        assert math.isfinite(row.moment_score)
    model = search.model
    every = []
    for split in ("train", "val", "test"):
        inputs = load_split(model, str(table["data"]), split)
        _, video = encode_split(model, inputs)
        every.append((video, inputs.video_ids))
    scores = torch.cat([model.score(search.encode_texts([text]), v)[0] for v, _ in every])
    ids = [i for _, video_ids in every for i in video_ids]
    # the table stores float16 features: clips of a group differ only in frame order, so
    # near-equal scores may trade places; each returned video must hold the exhaustive
    # score of its rank, and the returned score must be that video's own
    exact = scores[[ids.index(video_id) for video_id in found["video_id"]]]
    assert torch.allclose(exact, scores.sort(descending=True).values[:10], atol=5e-3)
    assert torch.allclose(torch.tensor(found["score"].tolist()), exact, atol=2e-2)
    assert found["score"].is_monotonic_decreasing


def test_searches_asked_together_answer_as_asked_alone(table, keyword_model):
    """Several encoded texts searched together (what a service batches) give each text
    the results its own search gives, with its own k, also where a filter leaves fewer
    rows than the candidates asked."""
    search = VideoSearch(table["db"], "videos", str(table["checkpoint"]),
                         keyword_model=keyword_model)
    texts = ["a red circle moves left", "a blue square moves up, then a circle moves",
             "a shape", "something slides to the right after a square rises"]
    ks = [3, 1, 5, 2]
    for where in (None, "split = 'test'"):
        together, timings = search.search_encoded_many(search.encode_texts(texts), ks, 12,
                                                       where)
        assert set(timings) == {"search_s", "rerank_s", "answer_s"}
        for text, k, found in zip(texts, ks, together, strict=True):
            alone = search.search(text, k=k, candidates=12, where=where)
            assert len(found) == k
            assert found["video_id"].tolist() == alone["video_id"].tolist(), (text, where)
            assert found["score"].tolist() == pytest.approx(alone["score"].tolist(), abs=1e-4)
            assert found["first_stage_score"].tolist() == pytest.approx(
                alone["first_stage_score"].tolist(), abs=1e-5)
    nothing, _ = search.search_encoded_many(search.encode_texts(texts), ks, 12,
                                            "split = 'no such split'")
    assert [list(found.columns) for found in nothing] == [RESULT_COLUMNS] * len(texts)
    assert [len(found) for found in nothing] == [0] * len(texts)


def test_filters_and_refusals(table, keyword_model, checkpoints):
    search = VideoSearch(table["db"], "videos", str(table["checkpoint"]),
                         keyword_model=keyword_model)
    test_videos = search.search("a shape moves", k=6, candidates=50, where="split = 'test'")
    assert len(test_videos) == 6
    rows = lancedb.connect(table["db"]).open_table("videos").to_arrow()
    split_of = dict(zip(rows.column("video_id").to_pylist(), rows.column("split").to_pylist(),
                        strict=True))
    assert {split_of[v] for v in test_videos["video_id"]} == {"test"}
    sneaky = "x'; DROP TABLE videos; --"
    assert len(search.search(sneaky, k=3, candidates=3)) == 3  # text is never SQL
    with pytest.raises(ValueError, match="empty"):
        search.search("   ", k=3)
    with pytest.raises(ValueError, match="at most candidates"):
        search.search("a shape", k=20, candidates=10)
    with pytest.raises(ModelMismatchError, match="re-run pipelines/embed.py"):
        VideoSearch(table["db"], "videos", str(checkpoints[0]), keyword_model=keyword_model)


def test_query_cli_and_evaluate_via_index(table, keyword_model, tmp_path):
    result = run(["pipelines/query.py", "--db", table["db"], "--table", "videos",
                  "--checkpoint", str(table["checkpoint"]), "--text", "a green square moves",
                  "--k", "3", "--candidates", "10", "--json", "--keyword-model", keyword_model])
    assert result.returncode == 0, result.stderr[-3000:]
    records = json.loads(result.stdout)
    assert [r["rank"] for r in records] == [1, 2, 3]
    assert {"video_id", "uri", "score", "first_stage_score"} <= set(records[0])
    refused = run(["pipelines/query.py", "--db", table["db"], "--checkpoint",
                   str(table["checkpoint"]), "--text", "a shape", "--k", "5", "--candidates", "2"])
    assert refused.returncode == 2 and "at most candidates" in refused.stderr

    metrics = {}
    for mode, extra in (("exhaustive", []), ("index", ["--via-index", "--db", table["db"],
                                                       "--keyword-model", keyword_model])):
        out = tmp_path / f"{mode}.json"  # in this process: no Ray, nothing to isolate
        assert evaluate_main(["--data", str(table["data"]), "--checkpoint",
                              str(table["checkpoint"]), "--split", "test", "--json", str(out),
                              *extra]) == 0
        metrics[mode] = json.loads(out.read_text())
    assert metrics["index"]["num_videos"] == metrics["exhaustive"]["num_videos"] == 6
    # Every video is a candidate, so the two stages score every pair as the full model does,
    # from features stored in float16: a caption's rank may move only where its video's
    # exhaustive score lies within that rounding of another video's (clips of a group
    # differ in frame order alone, and this untrained model scores them close).
    model = load_checkpoint(table["checkpoint"])
    inputs = load_split(model, str(table["data"]), "test")
    with torch.no_grad():
        scores = model.score(*encode_split(model, inputs))
    own = scores[torch.arange(len(scores)), [inputs.video_ids.index(v)
                                             for v in inputs.text_video_ids]]
    # (float16 moved this model's scores by 1.2e-5 at most; 1e-4 is ample)
    close = ((scores - own[:, None]).abs() < 1e-4).sum(dim=1) > 1  # own video counted once
    movable = 100 * close.float().mean().item()
    for k in ("R@1", "R@5", "R@10"):
        moved = abs(metrics["index"]["t2v"][k] - metrics["exhaustive"]["t2v"][k])
        assert moved <= movable + 1e-6, (k, moved, movable)


def test_query_cli_errors_are_one_line_and_create_nothing(table, keyword_model, tmp_path,
                                                         capfd):
    """Every refusal is one line of stderr (native libraries' warnings included)."""
    base = ["--checkpoint", str(table["checkpoint"]), "--keyword-model", keyword_model]

    def query(*flags: str) -> tuple[int, str, str]:
        try:
            code = query_main([*base, *flags])
        except SystemExit as exc:  # argparse's one-line refusals
            code = exc.code
        out, err = capfd.readouterr()
        return code, out, err

    missing = tmp_path / "no-db"
    code, _, err = query("--db", str(missing), "--text", "a shape")
    assert (code, err.count("\n")) == (2, 1) and "no LanceDB database" in err
    assert not missing.exists()  # a read creates no folder
    code, _, err = query("--db", table["db"], "--text", "   ")
    assert code == 2 and "--text is empty" in err
    # input checks come before any model loads: no checkpoint is read for an empty text
    code, _, err = query("--db", table["db"], "--text", "", "--checkpoint", str(missing))
    usage, message = err.splitlines()  # argparse's usage line, then the refusal
    assert code == 2 and usage.startswith("usage:") and message.endswith("error: --text is empty")
    code, _, err = query("--db", table["db"], "--text", "a shape",
                         "--keyword-model", str(tmp_path / "no-model"))
    assert (code, err.count("\n")) == (2, 1) and "pass --keyword-model" in err
    code, _, err = query("--db", table["db"], "--text", "a shape", "--where", "split = 'none'")
    assert code == 1 and "no videos found" in err
    code, out, err = query("--db", table["db"], "--text", "a red shape moves " * 200, "--k", "2",
                           "--candidates", "5")
    assert code == 0 and "tokens were not read" in err and err.count("\n") == 1
    assert len(out.strip().splitlines()) == 3  # header and 2 results

    # --where on the command line: the table output is VideoSearch's answer, of that split
    text, where = "a green square moves", "split = 'test'"
    code, out, err = query("--db", table["db"], "--text", text, "--k", "3", "--candidates", "20",
                           "--where", where)
    assert code == 0, err
    header, *lines = out.strip().splitlines()
    assert header.split() == RESULT_COLUMNS
    expected = VideoSearch(table["db"], "videos", str(table["checkpoint"]),
                           keyword_model=keyword_model).search(text, k=3, candidates=20,
                                                               where=where)
    assert [line.split()[1] for line in lines] == list(expected["video_id"])
    rows = lancedb.connect(table["db"]).open_table("videos").to_arrow().to_pandas()
    split_of = dict(zip(rows["video_id"], rows["split"], strict=True))
    assert len(lines) == 3 and {split_of[line.split()[1]] for line in lines} == {"test"}


def test_a_table_from_another_machine_uses_this_machines_keyword_model(table, keyword_model,
                                                                       tmp_path, capfd):
    """A table whose ingest read the sentence model from a folder this machine lacks:
    the query says what to pass (one line, before any search) and works once given it."""
    db = str(tmp_path / "db")
    shutil.copytree(table["db"], db)
    dataset = lancedb.connect(db).open_table("videos").to_lance()
    metadata = {k.decode(): v.decode()
                for k, v in dataset.schema.field("vector").metadata.items()}
    options = json.loads(metadata[KEYWORD_OPTIONS_KEY])
    options["model"] = "/models/on-the-ingest-machine/minilm"
    dataset.update_field_metadata({"vector": {KEYWORD_OPTIONS_KEY: json.dumps(options)}})
    base = ["--db", db, "--checkpoint", str(table["checkpoint"]), "--text", "a red shape"]
    assert query_main(base) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "/models/on-the-ingest-machine/minilm" in err
    assert "of the ingest machine" in err and "pass --keyword-model" in err  # not tried here
    assert query_main([*base, "--keyword-model", keyword_model, "--k", "2"]) == 0
    assert len(capfd.readouterr().out.strip().splitlines()) == 3  # header and 2 results


def test_a_long_lived_search_sees_later_commits(table, keyword_model, tmp_path):
    """With a consistency interval of 0 every search reads the table's newest version;
    without one (LanceDB's default) a search keeps the version it opened."""
    db = str(tmp_path / "db")
    shutil.copytree(table["db"], db)
    fresh = VideoSearch(db, "videos", str(table["checkpoint"]), keyword_model=keyword_model,
                        consistency_interval_s=0)
    stale = VideoSearch(db, "videos", str(table["checkpoint"]), keyword_model=keyword_model,
                        consistency_interval_s=None)
    gone = fresh.search("a shape moves", k=1, candidates=50)["video_id"][0]
    lancedb.connect(db).open_table("videos").delete(f"video_id = '{gone}'")  # another writer
    assert gone not in set(fresh.search("a shape moves", k=10, candidates=50)["video_id"])
    assert gone in set(stale.search("a shape moves", k=10, candidates=50)["video_id"])
    # new rows (as an embed run adds them): a copy of a row under a new id
    videos = lancedb.connect(db).open_table("videos")
    copy = videos.search().limit(1).to_arrow()
    videos.add(copy.set_column(copy.schema.get_field_index("video_id"), "video_id",
                               pa.array(["added-later"])))
    where = "video_id = 'added-later'"
    assert list(fresh.search("a shape moves", k=1, candidates=5, where=where)["video_id"]) == [
        "added-later"]
    assert stale.search("a shape moves", k=1, candidates=5, where=where).empty


def test_the_model_check_reads_the_tables_record_not_its_rows(table, keyword_model, tmp_path,
                                                              capfd):
    """Which model wrote a table is the table's own record (the embed job's commit and its
    schema copy): rows that name another model do not decide it, an empty table is searched
    (and found empty), a table without the record is refused in one line."""
    db = str(tmp_path / "db")
    shutil.copytree(table["db"], db)
    checkpoint = str(table["checkpoint"])
    videos = lancedb.connect(db).open_table("videos")
    rows = videos.to_arrow()
    videos.update(values={"model_id": "another-model"})  # every row, the first included
    search = VideoSearch(db, "videos", checkpoint, keyword_model=keyword_model)
    assert len(search.search("a shape moves", k=3, candidates=10)) == 3

    base = ["--db", db, "--checkpoint", checkpoint, "--keyword-model", keyword_model,
            "--text", "a shape moves"]
    lancedb.connect(db).create_table("unrecorded", rows.replace_schema_metadata(None))
    assert query_main([*base, "--table", "unrecorded"]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "records no model" in err

    videos.delete("true")
    assert query_main(base) == 1
    out, err = capfd.readouterr()
    assert out == "" and err.count("\n") == 1 and "no videos found" in err


def test_example_notebook_runs(table, keyword_model, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    for name, value in {"VTR_DB": table["db"], "VTR_TABLE": "videos",
                        "VTR_CHECKPOINT": str(table["checkpoint"]),
                        "VTR_INGEST": str(table["data"]), "VTR_KEYWORD_MODEL": keyword_model,
                        "VTR_QUERY": "a red circle moves left"}.items():
        monkeypatch.setenv(name, value)  # the kernel inherits them
    notebook = nbformat.read(REPO / "examples" / "query.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO / "examples")}}).execute()
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    texts = " ".join(str(o.get("data", {}).get("text/plain", o.get("text", ""))) for o in outputs)
    assert f"{table['rows']} videos" in texts
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the grid of frames
    cards = [o["data"]["text/html"] for o in outputs if "data:image/jpeg;base64," in
             o.get("data", {}).get("text/html", "")]  # the result cards, with thumbnails
    assert len(cards) == 2 and all(c.count("<img") >= 3 for c in cards)


def test_actor_pools_grow_past_their_start_unless_capped():
    """Pools start with what the cluster holds and grow onto nodes that join; a
    --workers cap bounds both the start and the growth."""
    pool = growing_pool(3)
    assert (pool.min_size, pool.initial_size, pool.max_size) == (1, 3, float("inf"))
    pool = growing_pool(3, most=2)
    assert (pool.min_size, pool.initial_size, pool.max_size) == (1, 2, 2)
    assert growing_pool(0).initial_size == 1


def test_embedding_actor_sizes():
    """One many-threaded actor per node on CPU, leaving a CPU for Ray Data's reads."""
    def sizes(node_cpus, gpus=0.0, **flags):
        config = EmbedConfig(data="d", checkpoint="c", db="db", **flags)
        found = actor_sizes(config, node_cpus, gpus)
        return found.cpus, found.threads, found.actors

    assert sizes([2.0]) == (1.0, 2, 1)
    assert sizes([16.0, 16.0]) == (15.0, 16, 2)
    assert sizes([16.0], cpus_per_worker=4) == (4, 4, 3)
    assert sizes([16.0], cpus_per_worker=4, threads_per_worker=2) == (4, 2, 3)
    assert sizes([16.0], gpus=4, gpus_per_worker=1) == (1.0, 1, 4)


def rewritten_in_columns(db: str) -> None:
    """The table of ``db`` rewritten as tables were before the packed column: one column
    per feature, the same values, its record kept (as an update of such a table finds it)."""
    import lance

    from pipelines.index.rerank_features import FeatureLayout, decode_features
    from pipelines.index.table import keep_state, table_schema, table_state
    from pipelines.ingestion.schemas import VIDEOS

    dataset = lancedb.connect(db).open_table("videos").to_lance()
    state, rows = table_state(dataset), dataset.to_table()
    frames, local = decode_features(rows, 8, local=True)
    layout = FeatureLayout("float16", packed=False)
    schema = table_schema(VIDEOS, 64, 8, json.loads(rows.schema.field("vector").metadata[
        KEYWORD_OPTIONS_KEY.encode()]), layout)
    columns = {**{n: rows.column(n) for n in rows.column_names}, **layout.encode(frames, local)}
    legacy = pa.table({n: columns[n] for n in schema.names}, schema=schema)
    keep_state(lance.write_dataset(legacy, dataset.uri, mode="overwrite",
                                   data_storage_version=FILE_VERSION,
                                   transaction_properties=state.properties()), state)


def test_an_update_keeps_a_table_written_before_the_packed_column(table, keyword_model,
                                                                   tmp_path):
    """A table with one column per feature (written before they were packed into one) is
    updated in place, not rebuilt for its layout, and answers as the packed table does;
    ``--overwrite``, which embeds every video anyway, packs it."""
    db = str(tmp_path / "db")
    shutil.copytree(table["db"], db)
    rewritten_in_columns(db)
    embed = ["pipelines/embed.py", "--data", str(table["data"]), "--checkpoint",
             str(table["checkpoint"]), "--db", db, "--batch-size", "4", "--index-min-rows", "10"]
    kept = run([*embed, "--update"])  # the broken video fails again: exit 1
    assert f"0 videos embedded, 0 deleted, {table['rows']} unchanged, 1 failed" in kept.stdout, \
        kept.stderr[-3000:]
    assert "frame_features" in lancedb.connect(db).open_table("videos").schema.names
    text = "a red circle moves left, then a blue square moves up"
    found = [VideoSearch(d, "videos", str(table["checkpoint"]), keyword_model=keyword_model)
             .search(text, k=table["rows"], candidates=table["rows"]) for d in (table["db"], db)]
    packed_scores, column_scores = (dict(zip(f["video_id"], f["score"], strict=True))
                                    for f in found)
    assert packed_scores.keys() == column_scores.keys()
    assert max(abs(packed_scores[v] - column_scores[v]) for v in packed_scores) < 1e-5
    packed = run([*embed, "--overwrite"])
    assert "table built" in packed.stdout, packed.stderr[-3000:]
    names = lancedb.connect(db).open_table("videos").schema.names
    assert "rerank_features" in names and "frame_features" not in names


def test_int8_features_rank_as_float16_and_a_later_update_keeps_them(table, keyword_model,
                                                                     tmp_path):
    """``--feature-precision int8`` rebuilds a float16 table at half the feature bytes; its
    searches find the same videos at nearly the same scores. A later ``--update`` without
    the flag keeps int8: it embeds nothing (the broken video fails again); its
    ``--index-type HNSW_SQ`` replaces the first (HNSW_FLAT) index over the same rows."""
    db = str(tmp_path / "db")
    shutil.copytree(table["db"], db)
    embed = ["pipelines/embed.py", "--data", str(table["data"]), "--checkpoint",
             str(table["checkpoint"]), "--db", db, "--batch-size", "4", "--index-min-rows", "10",
             "--update"]
    rebuilt = run([*embed, "--feature-precision", "int8"])
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    assert "table built" in rebuilt.stdout and "with float16 features" in rebuilt.stderr
    kept = run([*embed, "--index-type", "HNSW_SQ"])  # the broken video fails again: exit 1
    assert "table updated" in kept.stdout, kept.stderr[-3000:]
    assert f"0 videos embedded, 0 deleted, {table['rows']} unchanged, 1 failed" in kept.stdout
    assert "replacing the table's HNSW_FLAT index with a HNSW_SQ index" in kept.stderr
    assert vector_index_type(lancedb.connect(db).open_table("videos").to_lance()) == "HNSW_SQ"
    rows = lancedb.connect(db).open_table("videos").to_arrow()
    # int8 values of both features, then their per-frame float32 scales' bytes
    assert rows.schema.field("rerank_features").type == pa.list_(pa.int8(), 2 * 8 * (64 + 4))
    assert rows.num_rows == table["rows"]
    text = "a red circle moves left, then a blue square moves up"
    found = [VideoSearch(d, "videos", str(table["checkpoint"]), keyword_model=keyword_model)
             .search(text, k=table["rows"], candidates=table["rows"]) for d in (table["db"], db)]
    half, eight = (dict(zip(f["video_id"], f["score"], strict=True)) for f in found)
    assert half.keys() == eight.keys()
    assert max(abs(half[v] - eight[v]) for v in half) < 5e-3


def test_a_hybrid_search_needs_a_table_with_tags(table, keyword_model, capsys):
    """Only a model with semantic levels writes tags; the query CLI says so in one line."""
    assert query_main(["--db", table["db"], "--table", "videos", "--checkpoint",
                       str(table["checkpoint"]), "--text", "a circle", "--hybrid",
                       "--keyword-model", keyword_model]) == 2
    assert "has no tags" in capsys.readouterr().err


@pytest.mark.parametrize(("model", "overrides", "part"),
                         [("rrn", {}, "relation_gate"),
                          ("lfemi", {"spatial": True}, "spatial.out")],
                         ids=["rrn", "lfemi+spatial"])
def test_a_checkpoint_with_extra_parts_embeds_and_searches_as_it_scores(
        synthetic_data, keyword_model, tmp_path, model, overrides, part):
    """Parts no model has by default reach search: rrn's relation term is rebuilt from the
    stored frame features at search time, and spatial frame features are in what the embed
    job stores. The two-stage search with every video a candidate returns the model's
    exhaustive top 5."""
    from conftest import make_checkpoint

    checkpoint = make_checkpoint(tmp_path / "ckpt", 0, model=model, **overrides)
    db = tmp_path / "db"
    result = run(["pipelines/embed.py", "--data", str(synthetic_data), "--checkpoint",
                  str(checkpoint), "--db", str(db), "--table", "videos", "--split", "test",
                  "--batch-size", "4"])
    assert result.returncode == 0, result.stderr[-3000:]
    search = VideoSearch(str(db), "videos", str(checkpoint), keyword_model=keyword_model)
    assert search.model.config == load_checkpoint(checkpoint).config
    # the part that starts at zero is loaded awake, so it is in the scores compared below
    assert any(w.any() for k, w in search.model.state_dict().items() if k.startswith(part))
    text = "a red circle moves left, then a blue square moves up"
    found = search.search(text, k=5, candidates=1000)
    inputs = load_split(search.model, str(synthetic_data), "test")
    _, video = encode_split(search.model, inputs)
    scores = search.model.score(search.encode_texts([text]), video)[0]
    exact = scores[[inputs.video_ids.index(v) for v in found["video_id"]]]
    # float16 stored features: near-equal scores may trade places, each rank's score holds
    assert torch.allclose(exact, scores.sort(descending=True).values[:5], atol=5e-3)
