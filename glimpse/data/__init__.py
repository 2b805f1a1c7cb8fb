"""Data layer: genuine MNIST (md5-verified cache), vectorised canvases, and the Lightning data module."""

from glimpse.data.canvas import compose
from glimpse.data.datamodule import GlimpseData
from glimpse.data.mnist_source import MnistUnavailableError, ensure_mnist, load_mnist

__all__ = ["GlimpseData", "MnistUnavailableError", "compose", "ensure_mnist", "load_mnist"]
