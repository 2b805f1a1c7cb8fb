"""Every bad setting is refused before any work starts, by a message that names the argument."""

from __future__ import annotations

from pathlib import Path

import pytest

from glimpse.checks import ConfigError
from glimpse.cli import main

BAD = [  # (arguments, text the message must contain)
    (["--model.glimpses=0"], "glimpses=0"),
    (["--model.glimpses=-3"], "glimpses=-3"),
    (["--model.glimpses=two"], "model.glimpses"),
    (["--model.patch=0"], "patch=0"),
    (["--model.patch=40"], "patch=40"),
    (["--model.scales=0"], "scales=0"),
    (["--model.patch=12", "--model.scales=3"], "scales=3"),
    (["--model.scale_factor=0"], "scale_factor=0"),
    (["--model.std=0"], "std=0"),
    (["--model.std=-0.1"], "std=-0.1"),
    (["--model.eval_samples=0"], "eval_samples=0"),
    (["--model.train_samples=0"], "train_samples=0"),
    (["--model.hidden=0"], "hidden=0"),
    (["--model.lr=0"], "lr=0"),
    (["--model.lr=fast"], "model.lr"),
    (["--model.core=gru"], "model.core"),
    (["--model.start=corner"], "model.start"),
    (["--model.schedule=step"], "model.schedule"),
    (["--model.reward=accuracy"], "model.reward"),
    (["--attention=soft", "--model.reward=probability"], "reward='probability'"),
    (["--model.std_final=0"], "std_final=0"),
    (["--model.baseline=constant"], "model.baseline"),
    (["--attention=soft", "--model.baseline=batch_mean"], "baseline='batch_mean'"),
    (["--model.baseline=leave_one_out"], "train_samples=1"),
    (["--attention=choice", "--model.std_final=0.05"], "std_final=0.05"),
    (["--model.optimizer=rmsprop"], "model.optimizer"),
    (["--model.optimizer=sgd", "--model.momentum=1"], "momentum=1"),
    (["--attention=loud"], "attention"),
    (["--attention=soft", "--model.grid_stride=0"], "grid_stride=0"),
    (["--attention=soft", "--model.grid_stride=30"], "grid_stride=30"),
    (["--attention=soft", "--model.score=cosine"], "model.score"),
    (["--attention=choice", "--model.temperature=0"], "temperature=0"),
    (["--attention=choice", "--model.estimator=straight"], "model.estimator"),
    (["--model.estimator=gumbel"], "estimator='gumbel'"),
    (["--data.dataset=fashion"], "data.dataset='fashion'"),
    (["--data.dataset=translated", "--data.canvas=20"], "data.canvas=20"),
    (["--data.fragments=-1"], "data.fragments=-1"),
    (["--data.batch_size=0"], "data.batch_size=0"),
    (["--config=configs/cluttered60.yaml", "--data.shift=2"], "data.shift=2"),
    (["--data.val_size=60000"], "data.val_size=60000"),
    (["--config=configs/cluttered60.yaml", "--model.scales=4"], "scales=4"),  # 96px glimpse on 60x60
    (["--trainer.callbacks+=glimpse.callbacks.WeightEMA", "--trainer.callbacks.decay=1"], "WeightEMA.decay=1"),
    (["--checkpoint.save_last=true"], "checkpoint.save_last=True"),  # last.ckpt is the 'last' group's
    (["--model.nonsense=1"], "nonsense"),
    (["--attention=soft", "--model.std=0.5"], "std=0.5"),  # a setting of another kind
    (["--attention=soft", "--model.start=random"], "start='random'"),
    (["--attention=choice", "--model.policy_norm=true"], "policy_norm=True"),
    (["--attention=soft", "--model.policy_hidden=64"], "policy_hidden=64"),
    (["--model.grid_stride=8"], "grid_stride=8"),
    (["--config=configs/cluttered100.yaml", "--model.grid_stride=6"], "grid_stride=6"),
    (["--trainer.max_epochs=0"], "max_epochs=0"),  # would test an untrained model
    (["--trainer.max_steps=0"], "max_steps=0"),
    (["--trainer.limit_train_batches=0"], "limit_train_batches=0"),
    (["--trainer.limit_val_batches=1"], "limit_val_batches=1.0"),  # Lightning would run all of them
    (["--trainer.accelerator=mps"], "trainer: "),  # the Trainer's own refusal (no Apple GPU here), as one line
    (["--model.classes=5"], "model.classes"),  # linked from the data: 10 digits
    (["--model.channels=3"], "model.channels"),  # linked from the data: grey images
    (["--model.glimpses=1000000"], "glimpses=1000000"),  # would fill the memory for minutes before failing
    (["--model.hidden=1000000"], "hidden=1000000"),
    (["--checkpoint.dirpath=train.py/checkpoints"], "checkpoint.dirpath='train.py/checkpoints'"),  # a file
    (["--last.dirpath=train.py/checkpoints"], "train.py is not a folder"),
    (["--trainer.logger.init_args.save_dir=train.py/runs", "--trainer.default_root_dir=train.py/runs"],
     "train.py is not a folder"),
    (["--trainer.default_root_dir=elsewhere"], "default_root_dir='elsewhere'"),  # two folders for one run
]


@pytest.mark.parametrize("args, named", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_setting_is_refused_before_work(args, named, tmp_path: Path, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    runs = tmp_path / "runs"
    with pytest.raises((ConfigError, SystemExit)) as caught:
        main(args=[f"--trainer.logger.init_args.save_dir={runs}", f"--trainer.default_root_dir={runs}",
                   f"--data.root={tmp_path / 'data'}", *args])
    message = str(caught.value) if caught.type is ConfigError else capsys.readouterr().err
    assert named in message, message
    if caught.type is SystemExit:
        assert caught.value.code == 2
    assert not runs.exists() and not (tmp_path / "data").exists(), "nothing was written"
