"""Numeric checks of the diffusion math: EDM preconditioning, the Karras schedule, Euler/Heun samplers."""

from __future__ import annotations

import math

import pytest
import torch

from worldvid.model import (
    Denoiser,
    WorldModelConfig,
    edm_preconditioning,
    karras_sigmas,
    randn,
    sample_euler,
    sample_heun,
)

SD = 0.5


def tiny_config(**changes) -> WorldModelConfig:
    base = dict(action_dim=2, frame_size=16, context=2, block_channels=(8, 16), time_embed_dim=32,
                action_embed_dim=16, num_steps=1)
    base.update(changes)
    return WorldModelConfig(**base)


# ---------------------------------------------------------------------------- preconditioning
def test_preconditioning_matches_karras_table_1():
    sigma = torch.tensor([1e-3, 0.1, 0.5, 1.0, 5.0, 80.0])
    pc = edm_preconditioning(sigma, SD)
    s = sigma.double()
    total = s**2 + SD**2
    torch.testing.assert_close(pc.c_skip.flatten().double(), SD**2 / total, rtol=1e-6, atol=0)
    torch.testing.assert_close(pc.c_out.flatten().double(), s * SD / total.sqrt(), rtol=1e-6, atol=0)
    torch.testing.assert_close(pc.c_in.flatten().double(), 1 / total.sqrt(), rtol=1e-6, atol=0)
    torch.testing.assert_close(pc.c_noise.double(), s.log() / 4, rtol=1e-6, atol=1e-7)
    assert pc.c_skip.shape == (6, 1, 1, 1) and pc.c_noise.shape == (6,)


def test_preconditioning_identities():
    sigma = torch.logspace(-3, 2, 50)
    pc = edm_preconditioning(sigma, SD)
    # The skip and network paths split the unit variance: c_skip + c_out^2 / sd^2 = 1.
    torch.testing.assert_close(pc.c_skip + pc.c_out**2 / SD**2, torch.ones_like(pc.c_skip))
    # c_in normalises the noisy input x + n (variance sd^2 + s^2) to unit variance.
    torch.testing.assert_close(pc.c_in**2 * (sigma.view(-1, 1, 1, 1) ** 2 + SD**2), torch.ones_like(pc.c_in))
    torch.testing.assert_close(pc.c_out, sigma.view(-1, 1, 1, 1) * SD * pc.c_in)
    # Effective training target (x - c_skip (x + n)) / c_out has unit variance for data of std sd.
    var = ((1 - pc.c_skip) ** 2 * SD**2 + pc.c_skip**2 * sigma.view(-1, 1, 1, 1) ** 2) / pc.c_out**2
    torch.testing.assert_close(var, torch.ones_like(var))


def _randomised_denoiser(config: WorldModelConfig) -> Denoiser:
    den = Denoiser(config)
    torch.manual_seed(0)
    torch.nn.init.normal_(den.inner.unet.conv_out.weight, std=0.1)  # it starts at zero; make F non-trivial
    return den.eval()


def test_denoiser_returns_input_as_sigma_goes_to_zero_and_combines_paths():
    config = tiny_config()
    den = _randomised_denoiser(config)
    g = torch.Generator().manual_seed(1)
    x = randn((3, 3, 16, 16), g)
    context = randn((3, 2, 3, 16, 16), g).clamp(-1, 1)
    actions = randn((3, 2, 2), g)
    with torch.no_grad():
        near_zero = den(x, torch.full((3,), 1e-6), context, actions)
        torch.testing.assert_close(near_zero, x, atol=1e-5, rtol=0)
        sigma = torch.tensor([0.05, 1.0, 4.0])
        out = den(x, sigma, context, actions)
        pc = den.preconditioning(sigma)
        inner = den.inner(x * pc.c_in, pc.c_noise, context.reshape(3, 6, 16, 16) / SD, actions)
        torch.testing.assert_close(out, pc.c_skip * x + pc.c_out * inner)
        assert not torch.allclose(inner, torch.zeros_like(inner))
        # A scalar sigma is broadcast over the batch.
        torch.testing.assert_close(den(x, torch.tensor(1.0), context, actions),
                                   den(x, torch.ones(3), context, actions))


def test_loss_target_has_unit_variance_for_data_of_std_sigma_data():
    # The UNet's output conv starts at zero, so F = 0 and the loss is E[target^2] = 1 by construction.
    config = tiny_config(context_noise_max=0.0)
    den = Denoiser(config)
    g = torch.Generator().manual_seed(0)
    frames = SD * randn((256, 3, 16, 16), g)
    context = randn((256, 2, 3, 16, 16), g).clamp(-1, 1)
    actions = randn((256, 2, 2), g)
    with torch.no_grad():
        loss = den.loss(frames, context, actions, generator=g)
    assert loss.ndim == 0
    assert abs(loss.item() - 1.0) < 0.03


def test_loss_is_reproducible_under_a_generator_and_has_gradients():
    den = _randomised_denoiser(tiny_config())
    frames = torch.rand(4, 3, 16, 16) * 2 - 1
    context = torch.rand(4, 2, 3, 16, 16) * 2 - 1
    actions = torch.randn(4, 2, 2)
    a = den.loss(frames, context, actions, generator=torch.Generator().manual_seed(3))
    b = den.loss(frames, context, actions, generator=torch.Generator().manual_seed(3))
    assert a.item() == b.item()
    a.backward()
    grad = den.inner.action_embedding[0].weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


