"""The course design document's competition snippet, as written, on a CIFAR-shaped batch.

    python examples/course_competition.py                 # 1 image of 3x32x32
    python examples/course_competition.py --batch 8       # closer to a real batch

The same model runs under `naive` (the learning path) and then `optimized`
(the reference solution); `tinytorch.benchmark()` measures both, and the
speedup is printed. The input is random: speed does not depend on the pixels.
"""
import argparse

import numpy as np

import tinytorch
from tinytorch import Tensor, build_resnet


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1, help="images per batch (default: 1)")
    parser.add_argument("--image-size", type=int, default=32,
                        help="height and width of each image (default: 32, as CIFAR-10)")
    args = parser.parse_args(argv)

    tinytorch.manual_seed(0)
    model = build_resnet()
    model.eval()
    input = Tensor(np.random.default_rng(0).standard_normal(
        (args.batch, 3, args.image_size, args.image_size)).astype(np.float32))

    # Learning phase
    tinytorch.set_backend('naive')
    with tinytorch.benchmark() as bench:
        output = model(input)
    print(f"Naive: {bench.time_ms:.1f}ms, {bench.peak_memory_mb:.1f}MB")
    naive_time, naive_output = bench.time_ms, output.numpy()

    # Competition phase
    tinytorch.set_backend('optimized')
    with tinytorch.benchmark() as bench:
        output = model(input)
    print(f"Optimized: {bench.time_ms:.1f}ms, {bench.peak_memory_mb:.1f}MB")
    optimized_time = bench.time_ms

    # Same model, same input: the answers agree; only the speed differs.
    difference = np.abs(output.numpy() - naive_output).max()
    print(f"Largest difference between the two outputs: {difference:.2e}")

    # Speedup calculation
    speedup = naive_time / optimized_time
    print(f"Speedup: {speedup:.1f}x faster!")


if __name__ == "__main__":
    main()
