"""Small helpers shared by the models: parameter counting, freezing and input checks.

These support the communication accounting of both papers: paper 1 (Zhao et al., arXiv
2503.13940, Sec. II) sends encoder features and, in the ``server`` pretraining placement,
whole encoders; paper 2 (Choi et al., arXiv 2310.09394, Sec. III, Table I) uploads only the
unfrozen parameters, so counting trainable parameters and their bytes is part of the protocol.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

__all__ = [
    "check_image_batch",
    "check_positive_int",
    "check_widths",
    "count_parameters",
    "freeze",
    "parameter_nbytes",
    "set_requires_grad",
    "unfreeze",
]


def check_positive_int(name: str, value: object) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is an int >= 1 (bools rejected).

    Parameters
    ----------
    name
        The argument name used in the message.
    value
        The value to check.

    Raises
    ------
    ValueError
        ``"<name> must be a positive int (>= 1), got <value>"``.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int (>= 1), got {value!r}")


def check_widths(widths: Iterable[int]) -> tuple[int, ...]:
    """``widths`` as a tuple, checked to be a non-empty sequence of positive ints.

    Raises
    ------
    ValueError
        ``"widths must hold at least one positive int, got ()"`` when empty, else the
        :func:`check_positive_int` message for the first bad entry (``"widths entries ..."``).
    """
    widths = tuple(widths)
    if not widths:
        raise ValueError("widths must hold at least one positive int, got ()")
    for w in widths:
        check_positive_int("widths entries", w)
    return widths


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    """Number of scalar parameters of ``module``.

    Parameters
    ----------
    module
        Any ``nn.Module`` (shared parameters are counted once).
    trainable_only
        Count only parameters with ``requires_grad=True``.

    Returns
    -------
    int
        The number of scalars (buffers such as batch-norm running statistics excluded).
    """
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def parameter_nbytes(module: nn.Module, trainable_only: bool = False) -> int:
    """Bytes the parameters of ``module`` occupy in their own dtypes (float32: 4 per scalar).

    Parameters
    ----------
    module
        Any ``nn.Module``.
    trainable_only
        Count only parameters with ``requires_grad=True`` (what paper 2's SLF uploads).

    Returns
    -------
    int
        ``sum(numel * element_size)`` over the selected parameters.
    """
    return sum(
        p.numel() * p.element_size()
        for p in module.parameters()
        if p.requires_grad or not trainable_only
    )


def set_requires_grad(module: nn.Module, requires_grad: bool) -> nn.Module:
    """Set ``requires_grad`` on every parameter of ``module``; returns ``module``.

    Parameters
    ----------
    module
        The module to change in place.
    requires_grad
        The new flag.

    Returns
    -------
    nn.Module
        The same module, for chaining.
    """
    for p in module.parameters():
        p.requires_grad_(requires_grad)
    return module


def freeze(module: nn.Module) -> nn.Module:
    """Stop gradients for every parameter of ``module`` (batch-norm mode is left as is)."""
    return set_requires_grad(module, False)


def unfreeze(module: nn.Module) -> nn.Module:
    """Enable gradients for every parameter of ``module``."""
    return set_requires_grad(module, True)


def check_image_batch(x: torch.Tensor, in_channels: int, label: str | None = None) -> None:
    """Raise ``ValueError`` unless ``x`` is an image batch ``[B, in_channels, H, W]``.

    Parameters
    ----------
    x
        The input tensor.
    in_channels
        The channel count the model was built for.
    label
        Optional modality name (``"rgb"``, ``"depth"``) added to the message.

    Raises
    ------
    ValueError
        ``"expected input with 3 channels (rgb), got 1"`` for a wrong channel count, or a
        message naming the expected ``[B, C, H, W]`` layout for a tensor that is not 4-D.
    """
    name = f" ({label})" if label else ""
    if x.dim() != 4:
        raise ValueError(
            f"expected an image batch [B, {in_channels}, H, W]{name}, got shape {tuple(x.shape)}"
        )
    if x.shape[1] != in_channels:
        raise ValueError(f"expected input with {in_channels} channels{name}, got {x.shape[1]}")


def check_state_subset(
    own: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    *,
    partial: bool,
    what: str,
) -> None:
    """Check ``state`` before installing it into the part whose tensors are ``own``.

    Raises
    ------
    ValueError
        A key outside ``own`` ("not ``what`` tensors: ..."), a key of ``own`` missing from
        ``state`` unless ``partial``, or a shape mismatch — one line naming the key.
    """
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise ValueError(f"not {what} tensors: {', '.join(unknown)}")
    missing = sorted(set(own) - set(state))
    if missing and not partial:
        raise ValueError(f"receiver state is missing {', '.join(missing)}")
    for k, v in state.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ValueError(
                f"{k}: shape {tuple(v.shape)} does not match this transceiver's "
                f"{tuple(own[k].shape)}"
            )


def freeze_last_layers(
    module: nn.Module, layers: Sequence[tuple[str, nn.Module]], n: int
) -> list[str]:
    """Make every parameter of ``module`` trainable, then freeze the last ``n`` of ``layers``
    (named sub-modules in forward order; ``n`` already checked); return the frozen names,
    last first (paper 2's SLF freezes the last n layers of the receiver)."""
    for p in module.parameters():
        p.requires_grad_(True)
    frozen = list(reversed(layers))[:n]
    for _, layer in frozen:
        for p in layer.parameters():
            p.requires_grad_(False)
    return [name for name, _ in frozen]
