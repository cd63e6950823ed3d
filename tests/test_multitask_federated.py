"""Paper 3 trained with FedAvg: config rules, client handlers, strategy hooks, tiny e2e run.

Everything runs in-process (:class:`InProcessGrid`, no Ray) on a tiny link and a few scenes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from flwr_semcom.accounting import CommLedger
from flwr_semcom.config import ConfigError, compose_config, config_from_run_config
from flwr_semcom.inprocess import InProcessGrid
from flwr_semcom.multitask import protocol as P
from flwr_semcom.multitask.client import ACTIONS
from flwr_semcom.multitask.data import device_data, full_data
from flwr_semcom.multitask.report import gains
from flwr_semcom.multitask.settings import check_multitask_config, settings_from_config
from flwr_semcom.multitask.training import build_model, build_tasks
from simulations.experiments.multitask import num_nodes, run
from strategies.fedavg_multitask import FedAvgMultitask, sum_metricrecords

TINY = (
    "multitask.num_samples=60 multitask.num_devices=2 multitask.rounds=2 "
    "multitask.local_epochs=1 multitask.batch_size=16 multitask.encoder.widths=[4,8,8,8] "
    "multitask.encoder.blocks_per_stage=1 multitask.gai.node_channels=8 "
    "multitask.gai.relation_hidden=8 multitask.decoder_hidden=8"
)


def _app() -> ClientApp:
    """A ClientApp serving the multitask handlers (``"train.mt_fit"`` → ``app.train("mt_fit")``)."""
    app = ClientApp()
    for message_type, handler in ACTIONS.items():
        kind, _, action = message_type.partition(".")
        getattr(app, kind)(action)(handler)
    return app


@pytest.fixture
def run_config(tmp_path: Path) -> dict[str, str]:
    return {"experiment": "multitask", "overrides": f"{TINY} paths.output_dir={tmp_path}"}


def _grid(run_config: dict[str, str], devices: int = 2) -> InProcessGrid:
    nodes = [{"partition-id": d, "num-partitions": devices} for d in range(devices)]
    return InProcessGrid(_app(), nodes, run_config)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("multitask.gai.heads=3", r"^multitask.gai.heads: must divide .*\(32\), got 3$"),
        ("multitask.bandwidth_ratios=[0.3]", r"^multitask.bandwidth_ratios: R=0.3 gives k=922"),
        ("multitask.tasks=[classification,reconstruction]", r"^multitask.tasks: 'reconstruction'"),
        ("multitask.loss_weights=[1.0]", r"^multitask.loss_weights: expected one weight per task"),
        ("channel.name=rayleigh", r"^channel.name: .* expected 'awgn', got 'rayleigh'$"),
        ("channel.snr_db=5", r"^channel.snr_db: .* list of evaluation SNRs"),
    ],
)
def test_cross_key_errors_are_one_line(override: str, match: str) -> None:
    # the cross-key checks run at composition, i.e. in semcom-run before Flower starts
    with pytest.raises(ConfigError, match=match) as info:
        compose_config("multitask", [override])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("multitask.methods=[gai,gat]", "multitask.methods"),
        ("multitask.rounds=0", "multitask.rounds"),
        ("multitask.lr=-1", "multitask.lr"),
        ("multitask.gai.iterations=-1", "multitask.gai.iterations"),
        ("multitask.encoder.widths=[8,8,8]", "multitask.encoder.widths"),
        ("multitask.train_snr_db=[14,-2]", "multitask.train_snr_db"),
    ],
)
def test_bad_values_fail_at_compose_naming_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}: invalid value .*; expected "):
        compose_config("multitask", [override])


def test_defaults_compose_and_other_experiments_are_unaffected() -> None:
    cfg = compose_config("multitask")
    check_multitask_config(cfg)
    assert num_nodes(cfg) == 4
    assert "multitask" not in compose_config("main")


def test_device_shards_are_disjoint_and_cover_each_part(run_config: dict[str, str]) -> None:
    spec = settings_from_config(config_from_run_config(run_config)).data
    for part in ("train", "test"):
        whole = full_data(spec, part)
        shards = [device_data(spec, d, 3, part) for d in range(3)]
        assert sum(len(s["label"]) for s in shards) == len(whole["label"])
        got = torch.cat([s["image"] for s in shards]).flatten(1).sum(1).sort().values
        assert torch.allclose(got, whole["image"].flatten(1).sum(1).sort().values)
    assert len(full_data(spec, "test")["label"]) == 10  # round(0.2 * 6) per class, stratified


def test_fit_handler_trains_and_reports_shard_size(run_config: dict[str, str]) -> None:
    settings = settings_from_config(config_from_run_config(run_config))
    model = build_model(settings.link, "gai", 1 / 12, seed=0)
    content = RecordDict(
        {
            "arrays": P.to_record(model.state_dict()),
            "config": ConfigRecord({"method": "gai", "ratio": 1 / 12, "server-round": 1}),
        }
    )
    grid = _grid(run_config)
    node = sorted(grid.get_node_ids())[1]
    (reply,) = grid.send_and_receive([Message(content, node, P.FIT)])
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    metrics = reply.content.metric_records["metrics"]
    # 50 training scenes - 10 validation scenes (val_fraction 0.1, at least 1 per class) = 40
    assert metrics["num-examples"] == len(device_data(settings.data, 1, 2, "train")["label"]) == 20
    assert reply.content.config_records["node"]["partition-id"] == 1  # fixes the order
    assert metrics["steps"] == 2  # 20 samples, batch 16 -> 16 + 4
    new = P.from_record(reply.content.array_records["arrays"])
    old = model.state_dict()
    assert not torch.equal(new["encoders.0.stem.0.weight"], old["encoders.0.stem.0.weight"])
    assert grid.contexts[node].state.config_records["multitask.node"]["fits"] == 1
    bad = Message(
        RecordDict(
            {"config": ConfigRecord({"method": "gat", "ratio": 0.25}), "arrays": ArrayRecord()}
        ),
        node,
        P.FIT,
    )
    (err,) = grid.send_and_receive([bad])
    assert err.has_error() and "method must be one of gai, gai_w, separate" in str(err.error.reason)


def test_evaluation_sums_combine_exactly_not_averaged() -> None:
    tasks = build_tasks(settings_from_config(compose_config("multitask")).link)

    def content(correct: float, count: float, se: float, px: float) -> RecordDict:
        return RecordDict(
            {
                "metrics": MetricRecord(
                    {
                        "num-examples": int(count),
                        P.metric_key(0, "classification", "correct"): correct,
                        P.metric_key(0, "classification", "count"): count,
                        P.metric_key(0, "depth", "sq_err_m2"): se,
                        P.metric_key(0, "depth", "pixels"): px,
                    }
                )
            }
        )

    sums = sum_metricrecords([content(3, 4, 8.0, 2.0), content(0, 6, 0.0, 6.0)])
    assert sums["num-examples"] == 10
    out = P.metrics_from_sums(dict(sums), tasks, [5.0])  # type: ignore[arg-type]
    assert out[5.0]["classification"] == pytest.approx(3 / 10)  # an average of ratios: 0.375
    assert out[5.0]["depth"] == pytest.approx((8.0 / 8.0) ** 0.5)  # averaged: 1.0 vs 2 ** 0.5
    with pytest.raises(RuntimeError, match="no evaluation sums for task classification at 14 dB"):
        P.metrics_from_sums(dict(sums), tasks, [5.0, 14.0])  # type: ignore[arg-type]


def test_strategy_counts_parameter_bytes_and_averages_by_examples(
    run_config: dict[str, str],
) -> None:
    link = settings_from_config(config_from_run_config(run_config)).link
    ledger = CommLedger()
    strategy = FedAvgMultitask(
        num_devices=2,
        task_params={"method": "gai_w", "ratio": 0.25},
        train_message_type=P.FIT,
        evaluate_message_type=P.EVAL,
        ledger=ledger,
        label="gai_w/R=1/4",
    )
    grid = _grid(run_config)
    model = build_model(link, "gai_w", 0.25, seed=0)
    arrays = P.to_record(model.state_dict())
    nbytes = 4 * sum(v.numel() for v in model.state_dict().values())
    msgs = list(strategy.configure_train(1, arrays, ConfigRecord({}), grid))
    assert [m.metadata.message_type for m in msgs] == [P.FIT, P.FIT]
    config = msgs[0].content.config_records["config"]
    assert (config["method"], config["ratio"], config["server-round"]) == ("gai_w", 0.25, 1)
    # hand-made replies: device 1 (10 examples) sends all ones, device 0 (30) all zeros
    replies = []
    for pid, msg, (value, n) in zip((1, 0), msgs, [(1.0, 10), (0.0, 30)]):
        rec = ArrayRecord(
            {k: torch.full_like(v.float(), value) for k, v in model.state_dict().items()}
        )
        metrics_in = MetricRecord({"num-examples": n, "loss": value})
        content = RecordDict({"arrays": rec, "metrics": metrics_in, "node": P.node_record(pid)})
        rep = Message(content, reply_to=msg)
        rep.metadata.__dict__["_src_node_id"] = msg.metadata.dst_node_id
        replies.append(rep)
    avg, metrics = strategy.aggregate_train(1, replies)
    assert avg is not None and metrics is not None
    first = next(iter(avg.values())).numpy()
    assert first.flatten()[0] == pytest.approx(0.25)  # (10 * 1 + 30 * 0) / 40
    assert ledger.total(stage="pretrain", direction="up") == 2 * nbytes
    assert ledger.total(stage="pretrain", direction="down") == 2 * nbytes
    # the ledger names devices by partition, in partition order, whatever the node IDs
    assert [(r.client, r.direction) for r in ledger.rows] == [
        ("gai_w/R=1/4/device0", "down"),
        ("gai_w/R=1/4/device0", "up"),
        ("gai_w/R=1/4/device1", "down"),
        ("gai_w/R=1/4/device1", "up"),
    ]
    assert metrics["loss"] == pytest.approx(0.25)


def test_tiny_end_to_end_run_writes_the_results_folder(run_config: dict[str, str]) -> None:
    grid = _grid(run_config)
    cfg = config_from_run_config(run_config)
    summary = run(grid, cfg, grid.server_context())
    folder = Path(summary["results_dir"])
    for name in (
        "config.yaml",
        "metrics.csv",
        "metrics.json",
        "final.csv",
        "gains.csv",
        "table.md",
        "gains.md",
        "ledger.csv",
        "ledger.json",
        "summary.json",
        "classification_vs_R.png",
        "classification_vs_snr.png",
        "depth_vs_R.png",
        "depth_vs_snr.png",
    ):
        assert (folder / name).is_file(), name
    rows = json.loads((folder / "metrics.json").read_text())
    # 2 ratios x 3 methods x 2 rounds x 2 SNRs
    assert len(rows) == 24
    assert {r["method"] for r in rows} == {"gai", "gai_w", "separate"}
    assert all(0.0 <= r["classification_accuracy"] <= 1.0 and r["depth_rmse_m"] > 0 for r in rows)
    # the validation part (10 scenes: 5 training scenes per class, val_fraction 0.1, at least
    # 1 per class) is scored beside the test part
    assert all(0.0 <= r["val_classification_accuracy"] <= 1.0 for r in rows)
    assert {r["val_images"] for r in rows} == {10}
    assert len(summary["final"]) == 12 and len(summary["gains"]) == 8
    # every round: model down + up to each of 2 devices, + the evaluation download
    ledger = json.loads((folder / "ledger.json").read_text())["summary"]
    for run_info in summary["runs"]:
        label = f"{run_info['method']}/R={run_info['R']}"
        link = settings_from_config(cfg).link
        model = build_model(link, run_info["method"], run_info["ratio"], seed=0)
        nbytes = 4 * sum(v.numel() for v in model.state_dict().values())
        rows_l = [
            t
            for t in json.loads((folder / "ledger.json").read_text())["transfers"]
            if t["client"].startswith(label + "/")
        ]
        up = sum(t["bytes"] for t in rows_l if t["stage"] == "pretrain" and t["direction"] == "up")
        assert up == 2 * 2 * nbytes
        uses = sum(t["channel_uses"] for t in rows_l if t["kind"] == "symbols")
        assert uses == 2 * 2 * 10 * run_info["channel_uses_per_image"]  # rounds x SNRs x tests
    assert ledger["pretrain"]["up"]["transfers"] == 6 * 2 * 2
    g = gains(summary["final"], build_tasks(settings_from_config(cfg).link))
    assert {x["baseline"] for x in g} == {"gai_w", "separate"}
