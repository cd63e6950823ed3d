"""Tests of the self-supervised losses against loop references, lightly, and hand values."""

from __future__ import annotations

import math

import pytest
import torch
from lightly.loss import BarlowTwinsLoss as LightlyBarlowTwins
from lightly.loss import NTXentLoss as LightlyNTXent
from torch import Tensor, nn

from flwr_semcom.losses import BarlowTwinsLoss, DeCURLoss, NTXentLoss
from flwr_semcom.losses.barlow_twins import cross_correlation

D64 = torch.float64


def _pair(seed: int, B: int = 12, D: int = 6, dtype: torch.dtype = D64) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    z_a = torch.randn(B, D, generator=g, dtype=dtype) * 2 + 0.5
    z_b = z_a + 0.7 * torch.randn(B, D, generator=g, dtype=dtype)
    return z_a, z_b


# ---------------------------------------------------------------------------------------------
# Loop references written from the formulas


def _ref_corr(z_a: Tensor, z_b: Tensor, eps: float = 1e-5) -> list[list[float]]:
    """C_ij = (1/B) sum_b zhat_a[b,i] zhat_b[b,j], zhat = (z - mean) / sqrt(var_biased + eps)."""
    B, D = z_a.shape
    a, b = z_a.tolist(), z_b.tolist()

    def standardise(rows: list[list[float]]) -> list[list[float]]:
        out = [[0.0] * D for _ in range(B)]
        for j in range(D):
            mean = sum(rows[n][j] for n in range(B)) / B
            var = sum((rows[n][j] - mean) ** 2 for n in range(B)) / B
            for n in range(B):
                out[n][j] = (rows[n][j] - mean) / math.sqrt(var + eps)
        return out

    sa, sb = standardise(a), standardise(b)
    return [[sum(sa[n][i] * sb[n][j] for n in range(B)) / B for j in range(D)] for i in range(D)]


def _ref_bt_block(C: list[list[float]], lo: int, hi: int, target: float, lam: float) -> float:
    loss = 0.0
    for i in range(lo, hi):
        for j in range(lo, hi):
            loss += (target - C[i][j]) ** 2 if i == j else lam * C[i][j] ** 2
    return loss


def _ref_bt(z_a: Tensor, z_b: Tensor, lam: float, eps: float = 1e-5) -> float:
    C = _ref_corr(z_a, z_b, eps)
    return _ref_bt_block(C, 0, len(C), 1.0, lam)


def _ref_ntxent(z_a: Tensor, z_b: Tensor, tau: float) -> float:
    """Eq. 18: mean over the 2N anchors of -log softmax of the positive over the others."""
    z = torch.cat([z_a, z_b]).tolist()
    n2 = len(z)
    n = n2 // 2

    def cos(u: list[float], v: list[float]) -> float:
        dot = sum(x * y for x, y in zip(u, v))
        return dot / math.sqrt(sum(x * x for x in u)) / math.sqrt(sum(y * y for y in v))

    total = 0.0
    for i in range(n2):
        pos = (i + n) % n2
        denom = sum(math.exp(cos(z[i], z[k]) / tau) for k in range(n2) if k != i)
        total += -math.log(math.exp(cos(z[i], z[pos]) / tau) / denom)
    return total / n2


def _ref_decur_terms(
    z1a: Tensor, z1b: Tensor, z2a: Tensor, z2b: Tensor, k: int, lam: float
) -> dict[str, float]:
    D = z1a.shape[1]
    Cx = _ref_corr(z1a, z2a)
    return {
        "intra_1": _ref_bt(z1a, z1b, lam),
        "intra_2": _ref_bt(z2a, z2b, lam),
        "cross_common": _ref_bt_block(Cx, 0, k, 1.0, lam),
        "cross_unique": _ref_bt_block(Cx, k, D, 0.0, lam),
    }


