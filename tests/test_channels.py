"""Tests of flwr_semcom.channels: physics against the formulas, seeding, validation."""

from __future__ import annotations

import math

import pytest
import torch

from flwr_semcom.channels import (
    CHANNELS,
    AWGNChannel,
    DiscreteMemorylessChannel,
    IdealChannel,
    RayleighChannel,
    build_channel,
    channel_uses,
    power_normalize,
    to_complex,
    to_real,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _snr_db(signal: torch.Tensor, noise: torch.Tensor) -> float:
    """Measured SNR in dB: mean signal power over mean noise power (real entries)."""
    return 10 * math.log10(signal.double().pow(2).mean().item() / noise.double().pow(2).mean())


# ---------------------------------------------------------------------------------------------
# Packing and power normalisation


def test_complex_packing_convention_and_round_trip() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    z = to_complex(x)
    assert torch.equal(z, torch.tensor([[1 + 3j, 2 + 4j]], dtype=torch.complex64))
    assert torch.equal(to_real(z), x)
    assert channel_uses(x) == 2


def test_power_normalize_hand_value() -> None:
    # symbols 3+4j and 0+0j: average power (25 + 0) / 2 = 12.5
    x = torch.tensor([[3.0, 0.0, 4.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    out = power_normalize(x)
    assert torch.allclose(out[0], x[0] / math.sqrt(12.5))
    assert torch.equal(out[1], torch.zeros(4))  # an all-zero sample stays zero


def test_power_normalize_exact_per_sample() -> None:
    x = torch.randn(64, 2 * 37, generator=_gen(0)) * torch.logspace(-3, 3, 64).unsqueeze(1)
    out = power_normalize(x)
    k = 37
    power = (out[:, :k] ** 2 + out[:, k:] ** 2).mean(dim=1)
    assert (power - 1).abs().max().item() < 1e-5


# ---------------------------------------------------------------------------------------------
# AWGN (paper 1 eq. 2, h = 1)


@pytest.mark.parametrize("snr_db", [-5.0, 0.0, 5.0, 10.0, 15.0, 20.0, 25.0])
def test_awgn_measured_snr_within_0p1_db(snr_db: float) -> None:
    B, k = 1000, 1000  # 10^6 complex symbols
    x = torch.randn(B, 2 * k, generator=_gen(10)) * 3.0 + 1.0
    y = AWGNChannel(snr_db)(x, generator=_gen(11))
    s = power_normalize(x)
    n = y - s
    assert abs(_snr_db(s, n) - snr_db) < 0.1
    # sigma^2 / 2 in each real part: real and imaginary halves measured separately
    sigma2 = 10 ** (-snr_db / 10)
    for half in (n[:, :k], n[:, k:]):
        assert half.double().var().item() == pytest.approx(sigma2 / 2, rel=0.01)
    assert abs(n.double().mean().item()) < 5 * math.sqrt(sigma2 / 2 / n.numel())


def test_awgn_noise_scales_with_snr_formula() -> None:
    x = torch.randn(8, 20, generator=_gen(1))
    ch = AWGNChannel(10.0)
    n10 = ch(x, generator=_gen(2)) - power_normalize(x)
    ch.set_snr(20.0)
    n20 = ch(x, generator=_gen(2)) - power_normalize(x)
    # sigma ∝ 10^(-snr/20): 10 dB more SNR scales the same noise draw by 10^(-1/2)
    assert torch.allclose(n20, n10 * 10 ** (-0.5), atol=1e-6)
    ch.set_snr(0.0)
    n0 = ch(x, generator=_gen(2)) - power_normalize(x)
    expected = torch.randn(8, 20, generator=_gen(2)) * math.sqrt(0.5)  # sigma^2 = 1
    assert torch.allclose(n0, expected, atol=1e-6)


def test_awgn_seeding() -> None:
    x = torch.randn(4, 16, generator=_gen(0))
    ch = AWGNChannel(5.0)
    assert torch.equal(ch(x, generator=_gen(7)), ch(x, generator=_gen(7)))
    assert not torch.equal(ch(x, generator=_gen(7)), ch(x, generator=_gen(8)))
    assert ch(x).shape == x.shape  # global RNG when no generator is given


def test_awgn_gradient_flows_and_matches_finite_differences() -> None:
    x = torch.randn(3, 8, dtype=torch.float64, generator=_gen(0), requires_grad=True)
    ch = AWGNChannel(3.0)
    assert torch.autograd.gradcheck(lambda t: ch(t, generator=_gen(5)), (x,))
    y = ch(x, generator=_gen(5))
    (y * torch.arange(8.0, dtype=torch.float64)).sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all()) and x.grad.abs().sum() > 0


def test_awgn_per_sample_snr_tensor() -> None:
    snrs = torch.tensor([-5.0, 0.0, 10.0, 25.0])
    B, k = 4, 250_000
    x = torch.randn(B, 2 * k, generator=_gen(3))
    y = AWGNChannel(snrs)(x, generator=_gen(4))
    s = power_normalize(x)
    for b in range(B):
        assert abs(_snr_db(s[b], y[b] - s[b]) - snrs[b].item()) < 0.1
    with pytest.raises(ValueError, match=r"snr_db has 4 entries but the batch has 3 samples"):
        AWGNChannel(snrs)(x[:3])


def test_awgn_float64_dtype_preserved() -> None:
    x = torch.randn(2, 6, dtype=torch.float64)
    assert AWGNChannel(0.0)(x).dtype == torch.float64


# ---------------------------------------------------------------------------------------------
# Rayleigh block fading


def test_rayleigh_h_statistics_and_shapes() -> None:
    B = 200_000
    ch = RayleighChannel(10.0)
    y, h = ch(torch.randn(B, 2, generator=_gen(0)), generator=_gen(1), return_h=True)
    assert y.shape == (B, 2) and h.shape == (B,) and h.dtype == torch.complex64
    gain = h.abs().double().pow(2)
    assert abs(gain.mean().item() - 1.0) < 3 / math.sqrt(B)  # E|h|^2 = 1, Var|h|^2 = 1
    p_half = 1 - math.exp(-0.5)  # |h|^2 ~ Exp(1)
    assert abs((gain < 0.5).double().mean().item() - p_half) < 3 * math.sqrt(p_half / B)
    assert abs(h.real.double().var().item() - 0.5) < 0.01
    assert abs(h.imag.double().var().item() - 0.5) < 0.01
    assert abs((h.real.double() * h.imag.double()).mean().item()) < 0.01


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 20.0])
def test_rayleigh_zf_perfect_csi_effective_snr(snr_db: float) -> None:
    B, k = 400, 2000
    x = torch.randn(B, 2 * k, generator=_gen(2))
    y, h = RayleighChannel(snr_db, csi="perfect")(x, generator=_gen(3), return_h=True)
    s = power_normalize(x)
    err = to_complex(y) - to_complex(s)  # ZF: y = s + n / h
    # undo the equaliser: h (y - s) = n ~ CN(0, sigma^2), so the SNR is the nominal one
    n = h.unsqueeze(1) * err
    assert abs(_snr_db(s, to_real(n)) - snr_db) < 0.1
    # per-sample effective noise power sigma^2 / |h|^2 (k = 2000 symbols: ~2.2% std)
    sigma2 = 10 ** (-snr_db / 10)
    measured = err.abs().double().pow(2).mean(dim=1)
    expected = sigma2 / h.abs().double().pow(2)
    assert (measured / expected - 1).abs().max().item() < 5 / math.sqrt(k)
    # average effective SNR over fades equals the nominal SNR; the median is ln 2 lower
    eff = 1 / measured
    assert eff.mean().item() * sigma2 == pytest.approx(1.0, rel=0.25)


def test_rayleigh_mmse_is_shrunk_zf_with_same_draws() -> None:
    x = torch.randn(16, 10, generator=_gen(0))
    snr = 5.0
    y_zf, h = RayleighChannel(snr, equalizer="zf")(x, generator=_gen(9), return_h=True)
    y_mmse, h2 = RayleighChannel(snr, equalizer="mmse")(x, generator=_gen(9), return_h=True)
    assert torch.equal(h, h2)
    g = h.abs().pow(2).unsqueeze(1)
    shrink = g / (g + 10 ** (-snr / 10))
    assert torch.allclose(to_complex(y_mmse), to_complex(y_zf) * shrink, atol=1e-5)


def test_rayleigh_no_csi_returns_raw_faded_signal() -> None:
    B, k, snr = 200, 1000, 7.0
    x = torch.randn(B, 2 * k, generator=_gen(4))
    ch = RayleighChannel(snr, csi="none")
    assert ch.equalize is False
    y, h = ch(x, generator=_gen(5), return_h=True)
    s = power_normalize(x)
    n = to_complex(y) - h.unsqueeze(1) * to_complex(s)
    assert abs(_snr_db(s, to_real(n)) - snr) < 0.1
    # same draws as the perfect-CSI channel without equalisation
    y2 = RayleighChannel(snr, csi="perfect", equalize=False)(x, generator=_gen(5))
    assert torch.equal(y, y2)


def test_rayleigh_per_sample_snr_and_gradient() -> None:
    snrs = torch.tensor([0.0, 30.0])
    x = torch.randn(2, 40_000, generator=_gen(6), requires_grad=True)
    y, h = RayleighChannel(snrs)(x, generator=_gen(7), return_h=True)
    s = power_normalize(x.detach())
    for b in range(2):
        n = h[b] * (to_complex(y.detach())[b] - to_complex(s)[b])
        assert abs(_snr_db(s[b], to_real(n.unsqueeze(0))) - snrs[b].item()) < 0.2
    y.sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())


