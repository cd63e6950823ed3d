"""Tests of vertical / IID / Dirichlet partitioning and label-fraction subsets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flwr_semcom.data.partition import (
    check_alignment,
    dirichlet_partition,
    ids_fingerprint,
    iid_partition,
    label_fraction_subset,
    vertical_partition,
)


def test_vertical_partition_aligned_disjoint_shards() -> None:
    ids = torch.arange(100, 203)  # 103 IDs, not starting at 0
    devices = vertical_partition(ids, ["rgb", "depth"], 3, seed=0)
    assert [d.device for d in devices] == [
        "rgb-0",
        "depth-0",
        "rgb-1",
        "depth-1",
        "rgb-2",
        "depth-2",
    ]
    by_name = {d.device: d for d in devices}
    for k in range(3):
        rgb, depth = by_name[f"rgb-{k}"], by_name[f"depth-{k}"]
        assert rgb.modality == "rgb" and depth.modality == "depth" and rgb.shard == k
        assert torch.equal(rgb.ids, depth.ids) and rgb.fingerprint == depth.fingerprint
    shards = [by_name[f"rgb-{k}"].ids for k in range(3)]
    assert sorted(len(s) for s in shards) == [34, 34, 35]
    assert torch.equal(torch.cat(shards).sort().values, ids)  # disjoint and complete
    again = vertical_partition(ids, ["rgb", "depth"], 3, seed=0)
    assert all(torch.equal(a.ids, b.ids) for a, b in zip(devices, again))
    assert not torch.equal(vertical_partition(ids, ["rgb"], 3, seed=1)[0].ids, shards[0])
    assert len(vertical_partition(10, ["rgb"], 1, seed=0)[0].ids) == 10


def test_vertical_partition_bad_inputs() -> None:
    with pytest.raises(ValueError, match=r"devices_per_modality must be in \[1, 5\]"):
        vertical_partition(5, ["rgb", "depth"], 6, seed=0)
    with pytest.raises(ValueError, match="distinct names"):
        vertical_partition(5, ["rgb", "rgb"], 1, seed=0)
    with pytest.raises(ValueError, match="must be unique"):
        vertical_partition([1, 1, 2], ["rgb"], 1, seed=0)


def test_fingerprint_and_alignment_check() -> None:
    a = ids_fingerprint(torch.tensor([3, 1, 2]))
    assert a == ids_fingerprint(np.array([1, 2, 3], dtype=np.int32)) == ids_fingerprint([2, 3, 1])
    assert len(a) == 64 and a != ids_fingerprint([1, 2, 4])
    check_alignment({"rgb-0": a, "depth-0": a})
    with pytest.raises(
        ValueError, match=r"not aligned across devices: .*depth-0 hold .*rgb-0, thermal-0 hold"
    ):
        check_alignment({"rgb-0": a, "thermal-0": a, "depth-0": ids_fingerprint([1, 2])})


def test_iid_partition_covers_every_id_once() -> None:
    parts = iid_partition(50, 4, seed=0)
    assert [len(p) for p in parts] == [13, 13, 12, 12]
    assert torch.equal(torch.cat(parts).sort().values, torch.arange(50))
    same = iid_partition(np.arange(50), 4, seed=0)
    assert all(torch.equal(p, q) for p, q in zip(parts, same))
    with pytest.raises(ValueError, match=r"num_partitions must be in \[1, 50\], got 0"):
        iid_partition(50, 0, seed=0)


def label_skew(parts: list[torch.Tensor], labels: torch.Tensor) -> float:
    """Mean total-variation distance between each partition's label histogram and the global."""
    glob = torch.bincount(labels, minlength=10).float()
    glob /= glob.sum()
    tvs = []
    for p in parts:
        h = torch.bincount(labels[p], minlength=10).float()
        tvs.append(0.5 * float((h / h.sum() - glob).abs().sum()))
    return sum(tvs) / len(tvs)


def test_dirichlet_partition_skew_grows_as_alpha_shrinks() -> None:
    labels = torch.arange(2000) % 10
    skews = []
    for alpha in (100.0, 1.0, 0.1):
        parts = dirichlet_partition(labels, 10, alpha, seed=0, min_size=5)
        assert torch.equal(torch.cat(parts).sort().values, torch.arange(2000))
        assert min(len(p) for p in parts) >= 5
        skews.append(label_skew(parts, labels))
    assert skews[0] < 0.1 < skews[1] < skews[2] and skews[2] > 0.5
    a = dirichlet_partition(labels, 10, 0.5, seed=3)
    b = dirichlet_partition(labels, 10, 0.5, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_dirichlet_partition_bad_inputs() -> None:
    labels = torch.arange(20) % 2
    with pytest.raises(ValueError, match=r"alpha \(Dirichlet concentration\) must be > 0, got 0"):
        dirichlet_partition(labels, 2, 0, seed=0)
    with pytest.raises(ValueError, match=r"min_size must be in \[0, 5\] .* got 6"):
        dirichlet_partition(labels, 4, 1.0, seed=0, min_size=6)
    with pytest.raises(ValueError, match="no draw with min_size=5 in 3 tries"):
        dirichlet_partition(labels, 4, 0.01, seed=0, min_size=5, max_retries=3)


def test_label_fraction_subset_is_stratified_and_seeded() -> None:
    labels = torch.tensor([0] * 40 + [1] * 20 + [2] * 3)
    lab, unlab = label_fraction_subset(labels, 0.5, seed=0)
    assert torch.equal(torch.cat([lab, unlab]).sort().values, torch.arange(63))
    assert torch.bincount(labels[lab]).tolist() == [20, 10, 2]
    lab2, _ = label_fraction_subset(labels, 0.5, seed=0)
    assert torch.equal(lab, lab2) and not torch.equal(label_fraction_subset(labels, 0.5, 1)[0], lab)
    full, none = label_fraction_subset(labels, 1.0, seed=0)
    assert len(full) == 63 and len(none) == 0
    ids = torch.arange(1000, 1063)
    lab_ids, unlab_ids = label_fraction_subset(labels, 0.5, seed=0, ids=ids)
    assert torch.equal(lab_ids, lab + 1000) and torch.equal(unlab_ids, unlab + 1000)
    for bad in (0.0, 1.5, -0.2):
        with pytest.raises(ValueError, match=r"label_fraction must be in \(0, 1\], got"):
            label_fraction_subset(labels, bad, seed=0)
