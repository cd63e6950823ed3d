"""Models: modality encoders, JSCC heads, server decoder, VQ-VAE transceiver, classifier.

Each model returns a dict (CompressAI style) that losses and metrics consume by key.
"""

from flwr_semcom.registry import Registry

MODELS: Registry = Registry("model")

# Imported after MODELS exists: the modules register themselves with it.
from flwr_semcom.models import classifier, decoder, encoders, vqvae  # noqa: E402,F401