def test_rayleigh_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match=r"csi must be one of \('perfect', 'none'\)"):
        RayleighChannel(10.0, csi="partial")
    with pytest.raises(ValueError, match=r"equalize=True requires csi='perfect'"):
        RayleighChannel(10.0, csi="none", equalize=True)
    with pytest.raises(ValueError, match=r"equalizer must be one of \('zf', 'mmse'\)"):
        RayleighChannel(10.0, equalizer="dfe")


# ---------------------------------------------------------------------------------------------
# Ideal channel


def test_ideal_normalises_analog_and_passes_indices() -> None:
    x = torch.randn(5, 12, generator=_gen(0)) * 4
    ch = IdealChannel()
    assert torch.equal(ch(x), power_normalize(x))
    idx = torch.randint(0, 9, (5, 3, 3), generator=_gen(1))
    assert ch(idx) is idx
    assert ch.channel_uses(x) == 6 and ch.channel_uses(idx) == 9


# ---------------------------------------------------------------------------------------------
# Invalid SNRs and inputs


@pytest.mark.parametrize("cls", [AWGNChannel, RayleighChannel])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_snr_rejected(cls: type, bad: float) -> None:
    with pytest.raises(ValueError, match=r"snr_db must be a finite real number in dB, got"):
        cls(bad)
    ch = cls(0.0)
    with pytest.raises(ValueError, match=r"snr_db must be finite"):
        ch.set_snr(torch.tensor([1.0, bad]))


