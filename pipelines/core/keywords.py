"""Caption keywords: KeyBERT over a sentence-transformers model, lemmatised with simplemma.

docs/method.md S1: K keywords of up to L words per caption, extracted with a
multilingual MiniLM by default, then lemmatised so that "dogs" and "dog" are one
keyword. simplemma ships its dictionaries inside the package (no download) and
covers the 50+ languages of the default model.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

DEFAULT_MODEL = "paraphrase-multilingual-MiniLM-L12-v2"
#: words of scikit-learn's English stop-word list that say where or which way something
#: moves: in video captions they are content ("a ball rolls down"), so ``english-motion``
#: keeps them as keyword candidates
DIRECTION_WORDS = frozenset({
    "up", "down", "above", "below", "over", "under", "top", "bottom", "front", "behind",
    "back", "across", "around", "into", "onto", "toward", "towards", "off", "out",
})
STOP_WORD_LISTS = ("english-motion", "english", "none")
#: ``--keyword-model`` of the jobs that query a table (query, evaluate --via-index)
QUERY_KEYWORD_MODEL_HELP = (
    "this machine's copy of the ingest's keyword sentence model: a folder, or a hub name "
    "in the local Hugging Face cache (default: the model the table records, by name, or "
    "by folder where this machine has it)")


class KeywordModelError(RuntimeError):
    """The sentence model could not be loaded; the message says how to fix it."""


@dataclass(frozen=True)
class KeywordOptions:
    """KeyBERT settings shared by every caption of a job."""

    model: str = DEFAULT_MODEL
    num_keywords: int = 5
    max_ngram: int = 2
    use_mmr: bool = True
    diversity: float = 0.5
    stop_words: str | None = "english-motion"
    languages: tuple[str, ...] = ("en",)

    def to_dict(self) -> dict:
        """JSON-ready settings: what the ingest output's run log and the table record."""
        return {**dataclasses.asdict(self), "languages": list(self.languages)}

    @classmethod
    def from_dict(cls, values: dict | None) -> KeywordOptions:
        """The options ``to_dict`` recorded (defaults for what an older record lacks)."""
        values = dict(values or {})
        if "languages" in values:
            values["languages"] = tuple(values["languages"])
        return cls(**values)


def load_sentence_model(name_or_path: str):
    """A SentenceTransformer on the CPU, from a local folder or a hub name.

    Raises :class:`KeywordModelError` with instructions when it cannot load, so
    a job stops before any work instead of failing on every actor.
    """
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a bar per load, in every actor's log
    try:
        return SentenceTransformer(name_or_path, device="cpu")
    except Exception as exc:  # noqa: BLE001 - any load failure gets the same advice
        where = "folder" if os.path.isdir(name_or_path) else "model name"
        raise KeywordModelError(
            f"cannot load the keyword model {name_or_path!r} ({where}): "
            f"{type(exc).__name__}: {exc}\n"
            "Without network access, download the sentence-transformers model once "
            f"(e.g. `huggingface-cli download sentence-transformers/{DEFAULT_MODEL} "
            "--local-dir /models/minilm`) and pass --keyword-model /models/minilm."
        ) from exc


def query_keyword_model(recorded: str, given: str | None = None) -> str:
    """The sentence model a query extracts keywords with: ``given`` (``--keyword-model``)
    if any, else the one the ingest recorded, by name or by a folder this machine has.

    A recorded hub name (``sentence-transformers/all-MiniLM-L6-v2``) loads on any
    machine from its Hugging Face cache. A recorded folder is the ingest
    machine's path: valid here only on a shared mount, otherwise the caller
    must say where this machine keeps the model, and this error says so.
    """
    if given:
        return given
    path = os.path.expanduser(recorded)
    if os.path.isabs(path) and not os.path.isdir(path):
        raise KeywordModelError(
            f"the table's keywords were made with the sentence model in folder {recorded!r} "
            "of the ingest machine, which this machine does not have: pass --keyword-model "
            "(keyword_model=) with this machine's copy of that model, or ingest with a model "
            "name (e.g. sentence-transformers/all-MiniLM-L6-v2), which each machine finds "
            "in its Hugging Face cache")
    return recorded


def stop_word_list(name: str | None) -> str | list[str] | None:
    """What KeyBERT's vectoriser takes for one of :data:`STOP_WORD_LISTS` (or None)."""
    if name == "english-motion":
        from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

        return sorted(ENGLISH_STOP_WORDS - DIRECTION_WORDS)
    return None if name in (None, "none") else name


def lemmatise(phrase: str, languages: tuple[str, ...]) -> str:
    """Lemmatise every word of a keyword phrase."""
    import simplemma

    lang = languages[0] if len(languages) == 1 else languages
    return " ".join(simplemma.lemmatize(word, lang=lang) for word in phrase.split())


class KeywordExtractor:
    """Batched keyword extraction; build once per process (it holds the model)."""

    def __init__(self, options: KeywordOptions, model=None) -> None:
        from keybert import KeyBERT

        self.options = options
        self.keybert = KeyBERT(model=model or load_sentence_model(options.model))

    def __call__(self, captions: list[str]) -> list[list[str]]:
        """Lemmatised keywords of each caption, best first, without repeats."""
        if not captions:
            return []
        opts = self.options
        found = self.keybert.extract_keywords(
            captions,
            keyphrase_ngram_range=(1, opts.max_ngram),
            top_n=opts.num_keywords,
            use_mmr=opts.use_mmr,
            diversity=opts.diversity,
            stop_words=stop_word_list(opts.stop_words),
        )
        if len(captions) == 1:  # KeyBERT unwraps the list for a single document
            found = [found]
        return [
            list(dict.fromkeys(lemmatise(word, opts.languages) for word, _ in pairs))
            for pairs in found
        ]
