"""Deprecated shim (removed once paper 1 imports :mod:`flwr_semcom.paper1.rgbd`)."""

from flwr_semcom.paper1.rgbd import (  # noqa: F401
    channel_kwargs,
    labelled_subset,
    load_labels,
    load_modality,
    make_sgd,
    modality_of,
    scheduled_lr,
    set_lr,
)
