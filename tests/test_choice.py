"""Choice attention: one sampled grid location; REINFORCE and straight-through Gumbel estimators."""

from __future__ import annotations

import pytest
import torch

from glimpse.checks import ConfigError
from glimpse.losses import objective
from glimpse.models import build
from glimpse.module import GlimpseModel
from tests.conftest import FAST_LR, REPO, SMALL_NET
from tests.test_models import grads_of


def test_choice_follows_the_distribution():
    torch.manual_seed(0)
    net = build("choice", 28, glimpses=1, grid_stride=10)  # a 3x3 grid
    scores = torch.randn(1, 9).expand(200_000, 9)
    probs = scores.softmax(-1)
    mix, log_prob = net.select(scores, probs, greedy=False)
    assert ((mix == 0) | (mix == 1)).all() and (mix.sum(-1) == 1).all()
    freq = mix.mean(0)
    # 4.5 standard errors of a frequency from 200,000 draws: fails by chance about once in 10^5
    tolerance = 4.5 * (probs[0] * (1 - probs[0]) / 200_000).sqrt()
    assert ((freq - probs[0]).abs() < tolerance).all(), (freq, probs[0])
    torch.testing.assert_close(log_prob, probs.log().gather(-1, mix.argmax(-1, keepdim=True)).squeeze(-1))
    greedy, none = net.select(scores[:2], probs[:2], greedy=True)
    assert none is None and (greedy.argmax(-1) == probs[0].argmax()).all()


def choice_parts(estimator: str):
    torch.manual_seed(0)
    net = build("choice", 28, glimpses=3, grid_stride=4, estimator=estimator)
    images, labels = torch.rand(16, 1, 28, 28), torch.randint(10, (16,))
    out = net(images)
    loss, parts = objective(out, labels)
    ce = torch.nn.functional.cross_entropy(out.logits, labels)
    return net, out, loss, ce, labels


def test_reinforce_trains_the_scorer_only_through_the_log_probability():
    net, out, loss, ce, labels = choice_parts("reinforce")
    assert out.log_probs.shape == out.baselines.shape == (16, 3)
    scorer = {k for k in dict(net.named_parameters()) if k.startswith("scorer.")}
    from_ce = grads_of(net, ce)
    assert not any(from_ce[k] for k in scorer), "the classification loss must not reach the scorer"
    assert all(v for k, v in from_ce.items() if k.startswith(("glimpse.", "core.", "classifier.")))
    reward = (out.logits.argmax(-1) == labels).float()
    policy = -(out.log_probs * (reward[:, None] - out.baselines.detach())).sum(1).mean()
    from_policy = {k for k, v in grads_of(net, policy).items() if v}
    assert from_policy == scorer, from_policy
    assert all(grads_of(net, loss).values())


def test_gumbel_gives_the_scorer_gradient_from_classification():
    net, out, loss, ce, _ = choice_parts("gumbel")
    assert out.log_probs is None
    got = grads_of(net, ce)
    assert all(got[k] for k in got if k.startswith("scorer.")), got
    assert all(got.values())


def test_temperature_anneals_to_its_floor():
    net = build("choice", 28, estimator="gumbel", temperature=2.0, temperature_min=0.5, anneal=1.0)
    net.set_step(0)
    assert net.temperature == 2.0
    net.set_step(693)  # exp(-0.693) = 1/2
    assert net.temperature == pytest.approx(1.0, rel=1e-3)
    net.set_step(10_000)
    assert net.temperature == 0.5


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(attention="choice", temperature=0.0), "temperature=0.0"),
        (dict(attention="choice", temperature=-1.0), "temperature=-1.0"),
        (dict(attention="choice", estimator="gumbel", temperature_min=2.0), "temperature_min=2.0"),
        (dict(attention="hard", estimator="gumbel"), "estimator='gumbel'"),
        (dict(attention="soft", temperature=0.3), "temperature=0.3"),
    ],
)
def test_bad_choice_settings(kwargs, name):
    with pytest.raises(ConfigError, match=name):
        GlimpseModel(**kwargs)


def test_unknown_estimator_is_refused():
    with pytest.raises(ConfigError, match="estimator='straight'"):
        build("choice", 28, estimator="straight")


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["reinforce", "gumbel"])
def test_choice_learns_real_mnist(cli, estimator):
    """A narrow net (as in test_train's short runs) on a 4x4 grid, 400 steps: far below chance."""
    run = cli("--attention", "choice", "--config", str(REPO / "configs/mnist.yaml"), "--trainer.precision=32-true",
              f"--model.estimator={estimator}", "--model.grid_stride=6", *SMALL_NET, FAST_LR, "--trainer.max_epochs=4",
              "--trainer.limit_train_batches=100", "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2",
              "--model.eval_samples=2")
    metrics = run.trainer.callback_metrics
    assert metrics["test/error"] < 0.5, metrics  # chance: 0.9
    assert metrics["test/error_greedy"] < 0.5, metrics


def test_gumbel_looks_at_exactly_one_location_in_the_forward_pass():
    """Straight-through: the forward choice is one-hot (a soft mix would be soft attention again),
    and the rollout's locations are grid points."""
    net, out, *_ = choice_parts("gumbel")
    scores = torch.randn(64, net.grid.shape[0])
    mix, _ = net.select(scores, scores.softmax(-1), greedy=False)
    assert ((mix == 0) | (mix == 1)).all() and (mix.sum(-1) == 1).all()
    distance = (out.locations[:, :, None] - net.grid).abs().sum(-1).amin(-1)  # (B, T) to the nearest grid point
    assert distance.max() < 1e-6


def test_choice_sampling_survives_non_finite_weights():
    """A diverged model must reach the loss (where the guard names the step), not fail while sampling."""
    net = build("choice", 28, glimpses=2, grid_stride=10)
    scores = torch.full((4, 9), float("nan"))
    mix, log_prob = net.select(scores, scores.softmax(-1), greedy=False)
    assert (mix.sum(-1) == 1).all() and log_prob.isnan().all()


def test_choice_draws_what_torch_multinomial_draws():
    """Draw for draw the same indices as torch.multinomial, without its host-side check."""
    from glimpse.models.choice import sample_index
    weights = torch.randn(256, 49).softmax(-1)
    torch.manual_seed(3)
    expected = torch.multinomial(weights, 1).squeeze(-1)
    torch.manual_seed(3)
    assert torch.equal(sample_index(weights), expected)
