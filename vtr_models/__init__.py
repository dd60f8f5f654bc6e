"""Text-video retrieval models: a plain PyTorch library on open_clip (no Ray, no storage I/O)."""
