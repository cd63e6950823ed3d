"""Shared pieces of the channel models: validation, complex packing, power normalisation.

Analog channels (paper 1, Zhao et al., arXiv 2503.13940, Sec. II eq. 2) carry a real tensor
``[B, 2k]`` read as ``k`` complex symbols per sample: the real parts are ``x[:, :k]`` and the
imaginary parts ``x[:, k:]``. Each sample is normalised to unit average power per complex
symbol before the channel (:func:`power_normalize`), so that the SNR of a channel is
``1 / sigma^2`` with ``sigma^2 = 10^(-snr_db / 10)`` the variance of the complex noise
``CN(0, sigma^2)`` (``sigma^2 / 2`` per real part).
"""

from __future__ import annotations

import math
from numbers import Real

import torch
from torch import Tensor, nn

SnrSpec = float | Tensor
"""An SNR in dB: a Python number (all samples) or a tensor of shape ``[]`` or ``[B]``."""

_POWER_FLOOR = 1e-12
"""Smallest per-sample power divided by: an all-zero sample stays all zero."""


def validate_snr_db(snr_db: object) -> SnrSpec:
    """Check an SNR in dB and return it as a ``float`` or a detached float tensor.

    Parameters
    ----------
    snr_db
        A finite real number, or a tensor of shape ``[]`` or ``[B]`` with finite entries.

    Returns
    -------
    float or Tensor
        ``float(snr_db)`` for numbers; a detached floating-point copy for tensors.

    Raises
    ------
    ValueError
        If the value is not a real number / real tensor, has more than one dimension, or has
        a NaN or infinite entry.
    """
    if isinstance(snr_db, Tensor):
        if snr_db.is_complex() or snr_db.dtype == torch.bool:
            raise ValueError(
                f"snr_db must be a finite real number or a real tensor of shape [] or [B], "
                f"got a tensor of dtype {snr_db.dtype}"
            )
        if snr_db.dim() > 1:
            raise ValueError(
                f"snr_db must be a number or a tensor of shape [] or [B], "
                f"got shape {list(snr_db.shape)}"
            )
        value = snr_db.detach().to(
            torch.get_default_dtype() if not snr_db.is_floating_point() else snr_db.dtype
        )
        if not bool(torch.isfinite(value).all()):
            bad = value[~torch.isfinite(value)].flatten()[0].item()
            raise ValueError(f"snr_db must be finite (a real number in dB), got {bad}")
        return value.clone()
    if isinstance(snr_db, bool) or not isinstance(snr_db, Real):
        raise ValueError(f"snr_db must be a finite real number in dB, got {snr_db!r}")
    value_f = float(snr_db)
    if not math.isfinite(value_f):
        raise ValueError(f"snr_db must be a finite real number in dB, got {value_f}")
    return value_f


def check_analog_input(x: Tensor) -> int:
    """Check that ``x`` is a real floating-point ``[B, 2k]`` tensor and return ``k``.

    Raises
    ------
    ValueError
        If ``x`` is not floating point, not 2-D, or its feature size ``2k`` is odd or zero.
    """
    if not isinstance(x, Tensor) or not x.is_floating_point():
        dtype = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must be a real floating-point tensor [B, 2k], got {dtype}")
    if x.dim() != 2:
        raise ValueError(
            f"x must have shape [B, 2k] (k complex symbols per sample); got shape "
            f"{list(x.shape)}: flatten the trailing dimensions first"
        )
    feat = x.shape[1]
    if feat == 0 or feat % 2 != 0:
        raise ValueError(
            f"the feature size of x (x.shape[1]) must be a positive even number 2k "
            f"(k real parts then k imaginary parts), got {feat}"
        )
    return feat // 2


def channel_uses(x: Tensor) -> int:
    """Complex channel uses per sample of an analog payload ``[B, 2k]``: ``k``."""
    return check_analog_input(x)


def power_normalize(x: Tensor) -> Tensor:
    """Scale each sample of ``x`` (``[B, 2k]``) to unit average power per complex symbol.

    ``x_b <- x_b / sqrt(P_b)`` with ``P_b = (1/k) sum_i |x_{b,i}|^2 = (1/k) sum_j x_{b,j}^2``
    (the sum over the ``2k`` real entries). All-zero samples stay zero. Differentiable.
    """
    k = check_analog_input(x)
    power = x.pow(2).sum(dim=1, keepdim=True) / k
    return x / power.clamp_min(_POWER_FLOOR).sqrt()


def to_complex(x: Tensor) -> Tensor:
    """Pack a real ``[B, 2k]`` tensor into a complex ``[B, k]``: ``x[:, :k] + j x[:, k:]``."""
    k = check_analog_input(x)
    return torch.complex(x[:, :k], x[:, k:])


def to_real(z: Tensor) -> Tensor:
    """Unpack a complex ``[B, k]`` tensor into a real ``[B, 2k]`` tensor (real parts first)."""
    return torch.cat([z.real, z.imag], dim=1)


def noise_variance(snr_db: SnrSpec, x: Tensor) -> Tensor:
    """Complex noise variance ``sigma^2 = 10^(-snr_db/10)`` as a ``[B, 1]`` (or ``[1, 1]``) tensor.

    Raises
    ------
    ValueError
        If ``snr_db`` is a ``[B']`` tensor with ``B'`` different from ``x.shape[0]``.
    """
    snr = torch.as_tensor(snr_db, dtype=x.dtype, device=x.device)
    if snr.dim() == 1:
        if snr.shape[0] != x.shape[0]:
            raise ValueError(
                f"snr_db has {snr.shape[0]} entries but the batch has {x.shape[0]} samples; "
                f"give one SNR per sample or a single number"
            )
        snr = snr.unsqueeze(1)
    else:
        snr = snr.reshape(1, 1)
    return torch.pow(10.0, -snr / 10.0)


class AnalogChannel(nn.Module):
    """Base class of the analog (complex-symbol) channels: holds and validates ``snr_db``."""

    def __init__(self, snr_db: float | Tensor) -> None:
        super().__init__()
        self.snr_db: SnrSpec = validate_snr_db(snr_db)

    def set_snr(self, snr_db: float | Tensor) -> None:
        """Change the SNR (dB): a finite number, or a ``[B]`` tensor for per-sample SNRs."""
        self.snr_db = validate_snr_db(snr_db)

    def channel_uses(self, x: Tensor) -> int:
        """Complex channel uses per sample of ``x`` (``[B, 2k]``): ``k``."""
        return channel_uses(x)

    def extra_repr(self) -> str:
        if isinstance(self.snr_db, Tensor):
            return f"snr_db=tensor(shape={list(self.snr_db.shape)})"
        return f"snr_db={self.snr_db}"