# ---------------------------------------------------------------------------- schedule
@pytest.mark.parametrize("n", [1, 2, 3, 10])
def test_karras_sigmas(n):
    sigmas = karras_sigmas(n, 2e-3, 5.0, 7.0)
    assert sigmas.shape == (n + 1,) and sigmas.dtype == torch.float32
    assert sigmas[0].item() == pytest.approx(5.0)
    assert sigmas[-1].item() == 0.0
    assert torch.all(sigmas[1:] < sigmas[:-1])
    if n > 1:
        assert sigmas[-2].item() == pytest.approx(2e-3, rel=1e-5)
        # rho = 7 spaces the levels uniformly in sigma^(1/7).
        root = sigmas[:-1].double() ** (1 / 7)
        torch.testing.assert_close(root.diff(), root.diff()[:1].expand(n - 1), rtol=1e-4, atol=0)


def test_karras_sigmas_rejects_bad_arguments():
    with pytest.raises(ValueError):
        karras_sigmas(0, 2e-3, 5.0)
    with pytest.raises(ValueError):
        karras_sigmas(3, 5.0, 2e-3)


# ---------------------------------------------------------------------------- samplers
MU, S0 = 0.3, 0.4


def gaussian_denoiser(x: torch.Tensor, sigma: torch.Tensor, mean: float = MU, std: float = S0) -> torch.Tensor:
    """Ideal denoiser for data ~ N(mean, std^2) per element: E[x0 | x] = mean + (x - mean) std^2 / (s^2 + std^2)."""
    s = sigma.view(-1, *([1] * (x.ndim - 1)))
    return mean + (x - mean) * std**2 / (s**2 + std**2)


def exact_flow(x_start: torch.Tensor, sigma_max: float) -> torch.Tensor:
    """Exact probability-flow ODE solution at sigma = 0 for Gaussian data: (x - mu) scales as sqrt(s^2 + s0^2)."""
    return MU + (x_start - MU) * S0 / math.sqrt(sigma_max**2 + S0**2)


@pytest.mark.parametrize("sampler", [sample_euler, sample_heun])
def test_samplers_recover_a_single_data_point(sampler):
    target = torch.linspace(-1, 1, 12).view(1, 12)
    point = lambda x, sigma: target.expand_as(x)  # noqa: E731  (data = one known point)
    x = 5.0 * randn((8, 12), torch.Generator().manual_seed(0))
    out = sampler(point, x, karras_sigmas(3, 2e-3, 5.0))
    torch.testing.assert_close(out, target.expand(8, 12), atol=1e-5, rtol=0)


@pytest.mark.parametrize("sampler, tol", [(sample_euler, 0.1), (sample_heun, 0.01)])
def test_samplers_recover_a_gaussian(sampler, tol):
    sigma_max = 5.0
    sigmas = karras_sigmas(40, 2e-3, sigma_max)
    # Start from the exact noisy marginal N(mu, sigma_max^2 + s0^2), so the flow ends exactly at N(mu, s0^2).
    x = MU + math.sqrt(sigma_max**2 + S0**2) * randn((20000,), torch.Generator().manual_seed(0))
    out = sampler(gaussian_denoiser, x, sigmas)
    assert (out - exact_flow(x, sigma_max)).abs().max().item() < tol
    assert out.mean().item() == pytest.approx(MU, abs=0.01)
    assert out.std().item() == pytest.approx(S0, rel=0.06)


# Note: with 2-5 steps down to sigma_min = 2e-3, Heun is *less* accurate than Euler on this problem: its
# correction averages in the slope at sigma_min, which is ~0, and so halves the one big step. Second-order
# accuracy shows once the steps are small enough.
@pytest.mark.parametrize("n", [10, 20, 40])
def test_heun_is_more_accurate_than_euler_at_equal_steps(n):
    sigmas = karras_sigmas(n, 2e-3, 5.0)
    x = sigmas[0] * randn((1000,), torch.Generator().manual_seed(0))
    exact = exact_flow(x, 5.0)
    err_euler = (sample_euler(gaussian_denoiser, x, sigmas) - exact).abs().mean().item()
    err_heun = (sample_heun(gaussian_denoiser, x, sigmas) - exact).abs().mean().item()
    assert err_heun < 0.5 * err_euler


def test_samplers_call_the_model_the_expected_number_of_times_and_pass_conditioning():
    calls = []

    def model(x, sigma, *, offset):
        calls.append(sigma.clone())
        assert sigma.shape == (x.shape[0],)
        return gaussian_denoiser(x, sigma, mean=offset)

    sigmas = karras_sigmas(4, 2e-3, 5.0)
    x = torch.zeros(3, 2)
    sample_euler(model, x, sigmas, offset=0.0)
    assert len(calls) == 4
    calls.clear()
    sample_heun(model, x, sigmas, offset=0.0)
    assert len(calls) == 2 * 4 - 1  # no correction on the final step to sigma = 0


@pytest.mark.parametrize("sampler", [sample_euler, sample_heun])
def test_sampling_is_reproducible_and_stateless(sampler):
    sigmas = karras_sigmas(3, 2e-3, 5.0)

    def draw(seed):
        x = sigmas[0] * randn((4, 3, 8, 8), torch.Generator().manual_seed(seed))
        return sampler(gaussian_denoiser, x, sigmas)

    a, b, c = draw(7), draw(7), draw(8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    x = sigmas[0] * randn((4, 3, 8, 8), torch.Generator().manual_seed(7))
    first, second = sampler(gaussian_denoiser, x, sigmas), sampler(gaussian_denoiser, x, sigmas)
    assert torch.equal(first, second) and torch.equal(first, a)
    # Plain lists of noise levels work the same as tensors.
    assert torch.equal(sampler(gaussian_denoiser, x, sigmas.tolist()), first)


def test_samplers_reject_bad_sigmas():
    for bad in ([5.0], [5.0, -1.0], [0.0, 0.0], torch.ones(2, 2)):
        with pytest.raises(ValueError):
            sample_euler(gaussian_denoiser, torch.zeros(2, 2), bad)
