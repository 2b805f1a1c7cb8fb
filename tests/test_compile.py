"""The rollout and its loss compile as one graph (no graph breaks, no host reads), and the
compiled training step computes what the eager one does."""

from __future__ import annotations

import pytest
import torch

from glimpse.module import GlimpseModel

SMALL = dict(glimpses=3, hidden=16, what=8, where=8, glimpse_features=16)


def loss_and_grads(model: GlimpseModel, step, images, labels, samples: int):
    torch.manual_seed(1)
    model.zero_grad(set_to_none=True)
    loss, parts, logits = step(images, labels, samples)
    loss.backward()
    return loss.detach(), parts, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.slow  # 15-25 s each, compiling from a cold cache on one core; soft's path is part of choice's
@pytest.mark.parametrize("kind, extra", [("hard", {}), ("choice", {}), ("choice", {"estimator": "gumbel", "anneal": 1.0})])
def test_compiled_rollout_and_loss_match_eager(monkeypatch, kind, extra):
    """fullgraph=True (the model's compile setting) raises on any graph break. Random draws come
    from the same generator as in eager mode (inductor's fallback_random), so the two paths see
    the same samples; then loss, logged parts and every gradient agree to float32 rounding
    (rtol 1e-4, atol 1e-5: inductor may sum in another order)."""
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    torch.manual_seed(0)
    model = GlimpseModel(attention=kind, compile=True, train_samples=2, **SMALL, **extra,
                         **({} if kind == "hard" else {"attention_size": 8}))
    images, labels = torch.rand(8, 1, 28, 28), torch.randint(10, (8,))
    samples = model.hparams.train_samples
    torch._dynamo.reset()
    eager = loss_and_grads(model, model.rollout_loss, images, labels, samples)
    compiled = loss_and_grads(model, model.train_rollout, images, labels, samples)
    torch.testing.assert_close(compiled[0], eager[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(compiled[1], eager[1], rtol=1e-4, atol=1e-5)
    assert compiled[2].keys() == eager[2].keys() and eager[2]
    torch.testing.assert_close(compiled[2], eager[2], rtol=1e-4, atol=1e-5)
    if kind == "hard":  # an annealed std (and temperature) is an input, not a constant: no recompiling
        model.net.policy.std = 0.3
        with torch._dynamo.config.patch(error_on_recompile=True):
            model.train_rollout(images, labels, samples)
    if extra.get("anneal"):
        model.net.set_step(500)
        with torch._dynamo.config.patch(error_on_recompile=True):
            model.train_rollout(images, labels, samples)
