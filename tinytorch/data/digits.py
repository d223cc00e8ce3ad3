"""The 8x8 handwritten-digits data set that scikit-learn ships (1797 images, offline)."""
import numpy as np

from .dataset import TensorDataset


def load_digits(test_fraction=0.2, as_images=False, seed=0):
    """(train, test) TensorDatasets of float32 pixels in [0, 1] and int64 labels 0-9.

    as_images=False gives (N, 64) rows for an MLP; True gives (N, 1, 8, 8)
    for a CNN. The split is a fixed shuffle by `seed`.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise ImportError("load_digits() reads the digits data set that scikit-learn ships; "
                          "install it from the tinytorch checkout with "
                          "pip install -e \".[digits]\" (or: pip install scikit-learn)") from None
    bunch = sklearn_digits()
    images = (bunch.data / 16.0).astype(np.float32)
    labels = bunch.target.astype(np.int64)
    if as_images:
        images = images.reshape(-1, 1, 8, 8)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = int(round(len(labels) * test_fraction))
    test, train = order[:n_test], order[n_test:]
    return TensorDataset(images[train], labels[train]), TensorDataset(images[test], labels[test])
