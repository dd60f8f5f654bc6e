"""KeyBERT keywords with the real MiniLM sentence model, loaded offline."""

from __future__ import annotations

import pytest
import simplemma

from pipelines.keywords import (
    KeywordExtractor,
    KeywordModelError,
    KeywordOptions,
    lemmatise,
    stop_word_list,
)


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
