"""Paper 1's results summary: bits per stage, accuracy targets, the run's table.

Paper 1 (Zhao et al., arXiv 2503.13940), Sec. IV: the methods are compared by the Stage II
communication they need to reach a target accuracy (ours: the supervised baseline's final
accuracy unless ``experiment.target_accuracy`` is set). :func:`summarize` turns the metric
rows and ledgers of a run into ``summary.json`` (schema in docs/paper1.md); :func:`stage_bits`
reads a stage's payload and control bytes from a ledger; :func:`table` formats the summary
for the log.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from flwr_semcom.accounting import CommLedger

__all__ = ["select_round", "stage_bits", "summarize", "table"]


def select_round(rows: Sequence[dict[str, Any]]) -> tuple[int, float] | None:
    """Model selection on the validation split: ``(round, val_accuracy)`` of the Stage II row
    with the highest ``val_accuracy`` (the earliest on ties); ``None`` without a finite one.

    Reads only ``round`` and ``val_accuracy``: no test metric enters the selection.
    """
    best: tuple[int, float] | None = None
    for r in rows:
        v = float(r.get("val_accuracy", math.nan))
        if math.isfinite(v) and (best is None or v > best[1]):
            best = (int(r["round"]), v)
    return best


def stage_bits(ledger: CommLedger, stage: str, max_round: int | None = None) -> dict[str, int]:
    """Cumulative bytes of a stage up to ``max_round``: payload up / down (features,
    gradients, parameters), control (configs, plans, both directions) and channel uses."""
    where: dict[str, Any] = {"stage": stage}
    if max_round is not None:
        where["max_round"] = max_round
    up = ledger.total("bytes", direction="up", **where)
    down = ledger.total("bytes", direction="down", **where)
    control = ledger.total("bytes", kind="control", **where)
    up_ctrl = ledger.total("bytes", kind="control", direction="up", **where)
    return {
        "up_bytes": up - up_ctrl,
        "down_bytes": down - (control - up_ctrl),
        "control_bytes": control,
        "channel_uses": ledger.total("channel_uses", **where),
    }


def summarize(
    rows: Sequence[dict[str, Any]],
    methods: dict[str, dict[str, Any]],
    ledgers: dict[str, CommLedger],
    target_setting: float | None,
) -> dict[str, Any]:
    """``summary.json``'s content from the metric rows (schema in docs/paper1.md).

    The target accuracy is ``target_setting`` when given, else the supervised baseline's
    final Stage II accuracy, else the lowest final accuracy among the methods. A method
    reaches it in the first Stage II round whose test accuracy is >= target - 1e-9. Each
    method's round is selected on the validation split (:func:`select_round`); its test
    accuracy there and at the last round are the reported figures (``best_accuracy``, the
    test maximum, is kept for comparison with older runs only).
    """
    finals: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["stage"] == "finetune":
            finals.setdefault(r["method"], []).append(r)
    final_acc = {m: float(rs[-1]["test_accuracy"]) for m, rs in finals.items() if rs}
    if target_setting is not None:
        target, source = float(target_setting), "experiment.target_accuracy"
    elif "supervised" in final_acc and methods.get("supervised", {}).get("status") == "ok":
        target, source = final_acc["supervised"], "final accuracy of supervised"
    elif final_acc:
        target, source = min(final_acc.values()), "lowest final accuracy among the methods"
    else:
        target, source = math.nan, "none (no Stage II round completed)"
    out_methods: dict[str, Any] = {}
    for label, info in methods.items():
        rs = finals.get(label, [])
        accs = [float(r["test_accuracy"]) for r in rs]
        reach = next((r for r in rs if float(r["test_accuracy"]) >= target - 1e-9), None)
        ledger = ledgers.get(label, CommLedger())
        s1 = stage_bits(ledger, "pretrain")
        s2 = stage_bits(ledger, "finetune")
        chosen = select_round(rs)
        at_chosen = next((r for r in rs if chosen and int(r["round"]) == chosen[0]), None)
        out_methods[label] = {
            **info,
            "val_selected_round": chosen[0] if chosen else None,
            "val_accuracy_at_selected": chosen[1] if chosen else None,
            "test_accuracy_at_val_selected": (
                float(at_chosen["test_accuracy"]) if at_chosen is not None else None
            ),
            "final_accuracy": accs[-1] if accs else None,
            "best_accuracy": max(accs) if accs else None,  # test maximum: not a headline
            "finetune_rounds": len(rs),
            "stage2_rounds_to_target": int(reach["round"]) if reach else None,
            "stage2_bits_to_target": float(reach["bits"]) if reach else None,
            "stage1_bits": float(8 * (s1["up_bytes"] + s1["down_bytes"])),
            "stage1_control_bits": float(8 * s1["control_bytes"]),
            "stage2_bits": float(8 * (s2["up_bytes"] + s2["down_bytes"])),
            "stage2_control_bits": float(8 * s2["control_bytes"]),
            "stage2_channel_uses": int(s2["channel_uses"]),
        }
    ratio = None
    dec, sup = out_methods.get("decur"), out_methods.get("supervised")
    if dec and sup and dec["stage2_bits_to_target"] and sup["stage2_bits_to_target"]:
        ratio = dec["stage2_bits_to_target"] / sup["stage2_bits_to_target"]
    return {
        "target_accuracy": target,
        "target_source": source,
        "decur_to_supervised_bits_ratio": ratio,
        "methods": out_methods,
    }


def table(summary: dict[str, Any]) -> list[str]:
    """The log's closing table: one line per method (the validation-selected round, test
    accuracy there and at the last round; never the test maximum), the target and the DeCUR
    ratio."""
    head = (
        f"{'method':<14}{'val round':>10}{'test@val':>9}{'final acc':>10}{'rounds→target':>15}"
        f"{'S-II bits→target':>18}{'S-I bits':>11}  status"
    )
    lines = [f"target accuracy {summary['target_accuracy']:.4f} ({summary['target_source']})", head]

    def fmt(v: Any, spec: str) -> str:
        return "—" if v is None else format(v, spec)

    for label, m in summary["methods"].items():
        lines.append(
            f"{label:<14}{fmt(m.get('val_selected_round'), 'd'):>10}"
            f"{fmt(m.get('test_accuracy_at_val_selected'), '.4f'):>9}"
            f"{fmt(m['final_accuracy'], '.4f'):>10}"
            f"{fmt(m['stage2_rounds_to_target'], 'd'):>15}"
            f"{fmt(m['stage2_bits_to_target'], '.4g'):>18}{m['stage1_bits']:>11.4g}  {m['status']}"
        )
    if summary["decur_to_supervised_bits_ratio"] is not None:
        lines.append(
            "DeCUR / supervised Stage-II bits to target: "
            f"{summary['decur_to_supervised_bits_ratio']:.3f}"
        )
    return lines
