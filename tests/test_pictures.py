"""Pictures: drawn frames have the right layout, and a real run writes images TensorBoard reads back."""

from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from glimpse.draw import step_colours, step_frames, table
from glimpse.models import build


@pytest.mark.parametrize("kind", ["hard", "soft", "choice"])
def test_frames_mark_the_locations(kind):
    torch.manual_seed(0)
    net = build(kind, 28, glimpses=3)
    images = torch.zeros(2, 1, 28, 28)
    out = net(images, greedy=True)
    predicted = out.logits.argmax(-1)
    labels = torch.stack([predicted[0], (predicted[1] + 1) % 10])  # the first image right, the second wrong
    frames = step_frames(net, images, out, labels)
    assert frames.shape == (2, 3, 3, 168, 168) and frames.dtype == torch.uint8
    # the caption box's frame, in every step: green for the right prediction, red for the wrong one
    assert frames[:, :, :, 0, 0].tolist() == [[[0, 255, 0]] * 3, [[255, 0, 0]] * 3]
    # the first step's location carries the first step's colour
    x, y = ((out.locations[0, 0] + 1) * 84).long().clamp(0, 167).tolist()
    assert frames[0, 0, :, y, x].tolist() == list(step_colours(3)[0])
    # the path: the pixel at the last location carries the last step's colour
    x, y = ((out.locations[0, -1] + 1) * 84).long().clamp(0, 167).tolist()
    assert frames[0, -1, :, y, x].tolist() != [0, 0, 0]
    assert table(frames).shape == (3, 2 * 170 + 2, 3 * 170 + 2)


def images_in(run_dir):
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "histograms": 0})
    events.Reload()
    return events


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_run_writes_pictures_tensorboard_reads(cli, tmp_path, kind):
    cli("--attention", kind, "--config", "configs/translated60.yaml", "--trainer.max_epochs=2",
        "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2",
        "--model.glimpses=3", "--pictures.count=4", "--data.eval_batch_size=100", "--trainer.log_every_n_steps=1")
    (run_dir,) = {p.parent for p in (tmp_path / "runs").rglob("events.out.tfevents.*")}
    events = images_in(run_dir)
    tags = events.Tags()
    assert "pictures/steps" in tags["images"]
    steps = events.Images("pictures/steps")
    assert [e.step for e in steps] == [2, 4], "one picture per validation epoch, at the global step"
    # 4 images x 3 steps of a 60x60 canvas enlarged 3x, with 2-pixel padding
    assert (steps[-1].height, steps[-1].width) == (4 * 182 + 2, 3 * 182 + 2)
    assert ("pictures/patches" in tags["images"]) == (kind == "hard")
    if kind == "hard":  # 4 images x 3 scales rows, 3 steps columns of 12x12 patches enlarged 4x
        patches = events.Images("pictures/patches")[-1]
        assert (patches.height, patches.width) == (4 * 3 * 49 + 1, 3 * 49 + 1)
    assert {f"locations/x/step{t}" for t in (1, 2, 3)} <= set(tags["histograms"])
    scalars = set(tags["scalars"])
    assert {"train/loss", "train/ce", "val/error", "train/lr", "test/error"} <= scalars
    assert ({"val/error_greedy", "train/reinforce", "train/baseline", "train/reward", "train/advantage",
             "train/std"} <= scalars) == (kind == "hard")
    assert ("val/attention_entropy" in scalars) == (kind == "soft")
