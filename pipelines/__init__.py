r"""Ray jobs of the video search system: ingest, train, embed and query, with their storage I/O."""
