"""ServerApp: split fine-tuning, then the FedAvg baseline, on the same images; writes results."""

import json
from logging import INFO
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import Result

from byo_app.task import Encoder, decoder, load_data
from flwr_semcom.accounting import CommLedger
from flwr_semcom.channels import RayleighChannel
from flwr_semcom.fedavg import EndToEnd, LedgerFedAvg
from flwr_semcom.split import DecoderServer
from strategies.split_training import SplitTraining

app = ServerApp()


def summary(result: Result, key: str, ledger: CommLedger) -> dict:
    """The last round's test accuracy and the bytes sent (training only, and in all)."""
    accuracy = result.evaluate_metrics_clientapp[max(result.evaluate_metrics_clientapp)][key]
    return {"accuracy": accuracy, "train_bytes": ledger.total(stage="finetune"),
            "total_bytes": ledger.total()}  # fmt: skip


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    rounds, k, seed, lr = (int(cfg["num-rounds"]), int(cfg["num-symbols"]), int(cfg["seed"]),
                           float(cfg["lr"]))  # fmt: skip
    _, labels, train_ids, test_ids = load_data(cfg)  # the server needs the labels only

    # 1) Split fine-tuning: the devices send received features, the server returns gradients.
    torch.manual_seed(seed)
    server = DecoderServer(
        decoder(k), labels, train_ids=train_ids, test_ids=test_ids, num_clients=2,
        optimizer=lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9),
    )  # fmt: skip
    split = SplitTraining(
        server, client_task="byo-device", rounds=rounds, batch_size=int(cfg["batch-size"]),
        steps_per_message=int(cfg["steps-per-message"]), seed=seed, ledger=CommLedger(),
    )  # fmt: skip
    results = {"split": summary(split.start(grid), "test_accuracy", split.ledger)}

    # 2) FedAvg baseline: every device trains the whole link on its images; weights averaged.
    torch.manual_seed(seed)
    model = EndToEnd(Encoder(k), RayleighChannel(float(cfg["snr-db"])), decoder(k))
    fedavg = LedgerFedAvg(ledger=CommLedger())
    train_config = ConfigRecord({"lr": lr, "batch-size": int(cfg["batch-size"]), "seed": seed})
    result = fedavg.start(grid, ArrayRecord(model.state_dict()), rounds, train_config=train_config)
    results["fedavg"] = summary(result, "eval_acc", fedavg.ledger)

    out = Path(str(cfg["results-dir"])).expanduser().resolve() / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    log(INFO, "%s (written to %s)", json.dumps(results), out)
