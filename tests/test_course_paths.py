"""The course's import paths resolve to our objects, and its layer code runs as written."""
import importlib

import numpy as np
import pytest

import tinytorch
import tinytorch.core.layers
from tinytorch import data, nn, optim
from tinytorch.backends.numpy_backend import NumpyBackend

COURSE_NAMES = {
    "tinytorch.core.tensor": {"Tensor": tinytorch.Tensor},
    "tinytorch.core.layers": {"Linear": nn.Linear, "Dense": nn.Linear,
                              "matmul": tinytorch.matmul},
    "tinytorch.core.activations": {"ReLU": nn.ReLU, "Sigmoid": nn.Sigmoid, "Tanh": nn.Tanh,
                                   "GELU": nn.GELU, "Softmax": nn.Softmax},
    "tinytorch.core.losses": {"CrossEntropyLoss": nn.CrossEntropyLoss, "MSELoss": nn.MSELoss},
    "tinytorch.core.optimizers": {"SGD": optim.SGD, "Adam": optim.Adam},
    "tinytorch.core.spatial": {"Conv2d": nn.Conv2d, "MaxPool2d": nn.MaxPool2d},
    "tinytorch.core.attention": {"MultiHeadAttention": nn.MultiHeadAttention},
    "tinytorch.core.dataloader": {"Dataset": data.Dataset, "DataLoader": data.DataLoader,
                                  "TensorDataset": data.TensorDataset},
}


@pytest.mark.parametrize("module", COURSE_NAMES)
def test_course_paths_are_our_objects(module):
    imported = importlib.import_module(module)
    for name, obj in COURSE_NAMES[module].items():
        assert getattr(imported, name) is obj, f"{module}.{name}"


def test_top_level_names():
    assert tinytorch.core.layers.Dense is tinytorch.nn.Linear
    assert tinytorch.models.build_resnet is tinytorch.build_resnet
    assert tinytorch.data.load_cifar10 is tinytorch.load_cifar10
    assert tinytorch.data.load_digits is tinytorch.load_digits
    assert callable(tinytorch.manual_seed)


class Recording(NumpyBackend):
    """Remembers the arrays its matmul was given."""

    def __init__(self):
        self.seen = []

    def matmul(self, a, b):
        self.seen.append((a, b))
        return super().matmul(a, b)


def test_design_document_matmul_calls_the_backend_with_tensor_data(rng):
    from tinytorch.core.layers import matmul
    from tinytorch.core.tensor import Tensor
    a = Tensor(rng.standard_normal((3, 4)).astype(np.float32))
    b = Tensor(rng.standard_normal((4, 2)).astype(np.float32))
    backend = Recording()
    with tinytorch.use_backend(backend):
        result = matmul(a, b)
    assert isinstance(result, Tensor)
    (seen_a, seen_b), = backend.seen
    np.testing.assert_array_equal(seen_a, a.data)
    np.testing.assert_array_equal(seen_b, b.data)
    np.testing.assert_allclose(result.data, a.data @ b.data, rtol=1e-6)


def test_course_style_training_step(rng):
    """A course module's loop: Dense layers, an activation, a loss, SGD(lr=...)."""
    from tinytorch.core.activations import ReLU
    from tinytorch.core.layers import Dense
    from tinytorch.core.losses import MSELoss
    from tinytorch.core.optimizers import SGD
    from tinytorch.core.tensor import Tensor
    layers = [Dense(3, 5), ReLU(), Dense(5, 1)]
    params = [p for layer in layers for p in layer.parameters()]
    optimizer = SGD(params, lr=0.1)
    x = Tensor(rng.standard_normal((8, 3)).astype(np.float32))
    backend = Recording()
    with tinytorch.use_backend(backend):
        out = x
        for layer in layers:
            out = layer(out)
        loss = MSELoss()(out, Tensor(np.zeros((8, 1), dtype=np.float32)))
        loss.backward()
        optimizer.step()
    assert len(backend.seen) == 2 + 3        # forward, then weight grads and one input grad


def test_course_conv_and_attention_layers_run(rng):
    from tinytorch.core.attention import MultiHeadAttention
    from tinytorch.core.spatial import Conv2d, MaxPool2d
    with tinytorch.use_backend("numpy"):
        x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
        assert MaxPool2d(2)(Conv2d(3, 4, 3, padding=1)(x)).shape == (1, 4, 4, 4)
        tokens = rng.standard_normal((2, 5, 8)).astype(np.float32)
        assert MultiHeadAttention(8, 2)(tokens).shape == (2, 5, 8)


def test_the_course_backend_classes_are_the_registered_ones():
    from tinytorch.backends import NaiveBackend, OptimizedBackend
    from tinytorch.backends.registry import load_backend
    assert type(load_backend("naive")) is NaiveBackend
    assert type(load_backend("optimized")) is OptimizedBackend
    from tinytorch.config import get_backend, set_backend
    assert set_backend is tinytorch.set_backend and get_backend is tinytorch.get_backend
