import pytest
import torch

from ood_lib.config import DDPMConfig
from ood_lib.diffusion import build_unet, denoise, ddim_scheduler, diffuse, guided_eps, train_ddpm
from ood_lib.outliers import other_class, semantic_discrepant

TINY = DDPMConfig(block_out_channels=(8, 16, 16), steps=6, batch_size=8, warmup_steps=1, checkpoint_every=2)
N_CLASSES = 3


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    return build_unet(TINY, N_CLASSES).eval()


def _images(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % N_CLASSES


def test_guided_eps_is_the_cfg_formula(unet):
    x, y = _images()
    t = 300
    with torch.no_grad():
        e_c = unet(x * 2 - 1, t, class_labels=y).sample
        e_u = unet(x * 2 - 1, t, class_labels=torch.full_like(y, N_CLASSES)).sample
        got = guided_eps(unet, x * 2 - 1, t, y, 3.0)
    torch.testing.assert_close(got, 4.0 * e_c - 3.0 * e_u, rtol=1e-4, atol=1e-5)


def test_sd_with_S_zero_returns_input_unchanged(unet):
    x, y = _images()
    out = semantic_discrepant(unet, x, y, N_CLASSES, S=0, w=3.0, stride=50, progress=False)
    assert torch.equal(out["x"], x) and torch.equal(out["y_source"], y)


def test_sd_targets_another_class_uniformly():
    y = torch.zeros(6000, dtype=torch.long)
    c = other_class(y, 4, torch.Generator().manual_seed(0))
    assert (c != 0).all()
    assert torch.bincount(c, minlength=4)[1:].float().div(6000).sub(1 / 3).abs().max() < 0.03


def test_sd_with_w_zero_is_plain_conditional_denoising_toward_c_r(unet):
    """Reference: an independent DDIM loop calling only eps(x_t, c_r)."""
    x, y = _images()
    S, stride, seed = 200, 50, 7
    out = semantic_discrepant(unet, x, y, N_CLASSES, S=S, w=0.0, stride=stride, seed=seed, progress=False)
    g = torch.Generator().manual_seed(seed)
    c_r = other_class(y, N_CLASSES, g)
    noise = torch.randn(x.shape, generator=g)
    assert torch.equal(out["y_target"], c_r)
    xt = diffuse(x * 2 - 1, S, noise)
    sched = ddim_scheduler(1000, stride)
    with torch.no_grad():
        for t in [200, 150, 100, 50, 0]:
            eps = unet(xt, t, class_labels=c_r).sample
            xt = sched.step(eps, t, xt, eta=0.0).prev_sample
    torch.testing.assert_close(out["x"], ((xt + 1) / 2).clamp(0, 1), rtol=1e-4, atol=1e-5)
    # and guidance matters: w=3 gives a different result from w=0
    out3 = semantic_discrepant(unet, x, y, N_CLASSES, S=S, w=3.0, stride=stride, seed=seed, progress=False)
    assert (out3["x"] - out["x"]).abs().max() > 1e-3


def test_sd_is_deterministic_under_a_seed(unet):
    x, y = _images()
    a = semantic_discrepant(unet, x, y, N_CLASSES, S=100, w=2.0, stride=50, seed=3, progress=False)
    b = semantic_discrepant(unet, x, y, N_CLASSES, S=100, w=2.0, stride=50, seed=3, progress=False)
    assert torch.equal(a["x"], b["x"])


def test_ddim_from_a_start_off_the_stride_grid_visits_start_minus_multiples_of_stride(unet):
    """S = 130, stride 50: steps at 130, 80, 30, then straight to x_0 (alpha_prev = 1)."""
    x, y = _images()
    x = x * 2 - 1
    got = denoise(unet, x, 130, y, 0.0, 50)
    sched = ddim_scheduler(1000, 50)
    ref = x
    with torch.no_grad():
        for t in (130, 80, 30):
            eps = unet(ref, t, class_labels=y).sample
            a_t = sched.alphas_cumprod[t]
            a_prev = sched.alphas_cumprod[t - 50] if t >= 50 else torch.tensor(1.0)
            x0 = (ref - (1 - a_t).sqrt() * eps) / a_t.sqrt()
            ref = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="multiple"):
        denoise(unet, x, 130, y, 1.0, 50, sampler="ddpm")


