"""Train a hard or soft attention model: ``python train.py --attention hard --config configs/mnist.yaml``."""

from glimpse.cli import entry

if __name__ == "__main__":
    entry()
