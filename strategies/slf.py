"""SLF: semantics alignment by split learning with layer freezing (server side).

Choi et al., "Semantics Alignment via Split Learning for Resilient Multi-User Semantic
Communication", arXiv 2310.09394, Sec. III-B. Transmitter ``i`` (partition 0) meets receiver
``j`` (partition 1), whose transceivers were pre-trained apart. Four steps, one Flower
message each, sent through the one messaging layer (:func:`flwr_semcom.runtime.messaging.send`;
the server relays, so the ledger counts each *logical* transfer once, as the paper does). The
transceivers can be any :class:`~flwr_semcom.alignment.FreezableTransceiver` (the device side
is :func:`flwr_semcom.alignment.add_slf_client`); "codebook and decoder" below is the VQ-VAE's
receiver part:

1. ``query.slf_receiver`` to j: j's codebook and decoder, *downloaded* to i
   (ledger: ``down``, stage ``align``).
2. ``train.slf_finetune`` to i: i fine-tunes the virtual transceiver (ENC_i, codebook_j,
   DEC_j) under the measured crossover ``p`` with the last ``n`` layers frozen (``n = 0``:
   re-initialise, original learning rate); the reply carries exactly the unfrozen
   codebook/decoder tensors, *uploaded* to j (ledger: ``up``, stage ``align``).
3. ``train.slf_install`` to j: j installs them.
4. Aligned transmission: ``query.slf_encode`` to i (test images → indices → DMC) and
   ``query.slf_score`` to j (decode, MSE, frozen-classifier accuracy); the indices are counted
   as stage ``eval`` with their channel uses.

Non-finite guard (issue #9): the downloaded codebook/decoder (step 1) and the uploaded
unfrozen tensors (step 2) are checked before they are forwarded; NaN or inf stops the
alignment with :class:`~flwr_semcom.guard.NonFiniteError` (nothing is installed).

SLF is not a round-based aggregation, so :class:`SLFStrategy` does not subclass Flower's
``Strategy``: its :meth:`SLFStrategy.start` runs the four steps once and returns an
:class:`SLFResult` with the bytes, FLOPs, modelled recovery time (eq. in
:mod:`flwr_semcom.alignment.recovery`), measured wall time and the two task metrics.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid

from flwr_semcom.accounting import CommLedger, record_nbytes
from flwr_semcom.alignment import messages as P
from flwr_semcom.alignment.recovery import RecoveryModel
from flwr_semcom.guard import check_finite
from flwr_semcom.runtime.messaging import ClientInfo, send

__all__ = ["Link", "SLFResult", "SLFStrategy", "aligned_transmission", "exchange"]


@dataclass(frozen=True)
class Link:
    """A misaligned pair and the environment of their link.

    Attributes
    ----------
    transmitter, receiver
        Node ids of ``i`` (partition 0) and ``j`` (partition 1).
    crossover
        The link's channel parameter (DMC crossover ``p`` for the paper's transceivers),
        measured in step 1, used in steps 2 and 4.
    source, epsilon
        The data ``i`` sends (its data parameters, e.g. ``mnist`` or the eq. 8 ``mixed``
        source with ε), sent to the scoring node in step 4.
    eval_seed
        Seed of the channel draws of the aligned transmission (same for every method).
    tag
        Prefix of the ledger's ``client`` column (identifies the run in a sweep).
    """

    transmitter: int
    receiver: int
    crossover: float
    source: str
    epsilon: float
    eval_seed: int = 0
    tag: str = ""

    def client(self, role: str) -> str:
        return f"{self.tag}/{role}" if self.tag else role

    def node(self, role: str) -> ClientInfo:
        """The node of ``role`` as the messaging layer names it."""
        if role == "transmitter":
            return ClientInfo(self.transmitter, 0, role)
        return ClientInfo(self.receiver, 1, role)


def exchange(
    grid: Grid,
    clients: list[ClientInfo],
    message_type: str,
    timeout: float,
    contents: list[RecordDict] | None = None,
) -> list[RecordDict]:
    """One message to each client (:func:`flwr_semcom.runtime.messaging.send`); the replies'
    contents in client order. The ledger counts SLF's *logical* transfers, so the caller
    records them (the server only relays).

    Raises
    ------
    flwr_semcom.runtime.messaging.ClientError
        When a client answers with an error (its reason in the message) or not in time.
    """
    contents = contents or [RecordDict() for _ in clients]
    msgs = [Message(c, info.node_id, message_type) for c, info in zip(contents, clients)]
    replies = send(grid, msgs, clients, action=message_type, timeout=timeout)
    return [r.content for r in replies]


def _one(
    grid: Grid, client: ClientInfo, message_type: str, timeout: float, **records: Any
) -> RecordDict:
    return exchange(grid, [client], message_type, timeout, [RecordDict(records)])[0]


def aligned_transmission(
    grid: Grid,
    link: Link,
    ledger: CommLedger | None,
    timeout: float,
    round: int = 0,  # noqa: A002
    part: str = "test",
) -> dict[str, float]:
    """SLF step 4: i sends its test images' indices through the DMC, j decodes and scores.

    ``part="val"`` sends i's validation images instead (scored for reporting beside the
    test part); ``ledger=None`` records nothing (an evaluation the link would not carry).

    Returns
    -------
    dict
        ``mse``, ``accuracy`` and ``num_examples``.
    """
    enc = _one(
        grid,
        link.node("transmitter"),
        P.ENCODE,
        timeout,
        config=ConfigRecord({"crossover": link.crossover, "seed": link.eval_seed, "part": part}),
    )
    received = P.arrays_of(enc)
    uses = int(P.metric(enc, "channel-uses"))
    bits = uses * int(P.metric(enc, "bits-per-use"))
    if ledger is not None:
        ledger.record(
            direction="up",
            stage="eval",
            kind="indices",
            nbytes=math.ceil(bits / 8),
            channel_uses=uses,
            round=round,
            client=link.client("transmitter"),
        )
    scored = _one(
        grid,
        link.node("receiver"),
        P.SCORE,
        timeout,
        arrays=received,
        config=ConfigRecord({"source": link.source, "epsilon": link.epsilon, "part": part}),
    )
    return {
        "mse": P.metric(scored, "mse"),
        "accuracy": P.metric(scored, "accuracy"),
        "num_examples": int(P.metric(scored, "num-examples")),
    }


@dataclass(frozen=True)
class SLFResult:
    """Outcome of one SLF alignment (one ``n``).

    ``download_bytes``/``upload_bytes`` are the steps 1 and 3 payloads; ``flops`` the counted
    fine-tuning FLOPs; ``recovery_time_s`` the modelled recovery time; ``finetune_wall_s``
    and ``wall_time_s`` the measured fine-tuning loop and the whole run (messages included).
    """

    freeze_layers: int
    unfrozen_params: int
    download_bytes: int
    upload_bytes: int
    flops: float
    recovery_time_s: float
    finetune_wall_s: float
    wall_time_s: float
    mse: float
    accuracy: float
    num_examples: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class SLFStrategy:
    """Server side of SLF for one misaligned pair and one number of frozen layers.

    Parameters
    ----------
    freeze_layers
        ``n``: freeze the last ``n`` layers of the downloaded codebook + decoder (0 = none,
        re-initialise).
    recovery
        Link rates and device compute of the recovery-time model.
    ledger
        Where transfers are counted (a fresh one if not given).
    seed
        Seed of the fine-tuning (batch order, channel draws, re-initialisation).
    timeout
        Seconds to wait for each reply.
    """

    def __init__(
        self,
        freeze_layers: int,
        recovery: RecoveryModel,
        *,
        ledger: CommLedger | None = None,
        seed: int = 0,
        timeout: float = 3600.0,
    ) -> None:
        if (
            isinstance(freeze_layers, bool)
            or not isinstance(freeze_layers, int)
            or freeze_layers < 0
        ):
            raise ValueError(f"freeze_layers (n) must be an integer >= 0, got {freeze_layers!r}")
        self.freeze_layers = freeze_layers
        self.recovery = recovery
        self.ledger = CommLedger() if ledger is None else ledger
        self.seed = seed
        self.timeout = timeout

    def download(self, grid: Grid, link: Link) -> ArrayRecord:
        """Step 1: fetch j's codebook and decoder (counted as a download to i)."""
        arrays = P.arrays_of(_one(grid, link.node("receiver"), P.RECEIVER, self.timeout))
        check_finite(
            "codebook+decoder",
            arrays,
            where=f"slf download from node {link.receiver}",
            consequence="not forwarded",
        )
        self.ledger.record(
            direction="down",
            stage="align",
            kind="codebook+decoder",
            nbytes=record_nbytes(arrays),
            client=link.client("transmitter"),
        )
        return arrays

    def finetune(self, grid: Grid, link: Link, downloaded: ArrayRecord) -> RecordDict:
        """Step 2 at i; its reply is the step 3 upload (counted as an upload to j)."""
        config = ConfigRecord(
            {"freeze_layers": self.freeze_layers, "crossover": link.crossover, "seed": self.seed}
        )
        reply = _one(
            grid,
            link.node("transmitter"),
            P.FINETUNE,
            self.timeout,
            arrays=downloaded,
            config=config,
        )
        check_finite(
            "unfrozen parameters",
            P.arrays_of(reply),
            where=f"slf finetune at node {link.transmitter}",
            consequence="not installed",
        )
        self.ledger.record(
            direction="up",
            stage="align",
            kind="unfrozen_parameters",
            nbytes=record_nbytes(P.arrays_of(reply)),
            client=link.client("transmitter"),
        )
        return reply

    def install(self, grid: Grid, link: Link, uploaded: ArrayRecord) -> None:
        """Step 3 at j: install the uploaded tensors."""
        _one(
            grid,
            link.node("receiver"),
            P.INSTALL,
            self.timeout,
            arrays=uploaded,
            config=ConfigRecord({"scope": "receiver"}),
        )

    def start(self, grid: Grid, link: Link) -> SLFResult:
        """Run SLF steps 1-4 once and return what they cost and reached."""
        t0 = time.perf_counter()
        downloaded = self.download(grid, link)
        reply = self.finetune(grid, link, downloaded)
        uploaded = P.arrays_of(reply)
        self.install(grid, link, uploaded)
        scores = aligned_transmission(grid, link, self.ledger, self.timeout)
        wall = time.perf_counter() - t0
        down, up = record_nbytes(downloaded), record_nbytes(uploaded)
        flops = P.metric(reply, "flops")
        return SLFResult(
            freeze_layers=self.freeze_layers,
            unfrozen_params=P.record_numel(uploaded),
            download_bytes=down,
            upload_bytes=up,
            flops=flops,
            recovery_time_s=self.recovery.slf(down, flops, up),
            finetune_wall_s=P.metric(reply, "wall-s"),
            wall_time_s=wall,
            mse=scores["mse"],
            accuracy=scores["accuracy"],
            num_examples=int(scores["num_examples"]),
        )
