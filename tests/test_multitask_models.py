"""Paper 3 (arXiv 2501.02006) building blocks: GAI module, links, tasks, bandwidth accounting."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from flwr_semcom.channels import AWGNChannel
from flwr_semcom.models.jscc import bandwidth_ratio
from flwr_semcom.multitask.backbone import BlockEncoder
from flwr_semcom.multitask.gai import GAIModule, GraphAttentionLayer, RelationMapping
from flwr_semcom.multitask.system import MultiTaskSemCom, split_symbols, symbols_for_ratio
from flwr_semcom.multitask.tasks import build_task

TASKS = [build_task("classification"), build_task("depth")]
SMALL = dict(
    widths=(4, 8, 8, 8),
    blocks_per_stage=2,
    node_channels=8,
    heads=2,
    relation_hidden=8,
    decoder_hidden=8,
)


def _model(method: str, k: int = 256) -> MultiTaskSemCom:
    torch.manual_seed(0)
    return MultiTaskSemCom(TASKS, method, k, **SMALL)  # type: ignore[arg-type]


def test_channel_uses_follow_the_bandwidth_ratio() -> None:
    # R = k / n with n = 3*32*32 = 3072 real source dimensions
    assert symbols_for_ratio(1 / 12, 3072) == 256
    assert symbols_for_ratio(1 / 4, 3072) == 768
    assert split_symbols(256, 2) == [128, 128] and split_symbols(7, 3) == [3, 2, 2]
    with pytest.raises(ValueError, match="cannot be split"):
        split_symbols(1, 2)
    for method in ("gai", "gai_w", "separate"):
        model = _model(method, 256)
        out = model(torch.rand(3, 3, 32, 32))
        assert [v.shape for v in out["z"].values()] == [(3, 256), (3, 256)]  # 2 k_t reals
        assert model.channel_uses() == 256 == MultiTaskSemCom.count_uses(out["z"])
        assert bandwidth_ratio(model.channel_uses(), (3, 32, 32)) == pytest.approx(1 / 12)
        assert model.ds_channels == [16, 16]  # 2 * 128 reals = 16 channels of 4x4


def test_outputs_shapes_and_gradient_flow_through_gai_and_channel() -> None:
    model = _model("gai")
    x = torch.rand(4, 3, 32, 32)
    out = model(x, AWGNChannel(torch.tensor([-2.0, 0.0, 7.0, 14.0])))
    preds = out["outputs"]
    assert preds["classification"].shape == (4, 10)
    assert preds["depth"].shape == (4, 1, 32, 32)
    assert ((preds["depth"] >= 0) & (preds["depth"] <= 1)).all()
    assert out["weights"].shape == (4, 2, 8)  # T tasks x N = 8 blocks (ResNet-18 layout)
    assert torch.allclose(out["weights"].sum(-1), torch.ones(4, 2))
    assert out["attention"].shape == (4, 1, 2, 8, 8)  # M = 1, H = 2
    assert torch.allclose(out["attention"].sum(-1), torch.ones(4, 1, 2, 8))
    loss = TASKS[0].loss(preds["classification"], torch.tensor([0, 1, 2, 3])) + TASKS[1].loss(
        preds["depth"], torch.rand(4, 1, 32, 32)
    )
    loss.backward()
    gai = model.gai
    assert gai is not None
    for name, p in [
        ("stem", model.encoders[0].stem[0].weight),
        ("first block", model.encoders[0].blocks[0].conv1.weight),
        ("attention a", gai.layers[0].att_src),
        ("attention W", gai.layers[0].proj.weight),
        ("relation MLP", gai.relation.mlps[1][0].weight),
        ("downscale", model.downscale[0].weight),
        ("decoder", model.decoders[1][0].weight),
    ]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_gai_w_has_no_graph_updates_and_separate_has_one_encoder_per_task() -> None:
    gai, gai_w, sep = _model("gai"), _model("gai_w"), _model("separate")
    assert gai.gai is not None and len(gai.gai.layers) == 1
    assert gai_w.gai is not None and len(gai_w.gai.layers) == 0
    assert gai_w(torch.rand(2, 3, 32, 32))["attention"].shape == (2, 0, 2, 8, 8)
    assert sep.gai is None and len(sep.encoders) == 2
    assert sep(torch.rand(2, 3, 32, 32))["weights"] is None
    # GAI-w is GAI minus exactly the graph-attention layer's parameters
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(gai) - n(gai_w) == n(gai.gai.layers[0]) == 8 * 8 + 2 * 2 * 4


def test_block_encoder_is_resnet18_with_default_widths() -> None:
    enc = BlockEncoder(3, (64, 128, 256, 512), 2)
    feats = enc(torch.rand(1, 3, 32, 32))
    assert enc.num_nodes == 8
    assert [tuple(f.shape[1:]) for f in feats] == [
        (64, 32, 32),
        (64, 32, 32),
        (128, 16, 16),
        (128, 16, 16),
        (256, 8, 8),
        (256, 8, 8),
        (512, 4, 4),
        (512, 4, 4),
    ]
    # torchvision ResNet-18 convolutions and BN of the 8 blocks + small stem (no fc)
    assert sum(p.numel() for p in enc.parameters()) == 11_168_832


def test_graph_attention_hand_computed_uniform_case() -> None:
    layer = GraphAttentionLayer(channels=4, heads=2)
    with torch.no_grad():
        layer.proj.weight.copy_(torch.eye(4).reshape(4, 4, 1, 1))  # W = I
        layer.att_src.zero_()
        layer.att_dst.zero_()  # all logits 0 -> alpha = 1/N
    nodes = torch.randn(2, 3, 4, 2, 2)
    out, alpha = layer(nodes)
    assert torch.allclose(alpha, torch.full((2, 2, 3, 3), 1 / 3))
    expected = nodes + nn.functional.elu(nodes.mean(1, keepdim=True).expand_as(nodes))
    assert torch.allclose(out, expected, atol=1e-6)


def test_graph_attention_logits_hand_computed() -> None:
    layer = GraphAttentionLayer(channels=2, heads=1)
    with torch.no_grad():
        layer.proj.weight.copy_(torch.eye(2).reshape(2, 2, 1, 1))
        layer.att_src.copy_(torch.tensor([[1.0, 0.0]]))
        layer.att_dst.copy_(torch.tensor([[0.0, 2.0]]))
    # two nodes with constant maps: u_1 = (1, 0), u_2 = (0, 1)
    nodes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])[None, :, :, None, None].expand(1, 2, 2, 1, 1)
    _, alpha = layer(nodes.contiguous())
    # e_ij = LeakyReLU(a_src.u_i + a_dst.u_j): e_11 = 1, e_12 = 3, e_21 = 0, e_22 = 2
    e = torch.tensor([[1.0, 3.0], [0.0, 2.0]])
    assert torch.allclose(alpha[0, 0], torch.softmax(e, -1), atol=1e-6)


def test_graph_attention_is_permutation_equivariant_over_nodes() -> None:
    torch.manual_seed(1)
    layer = GraphAttentionLayer(channels=8, heads=4)
    nodes = torch.randn(2, 5, 8, 3, 3)
    perm = torch.tensor([3, 0, 4, 1, 2])
    out, _ = layer(nodes)
    out_p, _ = layer(nodes[:, perm])
    assert torch.allclose(out_p, out[:, perm], atol=1e-5)


def test_relation_weights_and_fusion() -> None:
    torch.manual_seed(2)
    gai = GAIModule(
        [4, 4, 8], out_channels=4, size=2, heads=2, iterations=1, relation_hidden=5, num_tasks=3
    )
    feats = [torch.randn(2, 4, 8, 8), torch.randn(2, 4, 4, 4), torch.randn(2, 8, 2, 2)]
    out = gai(feats)
    assert out["nodes"].shape == (2, 3, 4, 2, 2)
    manual = (out["weights"][:, :, :, None, None, None] * out["nodes"][:, None]).sum(2)
    assert torch.allclose(out["fused"], manual, atol=1e-6)
    rm = RelationMapping(4, 5, 3)
    w = rm(out["nodes"])
    assert w.shape == (2, 3, 3) and torch.allclose(w.sum(-1), torch.ones(2, 3))


def test_task_metrics_hand_computed_and_additive() -> None:
    cls, depth, rec = (build_task(n) for n in ("classification", "depth", "reconstruction"))
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    assert cls.finalize(cls.stats(logits, torch.tensor([0, 0, 0]))) == pytest.approx(2 / 3)
    target = torch.tensor([[[[0.2, 0.0], [0.3, 0.1]]]])  # one missing pixel (0)
    pred = torch.tensor([[[[0.25, 0.9], [0.3, 0.0]]]])
    # valid errors in metres: 0.5, 0, -1.0 -> RMSE sqrt((0.25 + 0 + 1) / 3)
    assert depth.finalize(depth.stats(pred, target)) == pytest.approx(math.sqrt(1.25 / 3))
    assert depth.loss(pred, target).item() == pytest.approx((0.05 + 0.0 + 0.1) / 3)
    img = torch.zeros(2, 3, 4, 4)
    noisy = img + 0.1  # MSE 0.01 -> PSNR 20 dB
    assert rec.finalize(rec.stats(noisy, img)) == pytest.approx(20.0, abs=1e-4)
    # sums from two shards combine into the metric of the whole batch
    p, t = torch.rand(6, 1, 4, 4), torch.rand(6, 1, 4, 4)
    a, b = depth.stats(p[:2], t[:2]), depth.stats(p[2:], t[2:])
    both = {k: a[k] + b[k] for k in a}
    assert depth.finalize(both) == pytest.approx(depth.finalize(depth.stats(p, t)))


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="unknown method 'gat'; valid names: gai, gai_w"):
        MultiTaskSemCom(TASKS, "gat", 256, **SMALL)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="multiple of 16"):
        MultiTaskSemCom(TASKS, "gai", 300, **SMALL)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="divisible by heads"):
        GraphAttentionLayer(6, 4)
    with pytest.raises(ValueError, match="unknown task 'segmentation'"):
        build_task("segmentation")