# ---------------------------------------------------------------------------------------------
# Barlow Twins (paper 1 eq. 19)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("lam", [0.0051, 0.0, 1.0])
def test_barlow_twins_matches_loop_reference(seed: int, lam: float) -> None:
    z_a, z_b = _pair(seed)
    got = BarlowTwinsLoss(lam)(z_a, z_b).item()
    assert got == pytest.approx(_ref_bt(z_a, z_b, lam), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_barlow_twins_matches_lightly_with_same_lambda(seed: int) -> None:
    # lightly: F.batch_norm (biased var, eps 1e-5), c / N, lambda_param default 5e-3.
    z_a, z_b = _pair(seed, B=64, D=32, dtype=torch.float32)
    ours = BarlowTwinsLoss(0.0051)(z_a, z_b)
    theirs = LightlyBarlowTwins(lambda_param=0.0051)(z_a, z_b)
    assert abs(ours.item() - theirs.item()) <= 1e-5 * abs(theirs.item())
    # the default lambdas differ (0.0051 vs lightly's 5e-3) by exactly 1e-4 * off-diagonal sum
    c = cross_correlation(z_a.double(), z_b.double())
    off = (c.pow(2).sum() - torch.diagonal(c).pow(2).sum()).item()
    diff = BarlowTwinsLoss()(z_a, z_b).item() - LightlyBarlowTwins()(z_a, z_b).item()
    assert diff == pytest.approx(1e-4 * off, rel=1e-3)


def test_barlow_twins_standardisation_is_batchnorm_without_affine() -> None:
    z_a, z_b = _pair(0, B=16, D=5)
    bn = nn.BatchNorm1d(5, affine=False, dtype=D64).train()
    c_ref = bn(z_a).T @ bn(z_b) / 16
    assert torch.allclose(cross_correlation(z_a, z_b), c_ref, atol=1e-12)


def test_barlow_twins_equals_paper_eq8_for_centred_columns() -> None:
    # Paper 1 eq. 8: C_ij = sum_b z_bi z~_bj / (sqrt(sum_b z_bi^2) sqrt(sum_b z~_bj^2)).
    z_a, z_b = _pair(3, B=10, D=4)
    z_a, z_b = z_a - z_a.mean(0), z_b - z_b.mean(0)
    a, b = z_a.tolist(), z_b.tolist()
    C = [
        [
            sum(a[n][i] * b[n][j] for n in range(10))
            / math.sqrt(sum(a[n][i] ** 2 for n in range(10)))
            / math.sqrt(sum(b[n][j] ** 2 for n in range(10)))
            for j in range(4)
        ]
        for i in range(4)
    ]
    ref = _ref_bt_block(C, 0, 4, 1.0, 0.0051)
    assert BarlowTwinsLoss(eps=0.0)(z_a, z_b).item() == pytest.approx(ref, rel=1e-12)


def test_barlow_twins_hand_values() -> None:
    # columns [1,1,-1,-1] and [1,-1,1,-1]: zero mean, biased std 1, orthogonal -> C = I
    q = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=D64)
    loss = BarlowTwinsLoss(eps=0.0)
    assert loss(q, q).item() == pytest.approx(0.0, abs=1e-15)
    assert loss(q, -q).item() == pytest.approx(8.0)  # C = -I: 2 * (1 - (-1))^2
    swap = q[:, [1, 0]]  # C = [[0,1],[1,0]]: diagonal 2 * 1, off-diagonal lambda * 2
    assert loss(q, swap).item() == pytest.approx(2.0 + 0.0051 * 2)


def test_barlow_twins_invariances() -> None:
    z_a, z_b = _pair(1, B=20, D=7)
    loss = BarlowTwinsLoss()
    base = loss(z_a, z_b)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(loss(z_a[perm], z_b[perm]), base, rtol=1e-12)
    assert torch.allclose(loss(z_b, z_a), base, rtol=1e-12)  # C(b, a) = C(a, b)^T
    scale = torch.linspace(0.5, 3.0, 7, dtype=D64)  # per-dimension affine maps (eps = 0)
    exact = BarlowTwinsLoss(eps=0.0)
    assert torch.allclose(exact(z_a * scale + 4.0, z_b), exact(z_a, z_b), rtol=1e-10)


def test_barlow_twins_gradient_finite() -> None:
    z_a, z_b = _pair(2)
    z_a.requires_grad_(True)
    BarlowTwinsLoss()(z_a, z_b).backward()
    assert z_a.grad is not None and bool(torch.isfinite(z_a.grad).all())
    assert z_a.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# NT-Xent (paper 1 eq. 18)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("tau", [0.1, 0.5, 2.0])
