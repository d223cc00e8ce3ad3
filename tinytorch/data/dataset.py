"""Dataset, TensorDataset and DataLoader: batches of Tensors, shuffled from tinytorch's generator."""
import numpy as np

from ..rng import generator
from ..tensor import Tensor


class Dataset:
    """Anything with `__len__` and `__getitem__(i)` returning a tuple of arrays (or numbers)."""

    def __len__(self):
        raise NotImplementedError(f"{type(self).__name__} does not define __len__")

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} does not define __getitem__")


class TensorDataset(Dataset):
    """Equal-length arrays side by side: item i is (arrays[0][i], arrays[1][i], ...)."""

    def __init__(self, *arrays):
        if not arrays:
            raise ValueError("TensorDataset needs at least one array")
        self.arrays = tuple(np.asarray(a.data if isinstance(a, Tensor) else a) for a in arrays)
        lengths = [len(a) for a in self.arrays]
        if len(set(lengths)) != 1:
            raise ValueError(f"TensorDataset: arrays have different lengths {lengths}")

    def __len__(self):
        return len(self.arrays[0])

    def __getitem__(self, index):
        return tuple(a[index] for a in self.arrays)


class DataLoader:
    """Iterate over a dataset in batches of Tensors.

    shuffle=True draws a new order every epoch from tinytorch's generator
    (repeatable after `tinytorch.manual_seed`), or from `seed` if given;
    drop_last=True skips a final batch smaller than batch_size.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=None):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.dataset, self.batch_size = dataset, batch_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self._rng = np.random.default_rng(seed) if seed is not None else None

    def __len__(self):
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.dataset)
        order = (self._rng or generator()).permutation(n) if self.shuffle else np.arange(n)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            yield self._batch(order[start:start + self.batch_size])

    def _batch(self, indices):
        if isinstance(self.dataset, TensorDataset):    # one fancy-index per array
            fields = self.dataset[indices]
        else:
            items = [self.dataset[int(i)] for i in indices]
            fields = [np.stack([np.asarray(item[k]) for item in items])
                      for k in range(len(items[0]))]
        return tuple(Tensor(np.asarray(f)) for f in fields)
