"""Losses, one per file (lightly style); see docs/building-blocks.md for the equations."""