def test_ntxent_matches_loop_reference(seed: int, tau: float) -> None:
    z_a, z_b = _pair(seed, B=7, D=5)
    got = NTXentLoss(tau)(z_a, z_b).item()
    assert got == pytest.approx(_ref_ntxent(z_a, z_b, tau), rel=1e-12)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_ntxent_matches_lightly(seed: int, tau: float) -> None:
    z_a, z_b = _pair(seed, B=64, D=32, dtype=torch.float32)
    ours = NTXentLoss(tau)(z_a, z_b).item()
    theirs = LightlyNTXent(temperature=tau)(z_a, z_b).item()
    assert abs(ours - theirs) <= 1e-5 * abs(theirs)


def test_ntxent_hand_value() -> None:
    # N = 2, orthonormal pairs: every anchor has cos 1 to its positive, 0 to two negatives
    e = torch.eye(2, dtype=D64)
    expected = math.log(1 + 2 * math.exp(-2.0))  # tau = 0.5: -log(e^2 / (e^2 + 2))
    assert NTXentLoss(0.5)(e, e).item() == pytest.approx(expected, rel=1e-12)
    assert NTXentLoss(0.5)(e[:1], e[:1]).item() == pytest.approx(0.0, abs=1e-12)


def test_ntxent_invariances() -> None:
    z_a, z_b = _pair(4, B=9, D=6)
    loss = NTXentLoss(0.3)
    base = loss(z_a, z_b)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(loss(z_a[perm], z_b[perm]), base, rtol=1e-12)
    assert torch.allclose(loss(z_b, z_a), base, rtol=1e-12)
    scale = torch.linspace(0.1, 10, 9, dtype=D64).unsqueeze(1)  # per-sample positive scale
    assert torch.allclose(loss(z_a * scale, z_b), base, rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# DeCUR (paper 1 eq. 7-15)


def _quad(seed: int, B: int = 12, D: int = 6) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(B, D, generator=g, dtype=D64)
    z1a = shared + 0.5 * torch.randn(B, D, generator=g, dtype=D64)
    z1b = z1a + 0.3 * torch.randn(B, D, generator=g, dtype=D64)
    z2a = shared + 0.8 * torch.randn(B, D, generator=g, dtype=D64)
    z2b = z2a + 0.3 * torch.randn(B, D, generator=g, dtype=D64)
    return z1a, z1b, z2a, z2b


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k", [0, 2, 4, 6])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_decur_matches_loop_reference(seed: int, k: int, reduction: str) -> None:
    zs = _quad(seed)
    terms = DeCURLoss(k, reduction=reduction).forward_terms(*zs)
    ref = _ref_decur_terms(*zs, k=k, lam=0.0051)
    for name, value in ref.items():
        assert terms[name].item() == pytest.approx(value, rel=1e-12, abs=1e-12)
    assert terms["cross"].item() == pytest.approx(ref["cross_common"] + ref["cross_unique"])
    if reduction == "sum":  # eq. 7, one unordered modality pair
        expected = sum(ref.values())
    else:  # official DeCUR: (L1 + L2 + (L_c + L_u) / 2) / 3
        expected = (
            ref["intra_1"] + ref["intra_2"] + (ref["cross_common"] + ref["cross_unique"]) / 2
        ) / 3
    assert terms["loss"].item() == pytest.approx(expected, rel=1e-12)
    assert DeCURLoss(k, reduction=reduction)(*zs).item() == pytest.approx(expected, rel=1e-12)


def test_decur_mean_matches_official_code_structure() -> None:
    # Re-statement of zhu-xlab/DeCUR's DeCUR.forward + training step with nn.BatchNorm1d.
    z1a, z1b, z2a, z2b = _quad(7, B=16, D=8)
    bn = nn.BatchNorm1d(8, affine=False, dtype=D64).train()
    lam, dim_c = 0.0051, 6

    def off(c: Tensor) -> Tensor:
        n = c.shape[0]
        return c.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()

    def single(a: Tensor, b: Tensor) -> Tensor:
        c = bn(a).T @ bn(b) / a.shape[0]
        return (torch.diagonal(c) - 1).pow(2).sum() + lam * off(c).pow(2).sum()

    c = bn(z1a).T @ bn(z2a) / 16
    cc, cu = c[:dim_c, :dim_c], c[dim_c:, dim_c:]
    loss_c = (torch.diagonal(cc) - 1).pow(2).sum() + lam * off(cc).pow(2).sum()
    loss_u = torch.diagonal(cu).pow(2).sum() + lam * off(cu).pow(2).sum()
    official = (single(z1a, z1b) + single(z2a, z2b) + (loss_c + loss_u) / 2) / 3
    ours = DeCURLoss(dim_c, reduction="mean")(z1a, z1b, z2a, z2b)
    assert ours.item() == pytest.approx(official.item(), rel=1e-12)


def test_decur_full_common_dim_is_sum_of_barlow_twins() -> None:
    zs = _quad(5, B=32, D=10)
    z1a, z1b, z2a, z2b = zs
    bt = BarlowTwinsLoss()
    expected = bt(z1a, z1b) + bt(z2a, z2b) + bt(z1a, z2a)
    assert torch.allclose(DeCURLoss(10)(*zs), expected, rtol=1e-12)
    t = DeCURLoss(10).forward_terms(*zs)
    assert t["cross_unique"].item() == 0.0
    assert torch.allclose(t["cross"], bt(z1a, z2a), rtol=1e-12)


def test_decur_hand_value_and_weights() -> None:
    q = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=D64)
    # all C = I; common_dim 1: common block [1] -> 0, unique block [1] -> 1^2 = 1
    assert DeCURLoss(1, eps=0.0)(q, q, q, q).item() == pytest.approx(1.0)
    assert DeCURLoss(1, eps=0.0, reduction="mean")(q, q, q, q).item() == pytest.approx(1 / 6)
    for red in ("sum", "mean"):
        loss = DeCURLoss(3, reduction=red)
        t = loss.forward_terms(*_quad(1))
        recombined = sum(w * t[name] for name, w in loss.weights.items())
        assert torch.allclose(t["loss"], recombined, rtol=1e-12)  # type: ignore[arg-type]


