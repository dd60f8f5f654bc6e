"""Training and evaluation: (video, caption) pairs from the ingest output, the
per-worker Ray Train loop, batch sampling and split metrics."""
