"""Datasets that produce an ingest manifest: MSR-VTT, the synthetic order benchmark,
and the offline sample videos and sentence model."""
