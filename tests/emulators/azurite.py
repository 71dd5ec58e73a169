"""Placeholder: filled in by the azurite work."""
