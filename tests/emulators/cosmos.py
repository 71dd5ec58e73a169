"""Placeholder: filled in by the cosmos work."""
