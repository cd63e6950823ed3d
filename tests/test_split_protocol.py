"""Split runtime building blocks: seeds, batch plans, wire format, state records."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord
from torch import nn

from flwr_semcom.split.protocol import (
    decode_plan,
    encode_plan,
    pack_tensors,
    record_nbytes,
    unpack_tensors,
)
from flwr_semcom.split.schedule import (
    BatchPlan,
    client_plans,
    derive_seed,
    eval_batches,
    group,
    train_batches,
)
from flwr_semcom.split.state import load_module, load_optimizer, module_record, optimizer_records


def test_derive_seed_is_stable_and_separates_streams() -> None:
    a = derive_seed(0, "noise", 1, 2)
    assert a == derive_seed(0, "noise", 1, 2)
    assert 0 <= a < 2**63
    others = {
        derive_seed(0, "noise", 1, 3),
        derive_seed(0, "aug", 1, 2),
        derive_seed(1, "noise", 1, 2),
    }
    assert a not in others and len(others) == 3
    with pytest.raises(ValueError, match="ints >= 0 or strings"):
        derive_seed(-1)


def test_train_batches_cover_every_id_once_and_depend_on_round() -> None:
    ids = torch.arange(10, 33)
    b1 = train_batches(ids, 5, seed=3, round_=1)
    assert [b.size for b in b1] == [5, 5, 5, 5, 3]
    assert sorted(torch.cat([b.ids for b in b1]).tolist()) == ids.tolist()
    assert [b.index for b in b1] == [0, 1, 2, 3, 4]
    again = train_batches(ids, 5, seed=3, round_=1)
    assert all(torch.equal(x.ids, y.ids) and x.aug_seed == y.aug_seed for x, y in zip(b1, again))
    b2 = train_batches(ids, 5, seed=3, round_=2)
    assert not torch.equal(torch.cat([b.ids for b in b1]), torch.cat([b.ids for b in b2]))
    # a last batch of one sample is dropped (batch norm cannot train on it); drop_last drops 3
    assert [b.size for b in train_batches(torch.arange(11), 5, seed=0, round_=1)] == [5, 5]
    assert len(train_batches(ids, 5, seed=3, round_=1, drop_last=True)) == 4


def test_client_plans_share_ids_and_augmentation_but_not_noise() -> None:
    batches = train_batches(torch.arange(8), 4, seed=0, round_=1)
    p0 = client_plans(batches, 0, seed=0, stage="finetune", round_=1)
    p1 = client_plans(batches, 1, seed=0, stage="finetune", round_=1)
    for a, b in zip(p0, p1):
        assert torch.equal(a.ids, b.ids) and a.aug_seed == b.aug_seed
        assert a.noise_seed != b.noise_seed
    assert [len(g) for g in group(list(range(7)), 3)] == [3, 3, 1]  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps per message"):
        group(p0, 0)
    ev = eval_batches(torch.arange(5), 2)
    assert [b.ids.tolist() for b in ev] == [[0, 1], [2, 3], [4]]


def test_plan_round_trip_and_malformed_plans() -> None:
    plans = [
        BatchPlan(3, torch.tensor([4, 1, 7]), 11, 2**62),
        BatchPlan(4, torch.tensor([0, 2]), 12, 5),
    ]
    rec = encode_plan(plans)
    back = decode_plan(rec)
    assert [(b.index, b.ids.tolist(), b.aug_seed, b.noise_seed) for b in back] == [
        (3, [4, 1, 7], 11, 2**62),
        (4, [0, 2], 12, 5),
    ]
    # 5 ids + 4 arrays of 2 int64 each
    assert record_nbytes(rec) == 8 * 5 + 4 * 8 * 2
    del rec["aug_seeds"]
    with pytest.raises(ValueError, match="lacks aug_seeds"):
        decode_plan(rec)
    bad = encode_plan(plans)
    bad["sizes"] = encode_plan([BatchPlan(0, torch.arange(9), 0, 0), plans[1]])["sizes"]
    with pytest.raises(ValueError, match="do not add up"):
        decode_plan(bad)


def test_pack_unpack_and_record_sizes() -> None:
    per_batch = [{"z_hat": torch.randn(3, 4)}, {"z_hat": torch.randn(2, 4)}]
    rec = pack_tensors(per_batch)
    assert record_nbytes(rec) == 5 * 4 * 4
    out = unpack_tensors(rec, [3, 2])
    assert all(torch.equal(a["z_hat"], b["z_hat"]) for a, b in zip(out, per_batch))
    with pytest.raises(ValueError, match="5 rows, expected 6"):
        unpack_tensors(rec, [3, 3])
    cfg = ConfigRecord(
        {"experiment": "split_supervised", "overrides": "a=1", "round": 2, "profile": True}
    )
    assert record_nbytes(cfg) == len("split_supervised") + 3 + 8 + 1
    assert record_nbytes(MetricRecord({"x": 1.0, "y": [1, 2]})) == 24
    assert record_nbytes(ArrayRecord({"h": Array(np.zeros((2, 3), dtype=np.float16))})) == 12


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
        lambda p: torch.optim.SGD(p, lr=0.1),
        lambda p: torch.optim.Adam(p, lr=0.01),
    ],
)
def test_state_records_restore_training_exactly(make_opt) -> None:  # type: ignore[no-untyped-def]
    """Stepping a restored copy gives exactly what stepping the original gives."""
    x, y = torch.randn(8, 4), torch.randn(8, 2)

    def step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()

    a = _net()
    opt_a = make_opt(a.parameters())
    step(a, opt_a)
    step(a, opt_a)
    rec = module_record(a)
    arrays, meta = optimizer_records(opt_a)
    b = _net()
    with torch.no_grad():
        for p in b.parameters():
            p.add_(1.0)  # different weights, so the load must overwrite them
    load_module(b, rec)
    opt_b = make_opt(b.parameters())
    load_optimizer(opt_b, arrays, meta)
    step(a, opt_a)
    step(b, opt_b)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka


def test_load_module_rejects_a_foreign_state() -> None:
    rec = module_record(nn.Linear(3, 2))
    with pytest.raises(ValueError, match="does not fit the model"):
        load_module(nn.Linear(4, 2), rec)


def test_config_errors_name_the_key_and_the_valid_range() -> None:
    from omegaconf import OmegaConf

    from flwr_semcom.config import ConfigError, compose_config
    from flwr_semcom.paper1.rgbd import channel_kwargs, modality_of
    from flwr_semcom.split import check_split_config

    with pytest.raises(
        ConfigError,
        match=r"strategy.steps_per_message: invalid value 0; expected an integer in \[1, 100000\]",
    ):
        compose_config("split_supervised", "strategy.steps_per_message=0")
    with pytest.raises(
        ConfigError, match=r"strategy.momentum: invalid value 1.0; expected a number in \[0, 1\)"
    ):
        compose_config("split_supervised", "strategy.momentum=1.0")
    cfg = compose_config("split_supervised")
    OmegaConf.set_struct(cfg, False)
    del cfg.strategy["batch_size"]
    with pytest.raises(ConfigError, match="strategy.batch_size: missing; expected an integer"):
        check_split_config(cfg)
    with pytest.raises(
        ConfigError, match=r"partition-id: 2 out of range; data.modalities .*gives partitions 0..1"
    ):
        modality_of(compose_config("split_supervised"), 2)
    with pytest.raises(ConfigError, match="data.devices_per_modality: 2 is not supported"):
        modality_of(compose_config("split_supervised", "data.devices_per_modality=2"), 0)
    with pytest.raises(ConfigError, match="channel.name: 'dmc' cannot carry analog features"):
        channel_kwargs(compose_config("split_supervised", "channel=dmc"))
    sweep = compose_config("split_supervised")
    sweep.channel.snr_db = OmegaConf.create([0.0, 10.0])
    with pytest.raises(ConfigError, match="channel.snr_db: .* is a sweep"):
        channel_kwargs(sweep)
