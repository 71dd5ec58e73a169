"""Placeholder: filled in by the embeddings work."""
