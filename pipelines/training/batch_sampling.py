"""Batches of a worker's cached training pairs: random, or with hard negatives.

A contrastive loss learns only the distinctions its batches ask for. With
random batches from a large set, captions that differ in one detail (word
order, a direction) rarely meet, so a model can lower the loss without ever
learning that detail. Hard-negative batches are built from random seed
captions, each followed by its nearest neighbours within the worker's shard,
so near-duplicates share a batch. Neighbours are the nearest captions (cosine
of caption-token TF-IDF: fixed, and the same for every model), or captions of
the nearest videos by the model's own first-stage video vectors, mined again
each epoch: the clips the model cannot yet tell apart. Captions that differ
only in the order of their words are often far apart by TF-IDF, which is
dominated by the words each caption happens to use; clips made of the same
pictures in another order sit together in the video space.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F


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


def video_neighbours(video_keys: torch.Tensor, vectors: Callable[[torch.Tensor], torch.Tensor],
                     count: int, generator: torch.Generator, encode_batch: int = 64,
                     chunk: int = 1024) -> np.ndarray:
    """``[N, count]``: for each row, one random row of each of its video's ``count``
    nearest other videos (cosine of ``vectors``).

    ``video_keys`` ``[N]`` names each row's video (rows of one video share it);
    ``vectors(rows)`` returns the ``[len(rows), D]`` video vectors of those rows, and
    is called on at most ``encode_batch`` rows at a time, once per distinct video (on
    its first row). A shard with fewer than ``count + 1`` videos gives every other
    video.
    """
    keys, first_row, video_of_row = np.unique(video_keys.numpy(), return_index=True,
                                              return_inverse=True)
    wanted = min(count, len(keys) - 1)
    embedded = torch.cat([
        F.normalize(vectors(torch.as_tensor(first_row[i : i + encode_batch])).float(), dim=-1)
        for i in range(0, len(keys), encode_batch)])
    nearest = torch.empty(len(keys), wanted, dtype=torch.long)
    for i in range(0, len(keys), chunk):  # a chunk x videos cosine block at a time
        cosine = embedded[i : i + chunk] @ embedded.T
        cosine[torch.arange(len(cosine)), torch.arange(i, i + len(cosine))] = -float("inf")
        nearest[i : i + chunk] = cosine.topk(wanted, dim=1).indices
    # rows sorted by video: video v's rows are by_video[starts[v] : starts[v] + counts[v]]
    by_video = np.argsort(video_of_row, kind="stable")
    counts = np.bincount(video_of_row)
    starts = np.cumsum(counts) - counts
    others = nearest.numpy()[video_of_row]  # [N, wanted] each row's neighbour videos
    picks = torch.rand(len(video_keys), wanted, generator=generator).numpy()
    return by_video[starts[others] + (picks * counts[others]).astype(np.int64)]


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
