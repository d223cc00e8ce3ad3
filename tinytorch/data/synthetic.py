"""Random CIFAR-shaped data: for timing models when the real data is not needed."""
import numpy as np

from .dataset import TensorDataset


def synthetic_cifar10(num_samples=512, num_classes=10, seed=0):
    """TensorDataset of N(0, 1) float32 images (N, 3, 32, 32) and int64 labels."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((num_samples, 3, 32, 32), dtype=np.float32)
    labels = rng.integers(0, num_classes, num_samples, dtype=np.int64)
    return TensorDataset(images, labels)