def test_decur_invariances() -> None:
    zs = _quad(2, B=15, D=6)
    loss = DeCURLoss(4)
    base = loss(*zs)
    perm = torch.randperm(15, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(loss(*(z[perm] for z in zs)), base, rtol=1e-12)
    # swapping modalities: intra terms swap, C -> C^T leaves both cross terms unchanged
    z1a, z1b, z2a, z2b = zs
    assert torch.allclose(loss(z2a, z2b, z1a, z1b), base, rtol=1e-12)


def test_decur_gradients_reach_all_inputs() -> None:
    zs = [z.clone().requires_grad_(True) for z in _quad(0)]
    DeCURLoss(3)(*zs).backward()
    for z in zs:
        assert z.grad is not None and z.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf"), "0.1", True])
def test_lambda_validation(bad: object) -> None:
    with pytest.raises(ValueError, match="lambda_offdiag must be a finite number >= 0"):
        BarlowTwinsLoss(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lambda_offdiag must be a finite number >= 0"):
        DeCURLoss(2, lambda_offdiag=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_temperature_validation(bad: float) -> None:
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        NTXentLoss(bad)


def test_decur_argument_validation() -> None:
    with pytest.raises(ValueError, match="common_dim must be an integer >= 0, got -1"):
        DeCURLoss(-1)
    with pytest.raises(ValueError, match="common_dim must be an integer >= 0"):
        DeCURLoss(2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"reduction must be one of \('sum', 'mean'\)"):
        DeCURLoss(2, reduction="none")
    with pytest.raises(ValueError, match=r"common_dim must be in \[0, D=6\].*got 7"):
        DeCURLoss(7)(*_quad(0))


def test_input_validation() -> None:
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match="same shape"):
        BarlowTwinsLoss()(z, torch.randn(4, 5))
    with pytest.raises(ValueError, match="batch size must be >= 2, got 1"):
        BarlowTwinsLoss()(z[:1], z[:1])
    with pytest.raises(ValueError, match=r"z_a must have shape \[B, D\]"):
        NTXentLoss()(torch.randn(4, 3, 2), torch.randn(4, 3, 2))
    with pytest.raises(ValueError, match="z_b must be a floating-point tensor"):
        NTXentLoss()(z, torch.ones(4, 3, dtype=torch.int64))