@pytest.mark.parametrize("bad", ["10", None, True, torch.zeros(2, 2), torch.tensor([1 + 1j])])
def test_non_real_snr_rejected(bad: object) -> None:
    with pytest.raises(ValueError, match="snr_db must be"):
        AWGNChannel(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["awgn", "rayleigh", "ideal"])
def test_odd_feature_size_and_bad_shapes_rejected(name: str) -> None:
    kwargs = {} if name == "ideal" else {"snr_db": 10.0}
    ch = build_channel(name, **kwargs)
    with pytest.raises(ValueError, match=r"feature size of x .* even number 2k.*got 7"):
        ch(torch.randn(3, 7))
    with pytest.raises(ValueError, match=r"x must have shape \[B, 2k\]"):
        ch(torch.randn(3, 2, 4))


def test_awgn_rejects_integer_input() -> None:
    with pytest.raises(ValueError, match="x must be a real floating-point tensor"):
        AWGNChannel(0.0)(torch.ones(2, 4, dtype=torch.int64))


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
    with pytest.raises(
        ValueError, match=r"unknown channel 'bsc'; valid names: awgn, dmc, ideal, rayleigh$"
    ):
        build_channel("bsc")
    assert CHANNELS.names() == ["awgn", "dmc", "ideal", "rayleigh"]
    assert isinstance(build_channel("awgn", snr_db=10.0), AWGNChannel)
    assert isinstance(build_channel("rayleigh", snr_db=10.0, csi="perfect"), RayleighChannel)
    assert isinstance(build_channel("ideal"), IdealChannel)
    assert isinstance(build_channel("dmc", num_symbols=3, crossover=0.2), DiscreteMemorylessChannel)