def test_interrupted_ddpm_training_resumes_from_checkpoint(tmp_path):
    x, y = _images(24)
    full = train_ddpm(x, y, N_CLASSES, TINY, tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        train_ddpm(x, y, N_CLASSES, TINY, tmp_path / "b", stop_after=3)
    ckpt = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 2  # last checkpoint before the interruption
    resumed = train_ddpm(x, y, N_CLASSES, TINY, tmp_path / "b")
    assert resumed["steps"] == TINY.steps
    torch.testing.assert_close(resumed["losses"], full["losses"])
    for k, v in full["ema_state"].items():
        torch.testing.assert_close(resumed["ema_state"][k], v, msg=k)


# ----------------------------------------------------------------------------- training recipes
def test_min_snr_weights_and_the_v_target_by_hand():
    """eps: weight min(SNR, gamma) / SNR; v: target sqrt(abar) eps - sqrt(1 - abar) x0, weight
    min(SNR, gamma) / (SNR + 1); SNR = abar / (1 - abar)."""
    from diffusers import DDPMScheduler
    from ood_lib.diffusion import diffusion_loss
    x0, noise = torch.full((2, 1, 2, 2), 0.5), torch.full((2, 1, 2, 2), -1.0)
    t = torch.tensor([10, 900])
    pred = torch.zeros_like(x0)
    eps = DDPMScheduler(num_train_timesteps=1000)
    abar = eps.alphas_cumprod[t]
    snr = abar / (1 - abar)
    # epsilon target -1 everywhere: per-sample MSE 1, weighted
    w = torch.clamp(snr, max=5.0) / snr
    torch.testing.assert_close(diffusion_loss(pred, x0, noise, t, eps), torch.tensor(1.0))
    torch.testing.assert_close(diffusion_loss(pred, x0, noise, t, eps, snr_gamma=5.0), w.mean())
    assert w[0] < 0.1 and w[1] == 1.0          # the easy, low-noise step counts far less
    v = DDPMScheduler(num_train_timesteps=1000, prediction_type="v_prediction")
    target = abar.sqrt() * -1.0 - (1 - abar).sqrt() * 0.5
    wv = torch.clamp(snr, max=5.0) / (snr + 1)
    torch.testing.assert_close(diffusion_loss(pred, x0, noise, t, v, snr_gamma=5.0), (target ** 2 * wv).mean())


def test_a_v_prediction_unet_samples_with_its_own_schedule(tmp_path):
    """The artefact carries the schedule; load_unet puts it on the UNet's config and the
    sampler reads it: a v-prediction UNet's DDIM step uses v, not epsilon."""
    from ood_lib.diffusion import load_unet, unet_schedule
    cfg = DDPMConfig(block_out_channels=(8, 16, 16), steps=2, batch_size=4, warmup_steps=1, checkpoint_every=2,
                     prediction_type="v_prediction", snr_gamma=5.0, beta_schedule="squaredcos_cap_v2")
    x, y = _images(8)
    art = train_ddpm(x * 2 - 1, y, N_CLASSES, cfg, tmp_path)
    unet = load_unet(art)
    assert unet_schedule(unet) == {"num_train_timesteps": 1000, "beta_schedule": "squaredcos_cap_v2",
                                   "prediction_type": "v_prediction"}
    xt = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    got = denoise(unet, xt, 100, y[:2], 0.0, 50)
    sched = ddim_scheduler(1000, 50, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    ref = xt
    with torch.no_grad():
        for t in (100, 50, 0):
            ref = sched.step(unet(ref, t, class_labels=y[:2]).sample, t, ref, eta=0.0).prev_sample
    torch.testing.assert_close(got, ref)
    eps_sched = ddim_scheduler(1000, 50)         # read as epsilon, the same outputs give another image
    other = xt
    with torch.no_grad():
        for t in (100, 50, 0):
            other = eps_sched.step(unet(other, t, class_labels=y[:2]).sample, t, other, eta=0.0).prev_sample
    assert (other - got).abs().max() > 1e-3
