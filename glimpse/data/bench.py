"""Images per second for each data set, through the training DataLoader (the path training uses).

    python -m glimpse.data.bench [--root data] [--batches 200] [--batch-size 128]
"""

from __future__ import annotations

import argparse
import itertools
import platform
import time

import torch

from glimpse.data.datamodule import GlimpseData

CONFIGS = {  # name -> GlimpseData arguments
    "mnist": dict(dataset="mnist"),
    "translated60": dict(dataset="translated", canvas=60),
    "cluttered60": dict(dataset="cluttered", canvas=60, fragments=4, fragment_size=8),
    "cluttered100": dict(dataset="cluttered", canvas=100, fragments=8, fragment_size=8),
}


def images_per_second(data: GlimpseData, batches: int) -> float:
    loader = iter(data.train_dataloader())
    next(loader)  # warm-up
    start = time.perf_counter()
    count = sum(len(labels) for _, labels in itertools.islice(loader, batches))
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, batch {args.batch_size}, {args.batches} batches")
    for name, config in CONFIGS.items():
        data = GlimpseData(root=args.root, batch_size=args.batch_size, **config)
        data.prepare_data()
        data.setup("fit")
        print(f"{name:>13}: {images_per_second(data, args.batches):>9,.0f} images/s")


if __name__ == "__main__":
    main()
