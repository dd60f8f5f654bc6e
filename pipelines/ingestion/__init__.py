"""Ingestion: manifests in, decoded frames and keywords out. `output` owns the ingest
output (its layout, versions, settings and readers); every other job reads through it."""
