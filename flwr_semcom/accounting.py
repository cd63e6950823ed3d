"""Communication ledger: every transfer that would cross a real link.

Every strategy counts through one :class:`CommLedger`. A row records the direction
(``up`` = device to server/receiver, ``down`` = server to device), the training stage
(``pretrain``, ``finetune``, ``align``, ``eval``), what was sent (``features``,
``gradients``, ``parameters``, ``indices``, ...), the payload size in bytes as it would
be serialised (``numel * element_size`` of the tensor's dtype), the number of channel
uses (complex symbols for analog JSCC features, codeword indices for a digital DMC
link; 0 for payloads that travel over an ordinary data link), the Flower round and the
client/node.

Bits are ``8 * bytes``. Figures in papers and in this project's results are computed
from these rows only, so a transfer that is not recorded does not exist.
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord

__all__ = ["CommLedger", "Transfer", "atomic_write", "payload_bytes", "record_nbytes"]

DIRECTIONS = ("up", "down")
STAGES = ("pretrain", "finetune", "align", "eval")


def payload_bytes(payload: torch.Tensor | np.ndarray | Iterable[Any] | Mapping[str, Any]) -> int:
    """Return the serialised size in bytes of a tensor, array, or collection of them.

    A mapping (e.g. a ``state_dict``) or iterable counts the sum of its members.
    """
    if isinstance(payload, torch.Tensor):
        return int(payload.numel() * payload.element_size())
    if isinstance(payload, np.ndarray):
        return int(payload.nbytes)
    if isinstance(payload, Mapping):
        return sum(payload_bytes(v) for v in payload.values())
    if isinstance(payload, (str, bytes)):
        raise TypeError(
            f"payload must be a tensor, ndarray or collection of them, got {type(payload)}"
        )
    if isinstance(payload, Iterable):
        return sum(payload_bytes(v) for v in payload)
    raise TypeError(f"payload must be a tensor, ndarray or collection of them, got {type(payload)}")


def _config_value_nbytes(value: object) -> int:
    if isinstance(value, (list, tuple)):
        return sum(_config_value_nbytes(v) for v in value)
    if isinstance(value, bool):
        return 1
    if isinstance(value, (int, float)):
        return 8
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, bytes):
        return len(value)
    raise TypeError(f"unsupported record value {type(value).__name__}")


def record_nbytes(record: Any) -> int:
    """Payload bytes of a Flower record, as the ledger counts them (the one byte counter).

    ``ArrayRecord``: ``numel × itemsize`` of every array (what :func:`payload_bytes` gives
    for the same tensors). ``ConfigRecord`` / ``MetricRecord``: 8 bytes per int or float, 1
    per bool, the UTF-8 length of a string, the length of bytes (lists: the sum). Key names
    and Flower's framing are not counted (both ends know the schema).
    """
    if isinstance(record, ArrayRecord):
        total = 0
        for arr in record.values():
            numel = int(np.prod(arr.shape)) if arr.shape else 1
            total += numel * np.dtype(arr.dtype).itemsize
        return total
    if isinstance(record, (ConfigRecord, MetricRecord)):
        return sum(_config_value_nbytes(v) for v in record.values())
    raise TypeError(f"record_nbytes: expected a Flower record, got {type(record).__name__}")


@dataclass(frozen=True)
class Transfer:
    """One transfer over a real link."""

    direction: str
    stage: str
    kind: str
    bytes: int
    channel_uses: int
    round: int
    client: str

    @property
    def bits(self) -> int:
        return 8 * self.bytes


_COLUMNS = tuple(f.name for f in fields(Transfer))
_SUMMABLE = ("bytes", "bits", "channel_uses")


class CommLedger:
    """Append-only record of transfers, with totals and CSV/JSON export."""

    def __init__(self) -> None:
        self._rows: list[Transfer] = []

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def rows(self) -> list[Transfer]:
        return list(self._rows)

    def record(
        self,
        *,
        direction: str,
        stage: str,
        kind: str,
        payload: Any = None,
        nbytes: int | None = None,
        channel_uses: int = 0,
        round: int = 0,  # noqa: A002 - matches the column name
        client: str | int = "",
    ) -> Transfer:
        """Record one transfer; give either ``payload`` (sized by dtype) or ``nbytes``."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        if (payload is None) == (nbytes is None):
            raise ValueError("give exactly one of payload= or nbytes=")
        size = payload_bytes(payload) if payload is not None else int(nbytes)  # type: ignore[arg-type]
        if size < 0:
            raise ValueError(f"nbytes must be >= 0, got {size}")
        if channel_uses < 0:
            raise ValueError(f"channel_uses must be >= 0, got {channel_uses}")
        row = Transfer(direction, stage, kind, size, int(channel_uses), int(round), str(client))
        self._rows.append(row)
        return row

    def extend(self, rows: Iterable[Transfer]) -> None:
        self._rows.extend(rows)

    def total(self, field: str = "bytes", **where: Any) -> int:
        """Sum ``bytes``, ``bits`` or ``channel_uses`` over rows matching ``where``.

        ``where`` values may be a single value or a tuple/list/set of accepted values,
        and ``round`` may also be given as ``max_round`` (inclusive) for cumulative sums.
        """
        if field not in _SUMMABLE:
            raise ValueError(f"field must be one of {_SUMMABLE}, got {field!r}")
        unknown = sorted(set(where) - set(_COLUMNS) - {"max_round"})
        if unknown:
            raise ValueError(f"unknown filter(s) {unknown}; valid: {_COLUMNS + ('max_round',)}")
        max_round = where.pop("max_round", None)
        # clients are stored as strings: accept ints (node ids, partition ids) in filters
        if "client" in where:
            want_c = where["client"]
            where["client"] = (
                tuple(str(c) for c in want_c)
                if isinstance(want_c, (tuple, list, set, frozenset))
                else str(want_c)
            )
        total = 0
        for row in self._rows:
            if max_round is not None and row.round > max_round:
                continue
            ok = True
            for key, want in where.items():
                have = getattr(row, key)
                if isinstance(want, (tuple, list, set, frozenset)):
                    ok = have in want
                else:
                    ok = have == want
                if not ok:
                    break
            if ok:
                total += row.bits if field == "bits" else getattr(row, field)
        return total

    def summary(self) -> dict[str, dict[str, dict[str, int]]]:
        """Totals per stage and direction: ``{stage: {direction: {bytes, channel_uses}}}``."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for row in self._rows:
            d = out.setdefault(row.stage, {}).setdefault(
                row.direction, {"bytes": 0, "channel_uses": 0, "transfers": 0}
            )
            d["bytes"] += row.bytes
            d["channel_uses"] += row.channel_uses
            d["transfers"] += 1
        return out

    def to_records(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self._rows]

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, Any]]) -> CommLedger:
        """Rebuild a ledger from dict rows (e.g. ``csv.DictReader`` or JSON), casting types."""
        ledger = cls()
        casts: dict[str, Any] = {"bytes": int, "channel_uses": int, "round": int}
        ledger.extend(
            Transfer(**{k: casts.get(k, str)(rec[k]) for k in _COLUMNS}) for rec in records
        )
        return ledger

    def write_csv(self, path: str | Path) -> None:
        names = [f.name for f in fields(Transfer)]
        with atomic_write(path) as fh:
            writer = csv.DictWriter(fh, fieldnames=names)
            writer.writeheader()
            writer.writerows(self.to_records())

    def write_json(self, path: str | Path) -> None:
        with atomic_write(path) as fh:
            json.dump(
                {"summary": self.summary(), "transfers": self.to_records()},
                fh,
                indent=1,
                allow_nan=False,
            )


class atomic_write:  # noqa: N801 - used as a context manager like open()
    """Write a text file atomically: a temporary file in the same folder, then rename."""

    def __init__(self, path: str | Path, mode: str = "w") -> None:
        self.path = Path(path)
        self.mode = mode
        self._tmp: str | None = None
        self._fh: Any = None

    def __enter__(self) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        self._fh = os.fdopen(fd, self.mode, newline="" if "b" not in self.mode else None)
        return self._fh

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        assert self._fh is not None and self._tmp is not None
        self._fh.close()
        if exc_type is None:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(self._tmp, 0o666 & ~umask)  # mkstemp makes 0600; use the usual mode
            os.replace(self._tmp, self.path)
        else:
            os.unlink(self._tmp)
