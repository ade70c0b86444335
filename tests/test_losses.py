"""Loss functions against formulas written out independently (numpy), plus their gradient behaviour."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

from mmfs.external.tiny import tiny_clip, tiny_dino
from mmfs.losses import (
    clip_direction_loss,
    d_logistic_loss,
    dino_structure_loss,
    feature_matching_loss,
    g_nonsaturating_loss,
    l1_loss,
    projector_from_tokens,
    r1_penalty,
    self_similarity,
    token_projection_loss,
)


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def softplus_np(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.exp(x))


def close(actual: torch.Tensor, expected: float, tol: float = 1e-10) -> None:
    assert actual.ndim == 0
    assert abs(actual.item() - float(expected)) <= tol * max(1.0, abs(float(expected))), (actual.item(), expected)


# ---------------------------------------------------------------- adversarial


def test_gan_losses_match_formulas():
    real, fake = rand(6, 1, seed=1), rand(6, 1, seed=2)
    close(g_nonsaturating_loss(fake), softplus_np(-fake.numpy()).mean())
    close(d_logistic_loss(real, fake), softplus_np(-real.numpy()).mean() + softplus_np(fake.numpy()).mean())
    close(g_nonsaturating_loss(torch.zeros(3, dtype=torch.float64)), np.log(2))  # D undecided: log 2 per side
    close(d_logistic_loss(torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)), 2 * np.log(2))


def test_r1_of_a_linear_discriminator_is_the_squared_weight_norm():
    w = rand(3, 4, 4, seed=3).requires_grad_(True)
    x = rand(5, 3, 4, 4, seed=4).requires_grad_(True)
    logits = (w * x).flatten(1).sum(1)  # D(x) = <w, x>, so dD/dx = w for every sample
    r1 = r1_penalty(logits, x)
    close(r1, (w.detach().numpy() ** 2).sum())
    (dw,) = torch.autograd.grad(r1, w)  # create_graph=True lets R1 train D: d/dw sum(w^2) = 2w
    torch.testing.assert_close(dw, 2 * w.detach())


def test_r1_of_a_quadratic_discriminator_averages_over_the_batch():
    x = rand(4, 3, 2, 2, seed=5).requires_grad_(True)
    logits = x.square().flatten(1).sum(1)  # dD/dx = 2x
    expected = (4 * x.detach().numpy() ** 2).reshape(4, -1).sum(1).mean()
    close(r1_penalty(logits, x), expected)


# ---------------------------------------------------------------- reconstruction


def test_l1_and_feature_matching():
    a, b = rand(2, 3, 4, 4, seed=6), rand(2, 3, 4, 4, seed=7)
    close(l1_loss(a, b), np.abs(a.numpy() - b.numpy()).mean())
    fakes = [rand(2, 8, 4, 4, seed=8).requires_grad_(True), rand(2, 16, 2, 2, seed=9).requires_grad_(True)]
    reals = [rand(2, 8, 4, 4, seed=10).requires_grad_(True), rand(2, 16, 2, 2, seed=11).requires_grad_(True)]
    expected = sum(np.abs(f.detach().numpy() - r.detach().numpy()).mean() for f, r in zip(fakes, reals, strict=True))
    loss = feature_matching_loss(fakes, reals)
    close(loss, expected)
    loss.backward()
    assert all(f.grad is not None for f in fakes)
    assert all(r.grad is None for r in reals)  # real features are targets
    with pytest.raises(ValueError):
        feature_matching_loss(fakes, reals[:1])
    with pytest.raises(ValueError):
        l1_loss(a, b[:1])


# ---------------------------------------------------------------- structure


def test_self_similarity_is_clamped_cosine():
    keys = rand(2, 5, 7, seed=12)
    keys[1, 2] = 0  # a zero token: the clamp keeps its row at 0 instead of NaN
    k = keys.numpy()
    norms = np.linalg.norm(k, axis=-1)
    expected = np.einsum("bnc,bmc->bnm", k, k) / np.maximum(norms[:, :, None] * norms[:, None, :], 1e-8)
    sim = self_similarity(keys)
    assert sim.shape == (2, 5, 5)
    np.testing.assert_allclose(sim.numpy(), expected, rtol=1e-12, atol=1e-12)
    assert torch.isfinite(sim).all() and (sim[1, 2] == 0).all()
    np.testing.assert_allclose(np.diagonal(sim[0].numpy()), 1.0, rtol=1e-12)


@pytest.fixture(scope="module")
def dino():
    return tiny_dino()


def images(b: int, seed: int, size: int = 32) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_dino_structure_loss_value_and_batch_sum(dino):
    a, b = images(1, 1), images(1, 2)
    c, d = images(1, 3), images(1, 4)
    close(dino_structure_loss(dino, a, a), 0.0, tol=1e-12)
    single = dino_structure_loss(dino, a, b)
    sim_a = self_similarity(dino.keys(a)).detach().numpy()
    sim_b = self_similarity(dino.keys(b)).detach().numpy()
    close(single, ((sim_a - sim_b) ** 2).mean(), tol=1e-5)
    assert single > 0
    # A sum over the batch, not a mean: two copies of one pair cost twice one pair.
    close(dino_structure_loss(dino, torch.cat([a, a]), torch.cat([b, b])), 2 * single.item(), tol=1e-5)
    pair = dino_structure_loss(dino, torch.cat([a, c]), torch.cat([b, d]))
    close(pair, single.item() + dino_structure_loss(dino, c, d).item(), tol=1e-5)


def test_dino_structure_loss_gradients(dino):
    fake = images(2, 5).requires_grad_(True)
    real = images(2, 6).requires_grad_(True)
    dino_structure_loss(dino, fake, real).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert real.grad is None  # the target is computed under no_grad
    assert all(p.grad is None for p in dino.parameters())


# ---------------------------------------------------------------- CLIP


def test_clip_direction_loss_matches_formula():
    fake, src, target = rand(4, 6, seed=13), rand(4, 6, seed=14), rand(4, 6, seed=15)
    d = fake.numpy() - src.numpy()
    t = target.numpy()
    cos = (d * t).sum(1) / (np.linalg.norm(d, axis=1) * np.linalg.norm(t, axis=1))
    close(clip_direction_loss(fake, src, target), (1 - cos).mean())
    # One target direction for the whole batch broadcasts like a repeated one (the reference repeats it).
    close(clip_direction_loss(fake, src, target[0]), clip_direction_loss(fake, src, target[:1].expand(4, 6)).item())
    close(clip_direction_loss(src + target, src, target), 0.0)  # moving exactly along the target direction


def test_projector_is_the_orthogonal_projector_onto_the_token_span():
    ref = rand(5, 12, seed=16)  # N=5 tokens of C=12 channels
    p = projector_from_tokens(ref)
    assert p.shape == (12, 12) and p.dtype == torch.float32  # fp32 as the reference casts tokens and P
    torch.testing.assert_close(p, p.T, atol=1e-6, rtol=0)
    torch.testing.assert_close(p @ p, p, atol=1e-5, rtol=0)
    assert round(torch.trace(p).item()) == 5  # rank N
    torch.testing.assert_close(projector_from_tokens(ref[None]), p)  # [1, N, C] is accepted too


def test_token_projection_loss_hand_values():
    # Tokens spanning the x-y plane of R^3: P = diag(1, 1, 0).
    ref = torch.tensor([[2.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    p = projector_from_tokens(ref)
    torch.testing.assert_close(p, torch.diag(torch.tensor([1.0, 1.0, 0.0])), atol=1e-6, rtol=0)
    inside = torch.tensor([[[3.0, -4.0, 0.0], [0.0, 5.0, 0.0]]])  # [B=1, N=2, C=3]
    close(token_projection_loss(inside, p), 0.0, tol=1e-6)
    # (0, 0, 7) normalises to e_z: P e_z - e_z = (0, 0, -1); (3, 0, 4)/5: residual (0, 0, -0.8).
    outside = torch.tensor([[[0.0, 0.0, 7.0]], [[3.0, 0.0, 4.0]]])  # [B=2, N=1, C=3]
    close(token_projection_loss(outside, p), (1 + 0.8) / 6, tol=1e-6)


def test_token_projection_loss_matches_formula_on_random_tokens():
    ref, tokens = rand(6, 10, seed=17), rand(3, 4, 10, seed=18)
    r = ref.numpy() / np.linalg.norm(ref.numpy(), axis=-1, keepdims=True)
    u = np.linalg.svd(r.T, full_matrices=False)[0]
    t = tokens.numpy().reshape(-1, 10)
    t = (t / np.linalg.norm(t, axis=-1, keepdims=True)).T  # [C, B*N]
    expected = np.abs(u @ u.T @ t - t).mean()
    loss = token_projection_loss(tokens, projector_from_tokens(ref))
    close(loss, expected, tol=1e-5)
    assert loss > 0.05


def test_projection_and_direction_losses_through_tiny_clip():
    clip = tiny_clip()
    ref = images(1, 7)
    ref_emb, ref_tokens = clip.encode_image_with_tokens(ref, 3)
    p = projector_from_tokens(ref_tokens[0])
    assert p.shape == (64, 64)
    close(token_projection_loss(ref_tokens, p), 0.0, tol=1e-5)  # the reference's own tokens lie in the span
    real = images(2, 8)
    fake = images(2, 9).requires_grad_(True)
    with torch.no_grad():
        real_emb = clip.encode_image(real)
    fake_emb, fake_tokens = clip.encode_image_with_tokens(fake, 3)
    proj = token_projection_loss(fake_tokens, p)
    direction = clip_direction_loss(fake_emb, real_emb, ref_emb - real_emb.mean(0))
    assert proj > 0.01 and 0 <= direction <= 2
    (direction + 100 * proj).backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0
    assert all(param.grad is None for param in clip.parameters())


def test_clip_losses_run_in_fp32_under_bf16_autocast():
    # bf16 embeddings and tokens, as a CLIP forward under autocast gives them: the losses must equal the
    # fp32 maths on the same values (bit for bit), not bf16 maths.
    fake, src, target = (rand(4, 16, seed=s).bfloat16() for s in (21, 22, 23))
    ref, tokens = rand(7, 16, seed=24).bfloat16(), rand(2, 5, 16, seed=25).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        direction = clip_direction_loss(fake, src, target)
        projector = projector_from_tokens(ref)
        proj = token_projection_loss(tokens, projector)
    assert direction.dtype == projector.dtype == proj.dtype == torch.float32
    assert torch.equal(direction, clip_direction_loss(fake.float(), src.float(), target.float()))
    assert torch.equal(projector, projector_from_tokens(ref.float()))
    assert torch.equal(proj, token_projection_loss(tokens.float(), projector))
