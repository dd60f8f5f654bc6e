"""Batches of a worker's cached training pairs: random, or with hard negatives.

A contrastive loss learns only the distinctions its batches ask for. With
random batches from a large set, captions that differ in one detail (word
order, a direction) rarely meet, so a model can lower the loss without ever
learning that detail. Hard-negative batches are built from random seed
captions, each followed by its nearest captions (cosine of caption-token
TF-IDF, within the worker's shard), so near-duplicates share a batch. The
same batches serve every model; nothing here knows what the captions mean.
"""

from __future__ import annotations

import numpy as np
import torch


def caption_neighbours(tokens: torch.Tensor, count: int, pad_id: int = 0) -> np.ndarray:
    """``[N, count]`` indices of each caption's nearest other captions by token TF-IDF."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.neighbors import NearestNeighbors

    documents = [[t for t in row if t != pad_id] for row in tokens.tolist()]
    vectors = TfidfVectorizer(analyzer=lambda doc: doc).fit_transform(documents)
    wanted = min(count + 1, len(documents))
    search = NearestNeighbors(n_neighbors=wanted, metric="cosine").fit(vectors)
    found = search.kneighbors(vectors, return_distance=False)
    neighbours = np.empty((len(documents), wanted - 1), dtype=np.int64)
    for i, row in enumerate(found):
        others = [j for j in row if j != i]  # a caption is not its own neighbour
        neighbours[i] = others[: wanted - 1]
    return neighbours


def random_batches(num_rows: int, batch_size: int, generator: torch.Generator) -> list:
    """Row indices of full batches of a random permutation (the last partial batch dropped)."""
    order = torch.randperm(num_rows, generator=generator)
    return [order[i : i + batch_size] for i in range(0, num_rows - batch_size + 1, batch_size)]


def neighbour_batches(neighbours: np.ndarray, batch_size: int,
                      generator: torch.Generator) -> list:
    """Full batches of random seed rows, each followed by its not-yet-used neighbours.

    Every row is used at most once per epoch, as with random batches; seeds
    come in a new random order each epoch, so batch compositions vary.
    """
    used = np.zeros(len(neighbours), dtype=bool)
    rows: list[int] = []
    for seed in torch.randperm(len(neighbours), generator=generator).tolist():
        if used[seed]:
            continue
        for row in (seed, *neighbours[seed].tolist()):
            if not used[row]:
                used[row] = True
                rows.append(row)
    order = torch.tensor(rows, dtype=torch.long)
    # chunks of the concatenation: a neighbourhood cut at a batch edge loses only that edge
    return [order[i : i + batch_size] for i in range(0, len(rows) - batch_size + 1, batch_size)]
