"""Data: Dataset, TensorDataset, DataLoader; CIFAR-10, digits and a synthetic CIFAR-shaped set."""
from .cifar10 import DownloadError, load_cifar10
from .dataset import DataLoader, Dataset, TensorDataset
from .digits import load_digits
from .synthetic import synthetic_cifar10

__all__ = ["DataLoader", "Dataset", "DownloadError", "TensorDataset", "load_cifar10",
           "load_digits", "synthetic_cifar10"]
