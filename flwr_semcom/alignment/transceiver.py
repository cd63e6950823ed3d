"""What SLF needs from a transceiver: ordered layers, a receiver part, freezing the last n.

Choi et al., "Semantics Alignment via Split Learning for Resilient Multi-User Semantic
Communication", arXiv 2310.09394, Sec. III-B: transmitter ``i`` downloads receiver ``j``'s
*receiver part* (for a VQ-VAE transceiver: the codebook and the decoder), fine-tunes the
virtual transceiver with the last ``n`` layers frozen, and uploads only the unfrozen tensors.
Any ``nn.Module`` that follows :class:`FreezableTransceiver` works with the SLF strategy and
the SLF client handlers (:func:`flwr_semcom.alignment.add_slf_client`); our
:class:`~flwr_semcom.models.vqvae.VQVAETransceiver` is one. :class:`FreezableLayers` gives a
user's own transceiver ``freeze_last`` from its ``layers()`` / ``receiver_layers()``.

The functions here read and write the receiver part by the layer names, which are the
modules' ``state_dict`` prefixes, so they work for any such transceiver.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from flwr_semcom.models.utils import check_state_subset, freeze_last_layers

__all__ = [
    "FreezableLayers",
    "FreezableTransceiver",
    "as_module",
    "check_freeze",
    "load_receiver_state",
    "max_freeze",
    "receiver_state",
    "reset_parameters",
    "unfrozen_receiver_state",
]


@runtime_checkable
class FreezableTransceiver(Protocol):
    """A transceiver SLF can align (structural type; subclass ``nn.Module`` as usual).

    ``layers()``
        ``[(name, module), ...]`` in forward order; ``name`` is the module's ``state_dict``
        prefix. Only layers with parameters.
    ``receiver_layers()``
        The suffix of ``layers()`` the receiver owns: what SLF step 1 downloads and step 3
        uploads (unfrozen part only).
    ``freeze_last(n)``
        Make every parameter trainable, then freeze the last ``n`` layers (``0 <= n <=
        len(receiver_layers())``, else ``ValueError``); returns the frozen names, last first.
    ``encode(x)`` / ``decode(y)``
        The two ends of the link: what the transmitter puts on the channel, and the
        reconstruction from what the receiver got.
    ``forward(x, channel=None, generator=None)``
        The whole link in one pass; returns a dict with at least ``"x_hat"`` (the loss reads
        the keys it needs).
    """

    def layers(self) -> list[tuple[str, nn.Module]]: ...

    def receiver_layers(self) -> list[tuple[str, nn.Module]]: ...

    def freeze_last(self, n: int) -> list[str]: ...

    def encode(self, x: Tensor) -> Tensor: ...

    def decode(self, y: Tensor) -> Tensor: ...

    def __call__(
        self, x: Tensor, channel: nn.Module | None = None, generator: Any = None
    ) -> Mapping[str, Tensor]: ...


def as_module(model: FreezableTransceiver) -> nn.Module:
    """``model`` as the ``nn.Module`` it must be (``TypeError`` otherwise)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"a transceiver must be a torch.nn.Module, got {type(model).__name__}")
    return model


def max_freeze(model: FreezableTransceiver) -> int:
    """Largest ``n``: the number of receiver layers."""
    return len(model.receiver_layers())


def check_freeze(model: FreezableTransceiver, n: object) -> int:
    """``n`` as an int, or ``ValueError`` naming the valid range ``[0, max_freeze]``."""
    top = max_freeze(model)
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= top:
        raise ValueError(
            f"freeze_layers (n) must be in [0, {top}] for this transceiver "
            f"({top} receiver layers), got {n!r}"
        )
    return n


def _receiver_prefixes(model: FreezableTransceiver) -> tuple[str, ...]:
    return tuple(f"{name}." for name, _ in model.receiver_layers())


def receiver_state(model: FreezableTransceiver) -> dict[str, Tensor]:
    """Receiver-part tensors (detached copies, ``state_dict`` order): SLF step 1's download."""
    prefixes = _receiver_prefixes(model)
    state = as_module(model).state_dict()
    return {k: v.detach().clone() for k, v in state.items() if k.startswith(prefixes)}


def unfrozen_receiver_state(model: FreezableTransceiver) -> dict[str, Tensor]:
    """Trainable receiver-part parameters (detached copies): SLF step 3's upload."""
    prefixes = _receiver_prefixes(model)
    named = as_module(model).named_parameters()
    return {
        name: p.detach().clone()
        for name, p in named
        if p.requires_grad and name.startswith(prefixes)
    }


def load_receiver_state(
    model: FreezableTransceiver, state: Mapping[str, Tensor], partial: bool = False
) -> None:
    """Install receiver-part tensors; with ``partial`` a subset (an SLF upload).

    Raises
    ------
    ValueError
        On a key outside the receiver part, a missing key (unless ``partial``) or a shape
        mismatch (nothing is installed then).
    """
    check_state_subset(receiver_state(model), state, partial=partial, what="receiver-part")
    as_module(model).load_state_dict(dict(state), strict=False)


def reset_parameters(model: FreezableTransceiver) -> None:
    """Re-initialise: the model's own ``reset_parameters()``, else each layer's."""
    own = getattr(model, "reset_parameters", None)
    if callable(own):
        own()
        return
    for _, module in model.layers():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()


class FreezableLayers:
    """Mixin for an ``nn.Module`` that defines ``layers()`` and ``receiver_layers()``.

    Adds :meth:`freeze_last` (paper 2, Sec. III-B: freeze the last ``n`` layers, counting
    from the last one). Example::

        class MyTransceiver(FreezableLayers, nn.Module):
            def layers(self):
                return [("enc", self.enc), ("dec0", self.dec0), ("dec1", self.dec1)]

            def receiver_layers(self):
                return self.layers()[1:]
    """

    def layers(self) -> list[tuple[str, nn.Module]]:
        raise NotImplementedError

    def receiver_layers(self) -> list[tuple[str, nn.Module]]:
        raise NotImplementedError

    def freeze_last(self, n: int) -> list[str]:
        """Make every parameter trainable, then freeze the last ``n`` layers (``ValueError``
        outside ``[0, len(receiver_layers())]``); return the frozen names, last first."""
        n = check_freeze(self, n)  # type: ignore[arg-type]
        return freeze_last_layers(self, self.layers(), n)  # type: ignore[arg-type]
