"""KeyBERT keywords with the real MiniLM sentence model, loaded offline."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import simplemma

from pipelines.core.keywords import (
    KeywordExtractor,
    KeywordModelError,
    KeywordOptions,
    lemmatise,
    query_keyword_model,
    stop_word_list,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def extractor(keyword_model):
    return KeywordExtractor(KeywordOptions(model=keyword_model, num_keywords=4, max_ngram=2))


def test_keywords_are_lemmatised_words_of_the_caption(extractor):
    captions = [
        "two dogs are catching frisbees on the sunny beach",
        "children were riding bicycles through the crowded streets",
        "a chef slices onions",
    ]
    results = extractor(captions)
    assert len(results) == 3
    for caption, keywords in zip(captions, results, strict=True):
        assert 1 <= len(keywords) <= 4
        lemmas = {simplemma.lemmatize(w, lang="en") for w in caption.lower().split()}
        for keyword in keywords:
            assert set(keyword.split()) <= lemmas, (keyword, caption)
    assert any("dog" in k.split() for k in results[0])
    assert "dogs" not in " ".join(results[0]).split()  # lemmatised, not inflected
    assert any("bicycle" in k.split() for k in results[1])


def test_single_caption_batch(extractor):
    (keywords,) = extractor(["a dog catches a frisbee"])
    assert keywords and all(isinstance(k, str) for k in keywords)


def test_lemmatise_every_word_of_a_phrase():
    assert lemmatise("dogs catching frisbees", ("en",)) == "dog catch frisbee"


def test_unloadable_model_says_how_to_fix(tmp_path):
    with pytest.raises(KeywordModelError, match="--keyword-model"):
        KeywordExtractor(KeywordOptions(model=str(tmp_path / "no-such-model")))


def test_direction_words_can_be_keywords(keyword_model):
    """``english-motion`` (the default) keeps the words that say which way things move; the
    whole English list would drop them before KeyBERT ranks anything."""
    assert {"up", "down", "behind"}.isdisjoint(stop_word_list("english-motion"))
    assert {"the", "a", "and"} <= set(stop_word_list("english-motion"))
    caption = ["the ball rolls down"]
    every = dict(model=keyword_model, num_keywords=10, max_ngram=1, use_mmr=False)
    (motion,) = KeywordExtractor(KeywordOptions(**every))(caption)
    (english,) = KeywordExtractor(KeywordOptions(**every, stop_words="english"))(caption)
    assert "down" in motion and "down" not in english
    assert "the" not in motion


def test_a_query_finds_the_keyword_model_by_flag_by_name_or_by_a_folder_it_has(tmp_path,
                                                                              keyword_model):
    name = "sentence-transformers/all-MiniLM-L6-v2"
    assert query_keyword_model(name) == name  # a name: every machine's own cache
    assert query_keyword_model(keyword_model) == keyword_model  # a folder this machine has
    elsewhere = "/models/on-the-ingest-machine/minilm"
    assert query_keyword_model(elsewhere, given=keyword_model) == keyword_model
    with pytest.raises(KeywordModelError, match="pass --keyword-model") as refused:
        query_keyword_model(elsewhere)
    assert elsewhere in str(refused.value) and "\n" not in str(refused.value)


def test_a_model_name_loads_offline_from_the_hugging_face_cache(tmp_path, keyword_model):
    """What ``huggingface-cli download sentence-transformers/all-MiniLM-L6-v2`` leaves in
    a machine's cache is found by that name, with no network."""
    repo = tmp_path / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2"
    revision = "0" * 40
    shutil.copytree(keyword_model, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    code = ("from pipelines.core.keywords import KeywordExtractor, KeywordOptions; "
            "print(KeywordExtractor(KeywordOptions("
            "model='sentence-transformers/all-MiniLM-L6-v2', num_keywords=2))"
            "(['a dog catches a frisbee on the beach']))")
    found = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
    assert found.returncode == 0, found.stderr[-3000:]
    assert "frisbee" in found.stdout
    env["HF_HUB_CACHE"] = str(tmp_path / "empty")  # not in the cache: a clear refusal
    missing = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0 and "KeywordModelError" in missing.stderr


def test_keyword_options_round_trip_through_json():
    options = KeywordOptions(model="some/model", num_keywords=3, stop_words=None,
                             languages=("en", "de"))
    recorded = json.loads(json.dumps(options.to_dict()))  # as the run log and table keep it
    assert recorded["languages"] == ["en", "de"]
    assert KeywordOptions.from_dict(recorded) == options
    assert KeywordOptions.from_dict(None) == KeywordOptions()  # a table that recorded none
    assert KeywordOptions.from_dict({"num_keywords": 2}) == KeywordOptions(num_keywords=2)
