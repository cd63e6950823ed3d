"""Tests of flwr_semcom.channels: physics against the formulas, seeding, validation."""

from __future__ import annotations

import math

import pytest
import torch

from flwr_semcom.channels import CHANNELS, DiscreteMemorylessChannel, build_channel

# ---------------------------------------------------------------------------------------------
# Discrete memoryless channel (paper 2 eq. 2)


@pytest.mark.parametrize("K,p", [(2, 0.1), (4, 0.3), (16, 0.05), (16, 0.9)])
def test_dmc_empirical_crossover_within_3_sigma(K: int, p: float) -> None:
    n = 200_000
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, K, (n,), generator=g)
    y = DiscreteMemorylessChannel(K, p)(x, generator=g)
    rate = (y != x).double().mean().item()
    sigma = math.sqrt(p * (1 - p) / n)
    assert abs(rate - p) <= 3 * sigma


def test_dmc_flips_uniform_over_other_symbols_chi_square() -> None:
    K, p, n = 8, 0.5, 400_000
    g = torch.Generator().manual_seed(2)
    x = torch.full((n,), 3, dtype=torch.int64)
    y = DiscreteMemorylessChannel(K, p)(x, generator=g)
    flipped = y[y != 3]
    counts = torch.bincount(flipped, minlength=K).double()
    assert counts[3] == 0  # a flipped index never equals the original
    observed = torch.cat([counts[:3], counts[4:]])
    expected = flipped.numel() / (K - 1)
    chi2 = ((observed - expected) ** 2 / expected).sum().item()
    # chi-square with K-2 = 6 degrees of freedom: P(chi2 > 22.46) = 0.001
    assert chi2 < 22.46


def test_dmc_transition_frequencies_match_matrix_for_every_input() -> None:
    K, p, n_per = 5, 0.4, 40_000
    ch = DiscreteMemorylessChannel(K, p)
    g = torch.Generator().manual_seed(3)
    x = torch.arange(K).repeat_interleave(n_per)
    y = ch(x, generator=g)
    freq = torch.zeros(K, K, dtype=torch.float64)
    freq.index_put_((x, y), torch.ones(x.numel(), dtype=torch.float64), accumulate=True)
    freq /= n_per
    P = ch.transition_matrix()
    assert torch.allclose(P.sum(dim=1), torch.ones(K, dtype=torch.float64))
    assert P[0, 0].item() == pytest.approx(0.6) and P[0, 1].item() == pytest.approx(0.1)
    sigma = math.sqrt(0.25 / n_per)  # worst-case binomial std of one frequency
    assert (freq - P).abs().max().item() < 4 * sigma


def test_dmc_p0_identity_and_p1_never_equal() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randint(0, 7, (3, 50, 4), generator=g)
    assert torch.equal(DiscreteMemorylessChannel(7, 0.0)(x, generator=g), x)
    y = DiscreteMemorylessChannel(7, 1.0)(x, generator=g)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert bool((y != x).all())
    assert int(y.min()) >= 0 and int(y.max()) < 7


def test_dmc_seeded_and_binary_flip() -> None:
    x = torch.randint(0, 2, (1000,), generator=torch.Generator().manual_seed(0))
    ch = DiscreteMemorylessChannel(2, 1.0)
    assert torch.equal(ch(x), 1 - x)  # K = 2, p = 1: every bit inverted
    ch.set_crossover(0.3)
    y1 = ch(x, generator=torch.Generator().manual_seed(5))
    y2 = ch(x, generator=torch.Generator().manual_seed(5))
    y3 = ch(x, generator=torch.Generator().manual_seed(6))
    assert torch.equal(y1, y2) and not torch.equal(y1, y3)


def test_dmc_keeps_integer_dtype_and_channel_uses() -> None:
    x = torch.randint(0, 4, (6, 7, 7), dtype=torch.int32)
    ch = DiscreteMemorylessChannel(4, 0.2)
    assert ch(x).dtype == torch.int32
    assert ch.channel_uses(x) == 49


@pytest.mark.parametrize("K", [1, 0, -3, 2.5, True])
def test_dmc_rejects_bad_num_symbols(K: object) -> None:
    with pytest.raises(ValueError, match=r"num_symbols must be an integer >= 2"):
        DiscreteMemorylessChannel(K, 0.1)  # type: ignore[arg-type]


@pytest.mark.parametrize("p", [-0.01, 1.5, float("nan"), float("inf")])
def test_dmc_rejects_bad_crossover(p: float) -> None:
    with pytest.raises(ValueError, match=r"crossover must be in \[0, 1\]"):
        DiscreteMemorylessChannel(4, p)
    ch = DiscreteMemorylessChannel(4, 0.1)
    with pytest.raises(ValueError, match=r"crossover must be in \[0, 1\]"):
        ch.set_crossover(p)


def test_dmc_rejects_bad_indices() -> None:
    ch = DiscreteMemorylessChannel(4, 0.1)
    with pytest.raises(ValueError, match=r"indices must be in \[0, num_symbols=4\)"):
        ch(torch.tensor([0, 4]))
    with pytest.raises(ValueError, match=r"indices must be in \[0, num_symbols=4\)"):
        ch(torch.tensor([-1, 2]))
    with pytest.raises(ValueError, match="indices must be an integer tensor"):
        ch(torch.tensor([0.0, 1.0]))


# ---------------------------------------------------------------------------------------------
# Registry


def test_registry_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown channel 'bsc'; valid names: .*dmc"):
        build_channel("bsc")
    assert "dmc" in CHANNELS
    assert isinstance(build_channel("dmc", num_symbols=3, crossover=0.2), DiscreteMemorylessChannel)
