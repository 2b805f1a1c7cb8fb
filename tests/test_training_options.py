"""Training options beyond the paper's defaults: the reward, the baseline, an annealed policy std, SGD."""

from __future__ import annotations

import math

import pytest
import torch

from glimpse.checkpoints import load_model
from glimpse.losses import batch_mean, final_reward, leave_one_out, objective
from glimpse.models import build


def test_rewards_from_the_final_logits():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3]]))
    labels = torch.tensor([0, 2])
    torch.testing.assert_close(final_reward(logits, labels, "correct"), torch.tensor([1.0, 0.0]))
    torch.testing.assert_close(final_reward(logits, labels, "probability"), torch.tensor([0.7, 0.3]))
    torch.testing.assert_close(final_reward(logits, labels, "log_probability"), torch.tensor([math.log(0.7), math.log(0.3)]))
    assert not final_reward(logits.requires_grad_(), labels, "log_probability").requires_grad


@pytest.mark.parametrize("reward", ["correct", "probability", "log_probability"])
def test_the_reward_is_what_the_baseline_fits_and_reaches_only_the_policy(reward):
    torch.manual_seed(0)
    model = build("hard", 28, glimpses=3)
    images, labels = torch.rand(16, 1, 28, 28), torch.randint(10, (16,))
    out = model(images)
    loss, parts = objective(out, labels, reward=reward)
    expected = final_reward(out.logits, labels, reward)
    torch.testing.assert_close(parts["reward"], expected.mean())
    torch.testing.assert_close(parts["baseline_mse"], ((out.baselines - expected[:, None]) ** 2).mean().detach())
    parts_policy = -(out.log_probs * (expected[:, None] - out.baselines.detach())).sum(1).mean()
    torch.testing.assert_close(parts["reinforce"], parts_policy.detach())
    model.zero_grad()
    parts_policy.backward()
    assert model.policy.mean.weight.grad.abs().sum() > 0 and model.classifier.weight.grad is None


def test_batch_mean_baseline_leaves_each_rollout_out_and_trains_nothing():
    torch.testing.assert_close(batch_mean(torch.tensor([1.0, 0.0, 1.0, 1.0]), 2),
                               torch.tensor([[2 / 3] * 2, [1.0] * 2, [2 / 3] * 2, [2 / 3] * 2]))
    torch.manual_seed(0)
    model = build("hard", 28, glimpses=3)
    images, labels = torch.rand(16, 1, 28, 28), torch.randint(10, (16,))
    out = model(images)
    loss, parts = objective(out, labels, baseline="batch_mean")
    r = final_reward(out.logits, labels)
    b = batch_mean(r, 2)
    torch.testing.assert_close(parts["baseline_mse"], ((b - r[:, None]) ** 2).mean())
    loss.backward()
    assert model.baseline.value.weight.grad is None  # the learned baseline is not used
    assert model.policy.mean.weight.grad.abs().sum() > 0


def test_leave_one_out_baseline_compares_paths_on_the_same_image():
    # 3 paths (sample-major) on 2 images: image 0 earns 1, 0, 1; image 1 earns 0, 0, 1
    reward = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    expected = torch.tensor([0.5, 0.5, 1.0, 0.5, 0.5, 0.0])
    torch.testing.assert_close(leave_one_out(reward, 3, samples=3), expected[:, None].expand(6, 3))
    torch.testing.assert_close(leave_one_out(reward, 2, samples=1), batch_mean(reward, 2))
    torch.manual_seed(0)
    model = build("hard", 28, glimpses=3)
    images, labels = torch.rand(8, 1, 28, 28), torch.randint(10, (8,))
    out = model(images, samples=4)
    loss, parts = objective(out, labels.repeat(4), baseline="leave_one_out", samples=4)
    r = final_reward(out.logits, labels.repeat(4))
    b = (r.view(4, 8).sum(0) - r.view(4, 8)).flatten() / 3
    torch.testing.assert_close(parts["reinforce"], -(out.log_probs * (r - b)[:, None]).sum(1).mean().detach())
    loss.backward()
    assert model.baseline.value.weight.grad is None  # the learned baseline is not used
    assert model.policy.mean.weight.grad.abs().sum() > 0


SHORT = ["--name=mnist-hard", "--trainer.max_epochs=1", "--trainer.limit_train_batches=4", "--trainer.limit_val_batches=2",
         "--trainer.limit_test_batches=2", "--data.eval_batch_size=250", "--model.eval_samples=2"]


def test_std_anneals_linearly_and_the_checkpoint_keeps_it(cli, tmp_path):
    run = cli("--attention", "hard", *SHORT, "--model.std=0.2", "--model.std_final=0.05")
    # 4 steps: the std is set before each, at step 3 of 4 it is 0.2 + 3/4 * (0.05 - 0.2)
    assert run.model.net.policy.std == pytest.approx(0.0875)
    model, _ = load_model(tmp_path / "runs" / "mnist-hard" / "version_0" / "checkpoints" / "last.ckpt")
    assert model.net.policy.std == pytest.approx(0.0875)
    assert model.hparams.std == 0.2  # the starting value stays the hyperparameter


def test_fixed_std_stays_fixed(cli):
    run = cli("--attention", "hard", *SHORT, "--model.std=0.2")
    assert run.model.net.policy.std == 0.2


def test_leave_one_out_trains_with_several_paths(cli):
    run = cli("--attention", "hard", *SHORT, "--model.train_samples=2", "--model.baseline=leave_one_out")
    assert run.trainer.global_step == 4 and torch.isfinite(run.trainer.callback_metrics["test/reinforce"])


def test_sgd_with_momentum(cli):
    run = cli("--attention", "hard", *SHORT, "--model.optimizer=sgd", "--model.lr=0.05", "--model.momentum=0.8")
    opt = run.trainer.optimizers[0]
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.8
    assert opt.state, "SGD took steps (its momentum buffers exist)"


def test_stop_at_a_validation_error_as_the_time_to_accuracy_runs_do(cli):
    """docs/results.md times runs to 1.2 % by stopping them with EarlyStopping on ``val_error``; that name must stay."""
    stop = ["--trainer.callbacks+=EarlyStopping", "--trainer.callbacks.monitor=val_error", "--trainer.callbacks.patience=1000"]
    three = ["--attention", "hard", *SHORT, "--trainer.max_epochs=3"]  # the later max_epochs wins over SHORT's
    run = cli(*three, *stop, "--trainer.callbacks.stopping_threshold=1.01")
    assert run.trainer.current_epoch == 1, "an error below 101 % stops after the first epoch"
    run = cli(*three, *stop, "--trainer.callbacks.stopping_threshold=0",
              "--trainer.logger.init_args.name=unreached")
    assert run.trainer.current_epoch == 3, "an error below 0 is never reached: all three epochs run"
