"""Paper 2's VQ-VAE DeepJSCC transceiver: ENC → codebook (vector quantiser) → DMC → DEC.

Choi et al., "Semantics Alignment via Split Learning for Resilient Multi-User Semantic
Communication" (arXiv 2310.09394), Sec. II and IV. A transceiver ``T = (ENC, codebook, DEC)``
is a VQ-VAE (van den Oord et al., 2017): the encoder maps an image ``x`` to a latent grid
``z_e``; each latent vector is replaced by its nearest codeword ``e_k`` of a trainable
codebook (an ``nn.Embedding`` of ``K`` codewords), and the *index* ``k`` is the semantic
representation sent over the K-ary discrete memoryless channel (eq. 2). The receiver looks
the received indices up in its codebook and decodes ``x_hat`` (eq. 6). Encoder and decoder
are a few convolutions with ReLU after every layer but the last (Sec. IV).

Layers and freezing (Sec. III-B, Table I). :meth:`VQVAETransceiver.layers` lists the
*layers* in forward order: every encoder convolution, the codebook (embedding), every decoder
convolution. The last ``len(receiver_layers())`` of them — the codebook and the decoder
convolutions — are what SLF downloads from the receiver; "freeze the last ``n`` layers" counts
backwards from the last decoder convolution, so ``n`` runs from 0 (nothing frozen) to
``len(receiver_layers())`` (codebook and decoder frozen; default transceiver: 4, as in the
paper). The encoder always stays trainable: it is the transmitter's own and is never
uploaded. Sizes are ours (the paper's were lost); see ``docs/slf.md`` for how our parameter
counts compare with Table I.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from flwr_semcom.models import MODELS
from flwr_semcom.models.utils import (
    check_image_batch,
    check_positive_int,
    check_state_subset,
    freeze_last_layers,
)

__all__ = ["VQVAETransceiver", "RECEIVER_PREFIXES"]

#: ``state_dict`` key prefixes of the receiver part (what SLF downloads and uploads).
RECEIVER_PREFIXES = ("codebook.", "decoder.")


def _check_channels(name: str, channels: Sequence[int]) -> tuple[int, ...]:
    values = tuple(channels)
    if not values:
        raise ValueError(f"{name} must list at least one channel count, got {list(values)}")
    for c in values:
        check_positive_int(name, c)
    return values


@MODELS.register("vqvae")
class VQVAETransceiver(nn.Module):
    """VQ-VAE DeepJSCC transceiver over a digital (index) channel (paper 2, eq. 1-6).

    Parameters
    ----------
    in_channels
        Image channels (1 for MNIST and for CIFAR-10 turned grayscale).
    enc_channels
        Output channels of the stride-2 ``4x4`` encoder convolutions; ``L`` entries halve the
        image side ``L`` times (28 → 7 for ``L = 2``). A ``1x1`` convolution to ``code_dim``
        follows (the encoder's last layer, no ReLU).
    code_dim
        ``D``, the dimension of a codeword: output channels of ENC, input channels of DEC.
    codebook_size
        ``K``, the number of codewords = the DMC alphabet size.
    dec_channels
        Decoder widths: a ``3x3`` convolution ``D → dec_channels[0]``, then stride-2 ``4x4``
        transposed convolutions ``dec_channels[i-1] → dec_channels[i]`` and a last one to
        ``in_channels`` (no ReLU). Must have as many entries as ``enc_channels``.

    Notes
    -----
    With the defaults (``enc_channels=(16, 32)``, ``code_dim=32``, ``codebook_size=64``,
    ``dec_channels=(64, 88)``) a 28 x 28 image becomes ``7 x 7 = 49`` indices of 6 bits;
    parameters: encoder 9,552; codebook 2,048; decoder 18,496 + 90,200 + 1,409.
    """

    def __init__(
        self,
        in_channels: int = 1,
        enc_channels: Sequence[int] = (16, 32),
        code_dim: int = 32,
        codebook_size: int = 64,
        dec_channels: Sequence[int] = (64, 88),
    ) -> None:
        super().__init__()
        check_positive_int("in_channels", in_channels)
        check_positive_int("code_dim", code_dim)
        check_positive_int("codebook_size", codebook_size)
        if codebook_size < 2:
            raise ValueError(f"codebook_size must be >= 2 (a K-ary channel), got {codebook_size}")
        enc = _check_channels("enc_channels", enc_channels)
        dec = _check_channels("dec_channels", dec_channels)
        if len(enc) != len(dec):
            raise ValueError(
                f"dec_channels must have as many entries as enc_channels ({len(enc)}) so that "
                f"the decoder undoes the encoder's downsampling, got {len(dec)}"
            )
        self.in_channels = in_channels
        self.code_dim = code_dim
        self.codebook_size = codebook_size
        self.downsampling = 2 ** len(enc)

        enc_layers: list[nn.Module] = []
        prev = in_channels
        for c in enc:
            enc_layers += [nn.Conv2d(prev, c, 4, stride=2, padding=1), nn.ReLU()]
            prev = c
        enc_layers.append(nn.Conv2d(prev, code_dim, 1))
        self.encoder = nn.Sequential(*enc_layers)

        self.codebook = nn.Embedding(codebook_size, code_dim)

        dec_layers: list[nn.Module] = [nn.Conv2d(code_dim, dec[0], 3, padding=1), nn.ReLU()]
        for c_in, c_out in zip(dec[:-1], dec[1:]):
            dec_layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]
        dec_layers.append(nn.ConvTranspose2d(dec[-1], in_channels, 4, stride=2, padding=1))
        self.decoder = nn.Sequential(*dec_layers)
        self.reset_parameters()

    # ------------------------------------------------------------------ parameters / layers
    def reset_parameters(self) -> None:
        """Re-initialise every layer (PyTorch defaults; codebook uniform in ``±1/K``).

        SLF with ``n = 0`` re-initialises the virtual transceiver before re-training it
        (paper 2, Sec. III-B).
        """
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                module.reset_parameters()
        bound = 1.0 / self.codebook_size
        nn.init.uniform_(self.codebook.weight, -bound, bound)

    @torch.no_grad()
    def init_codebook_from(self, x: Tensor, generator: torch.Generator | None = None) -> None:
        """Set the codewords to randomly chosen encoder outputs of the images ``x``.

        A data-dependent start (ours, common VQ-VAE practice) that leaves fewer codewords
        unused than the uniform start; used before (re-)training from scratch.
        """
        check_image_batch(x, self.in_channels)
        flat = self.encoder(x).permute(0, 2, 3, 1).reshape(-1, self.code_dim)
        n, k = flat.shape[0], self.codebook_size
        if n >= k:  # distinct latent vectors when there are enough
            pick = torch.randperm(n, generator=generator)[:k]
        else:
            pick = torch.randint(0, n, (k,), generator=generator)
        pick = pick.to(flat.device)
        self.codebook.weight.copy_(flat[pick])

    def layers(self) -> list[tuple[str, nn.Module]]:
        """All layers in forward order: ``[("encoder.0", conv), …, ("codebook", emb), …]``.

        Names are the modules' ``state_dict`` prefixes. Only layers with parameters count
        (convolutions and the embedding; ReLUs do not).
        """
        out: list[tuple[str, nn.Module]] = []
        for i, m in enumerate(self.encoder):
            if isinstance(m, nn.Conv2d):
                out.append((f"encoder.{i}", m))
        out.append(("codebook", self.codebook))
        for i, m in enumerate(self.decoder):
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                out.append((f"decoder.{i}", m))
        return out

    def receiver_layers(self) -> list[tuple[str, nn.Module]]:
        """The layers SLF downloads, freezes and uploads: the codebook and the decoder."""
        return [(name, m) for name, m in self.layers() if name.startswith(("codebook", "decoder"))]

    @property
    def max_freeze(self) -> int:
        """Largest valid ``n`` for :meth:`freeze_last` (= number of receiver layers)."""
        return len(self.receiver_layers())

    def check_freeze(self, n: object) -> int:
        """Return ``n`` as an int, or raise ``ValueError`` naming the valid range."""
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= self.max_freeze:
            raise ValueError(
                f"freeze_layers (n) must be in [0, {self.max_freeze}] for this transceiver "
                f"(codebook + {self.max_freeze - 1} decoder convolutions), got {n!r}"
            )
        return n

    def freeze_last(self, n: int) -> list[str]:
        """Make every parameter trainable, then freeze the last ``n`` layers.

        Counting starts at the last decoder convolution (paper 2, Sec. III-B: "freezes the
        n-th layers … counting from the last layer").

        Parameters
        ----------
        n
            Number of layers to freeze, in ``[0, max_freeze]``.

        Returns
        -------
        list of str
            Names of the frozen layers, last first.

        Raises
        ------
        ValueError
            If ``n`` is outside ``[0, max_freeze]``.
        """
        return freeze_last_layers(self, self.layers(), self.check_freeze(n))

    def receiver_state_dict(self) -> dict[str, Tensor]:
        """Codebook and decoder tensors (detached copies): what SLF step 1 downloads."""
        return {
            k: v.detach().clone()
            for k, v in self.state_dict().items()
            if k.startswith(RECEIVER_PREFIXES)
        }

    def unfrozen_receiver_state_dict(self) -> dict[str, Tensor]:
        """Trainable codebook/decoder parameters (detached copies): what SLF step 3 uploads."""
        return {
            name: p.detach().clone()
            for name, p in self.named_parameters()
            if p.requires_grad and name.startswith(RECEIVER_PREFIXES)
        }

    def load_receiver_state_dict(self, state: dict[str, Tensor], partial: bool = False) -> None:
        """Install codebook/decoder tensors; with ``partial`` a subset (an SLF upload).

        Raises
        ------
        ValueError
            On a key outside the receiver part, a missing key (unless ``partial``) or a shape
            mismatch.
        """
        check_state_subset(
            self.receiver_state_dict(), state, partial=partial, what="receiver (codebook/decoder)"
        )
        self.load_state_dict(state, strict=False)

    # ------------------------------------------------------------------ vector quantisation
    def quantize(self, z_e: Tensor) -> Tensor:
        """Indices ``[B, h, w]`` of the nearest codewords (squared Euclidean distance)."""
        B, D, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, D)
        codes = self.codebook.weight
        dist = (
            flat.pow(2).sum(1, keepdim=True)
            - 2.0 * flat @ codes.t()
            + codes.pow(2).sum(1).unsqueeze(0)
        )
        return dist.argmin(dim=1).reshape(B, h, w)

    def codewords(self, indices: Tensor) -> Tensor:
        """Codewords ``[B, D, h, w]`` of indices ``[B, h, w]`` (the receiver's look-up)."""
        return self.codebook(indices).permute(0, 3, 1, 2)

    def encode(self, x: Tensor) -> Tensor:
        """Transmitter: image ``[B, C, H, W]`` → codeword indices ``[B, H/s, W/s]``."""
        check_image_batch(x, self.in_channels)
        return self.quantize(self.encoder(x))

    def decode(self, indices: Tensor) -> Tensor:
        """Receiver: (received) indices ``[B, h, w]`` → reconstruction ``[B, C, H, W]``."""
        return self.decoder(self.codewords(indices))

    def forward(
        self,
        x: Tensor,
        channel: nn.Module | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Any]:
        """Encode, quantise, send the indices through ``channel``, decode (eq. 1-6).

        Parameters
        ----------
        x
            Images ``[B, in_channels, H, W]`` with ``H`` and ``W`` divisible by the
            downsampling factor ``2 ** len(enc_channels)``.
        channel
            An index channel (``DiscreteMemorylessChannel``); ``None`` = error-free.
        generator
            Random generator passed to the channel.

        Returns
        -------
        dict
            ``z_e`` encoder output ``[B, D, h, w]``; ``z_q`` its nearest codewords (gradient
            reaches the codebook); ``indices`` ``[B, h, w]`` sent; ``indices_hat`` received;
            ``z_q_hat`` received codewords with the straight-through estimator (value
            ``e[indices_hat]``, gradient copied to ``z_e``); ``x_hat`` reconstruction.
        """
        check_image_batch(x, self.in_channels)
        if x.shape[-1] % self.downsampling or x.shape[-2] % self.downsampling:
            raise ValueError(
                f"image height and width must be divisible by {self.downsampling}, "
                f"got {tuple(x.shape[-2:])}"
            )
        z_e = self.encoder(x)
        with torch.no_grad():
            indices = self.quantize(z_e)
        z_q = self.codewords(indices)
        indices_hat = indices if channel is None else channel(indices, generator=generator)
        received = z_q if channel is None else self.codewords(indices_hat)
        z_q_hat = z_e + (received - z_e).detach()
        return {
            "z_e": z_e,
            "z_q": z_q,
            "indices": indices,
            "indices_hat": indices_hat,
            "z_q_hat": z_q_hat,
            "x_hat": self.decoder(z_q_hat),
        }

    def extra_repr(self) -> str:
        return (
            f"code_dim={self.code_dim}, codebook_size={self.codebook_size}, "
            f"max_freeze={self.max_freeze}"
        )
