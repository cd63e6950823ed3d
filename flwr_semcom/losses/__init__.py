"""Losses, one per file (lightly style); see docs/building-blocks.md for the equations."""

from .barlow_twins import BarlowTwinsLoss
from .decur import DeCURLoss
from .nt_xent import NTXentLoss
from .vqvae import VQVAELoss

__all__ = ["BarlowTwinsLoss", "DeCURLoss", "NTXentLoss", "VQVAELoss"]
