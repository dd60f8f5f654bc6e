"""The search index: the LanceDB table (`table` owns its schema, metadata and model
identity), the video encoder that fills it, and two-stage search over it."""
