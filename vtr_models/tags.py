"""Semantic tags of a caption at three levels: entity, action and relationship (seeds 001, 003).

Seeds 001 and 003 mine tags from the caption corpus and have the model predict
them. Their taggers are full part-of-speech parsers; no parser with a bundled
English model installs from PyPI and runs offline (spaCy's and NLTK's models,
and Stanza's, are downloaded at run time). This module is a documented rule
instead, over LemmInflect's lexicon (PyPI ``lemminflect``, MIT, its data from
the NLM SPECIALIST Lexicon, shipped in the wheel): the lexicon says which parts
of speech a word can be and gives each one's lemma, and a small noun-phrase
rule picks one:

- *relationship*: a closed list of prepositions, directions and order words
  (``RELATION_WORDS``), direction variants folded (``leftward`` -> ``left``);
- a noun phrase starts at a determiner or number, at the start of a clause (the
  caption's start, after ``and``, ``then``, ``after``, a comma ...) and after a
  verb; in it, words that can be adjectives and precede a word that can be a
  noun are modifiers, and the next word is its head: modifiers and heads are
  *entity* tags (``red``, ``circle``; a colour or size says which thing it is);
- outside a noun phrase, a word that can be a verb is an *action* tag, lemmatised
  (``slides`` -> ``slide``), and any other word that can be a noun an entity;
- stop words (pronouns, auxiliaries, conjunctions) and adverbs are no tag.

Words the lexicon does not know are nouns (``frisbee``). The rule is tested on
captions whose tags are known (``tests/test_semantic_levels.py``).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

TAG_LEVELS = ("entity", "action", "relationship")


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


DIRECTIONS = {"left": "left", "leftward": "left", "leftwards": "left", "right": "right",
              "rightward": "right", "rightwards": "right", "up": "up", "upward": "up",
              "upwards": "up", "down": "down", "downward": "down", "downwards": "down",
              "forward": "forward", "forwards": "forward", "backward": "backward",
              "backwards": "backward", "clockwise": "clockwise", "counterclockwise":
              "counterclockwise", "anticlockwise": "counterclockwise"}
PREPOSITIONS = _words(
    "about above across against along among around at behind below beneath beside between "
    "beyond by from in inside into near of off on onto out outside over past through "
    "throughout to toward towards under underneath until upon with within without")
ORDER_WORDS = _words(
    "after afterwards afterward before then first second third next later finally while "
    "meanwhile once again when until during last earlier subsequently")
RELATION_WORDS = frozenset(DIRECTIONS) | PREPOSITIONS | ORDER_WORDS
_FOLD = {**DIRECTIONS, "towards": "toward", "afterwards": "after", "afterward": "after"}
CLAUSE_STARTS = _words("and then after before while when once as meanwhile")
DETERMINERS = _words(
    "a an the this that these those some another each every its his her their our my your "
    "one two three four five six seven eight nine ten several many few")
STOP_WORDS = _words(
    "and or but nor so is are was were be been being am has have had do does did it he she "
    "they we i you him them us me who which what there here not no very also just as "
    "can could will would should may might must")
_WORD = re.compile(r"[a-z]+")


def _lemmas(word: str) -> dict[str, tuple[str, ...]]:
    from lemminflect import getAllLemmas  # a lexicon lookup; never the OOV model's pickle

    return getAllLemmas(word)


def caption_tags(caption: str) -> dict[str, list[str]]:
    """The caption's tags per level, in caption order, each once (see the module doc)."""
    tags: dict[str, list[str]] = {level: [] for level in TAG_LEVELS}
    words = _WORD.findall(caption.lower().replace(",", " and "))
    phrase = True  # a noun phrase may start here
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        if word in RELATION_WORDS:
            tags["relationship"].append(_FOLD.get(word, word))
            phrase = word in CLAUSE_STARTS or word in PREPOSITIONS or phrase
            continue
        if word in DETERMINERS or word in CLAUSE_STARTS:
            phrase = True
            continue
        if word in STOP_WORDS:
            continue
        pos = _lemmas(word)
        if phrase and (not pos or "NOUN" in pos or "ADJ" in pos):
            while _modifies(word, pos) and _continues_phrase(words, i):
                tags["entity"].append(_entity(word, pos))  # a modifier: a later word heads
                word, pos = words[i], _lemmas(words[i])
                i += 1
            tags["entity"].append(_entity(word, pos))
            phrase = False
        elif "VERB" in pos:
            tags["action"].append(pos["VERB"][0])
            phrase = True  # its object
        elif not pos or "NOUN" in pos:
            tags["entity"].append(_entity(word, pos))
    return {level: list(dict.fromkeys(found)) for level, found in tags.items()}


def _entity(word: str, pos: dict[str, tuple[str, ...]]) -> str:
    """An entity tag: the noun's lemma (``dogs`` -> ``dog``), else the adjective's, else
    the word (unknown to the lexicon)."""
    return (pos.get("NOUN") or pos.get("ADJ") or (word,))[0]


def _modifies(word: str, pos: dict[str, tuple[str, ...]]) -> bool:
    """Whether a word can modify a noun after it: an adjective, or a noun in its singular
    form (``cyan`` circle, ``guitar`` player; not ``dogs`` run)."""
    return "ADJ" in pos or not pos or word in pos.get("NOUN", ())


def _content(word: str) -> dict[str, tuple[str, ...]] | None:
    """The lexicon's readings of a content word; None for a closed-class word."""
    if word in RELATION_WORDS or word in DETERMINERS or word in STOP_WORDS:
        return None
    return _lemmas(word)


def _continues_phrase(words: list[str], i: int) -> bool:
    """Whether ``words[i]`` continues a noun phrase (the word before it then modifies):
    it can be a noun, and unless a verb follows it, it is not an inflected verb
    (``circle`` in "red circle slides", not ``slides``; ``circles`` in "red circles
    move")."""
    pos = _content(words[i]) if i < len(words) else None
    if pos is None or (pos and "NOUN" not in pos):
        return False
    inflected_verb = words[i] not in pos.get("VERB", (words[i],))
    after = _content(words[i + 1]) if i + 1 < len(words) else None
    return not inflected_verb or bool(after and "VERB" in after)


def tag_vocabulary(captions: Iterable[str], size: int,
                   levels: Iterable[str] = TAG_LEVELS) -> tuple[tuple[str, ...], ...]:
    """Per level, the ``size`` tags found in the most captions (ties alphabetical): what
    the model learns to predict. A tag counts once per caption."""
    counts = {level: Counter() for level in levels}
    for caption in captions:
        found = caption_tags(caption)
        for level, counter in counts.items():
            counter.update(found[level])
    return tuple(tuple(tag for tag, _ in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
                       [:size]) for counter in counts.values())


def tag_targets(caption: str, vocabulary: tuple[tuple[str, ...], ...],
                levels: Iterable[str] = TAG_LEVELS) -> list[float]:
    """The caption's multi-hot targets over every level's vocabulary, concatenated."""
    found = caption_tags(caption)
    return [float(tag in found[level]) for level, vocab in zip(levels, vocabulary, strict=True)
            for tag in vocab]
