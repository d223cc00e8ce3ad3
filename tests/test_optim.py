"""Optimizers follow PyTorch's update rules step by step."""
import numpy as np
import pytest

import tinytorch
from tinytorch import Tensor
from tinytorch.nn import Parameter
from tinytorch.optim import SGD, Adam

GRADS = [np.array([1.0, -2.0]), np.array([0.5, 0.5]), np.array([-1.0, 3.0])]


def run(optimizer_class, steps=GRADS, **kwargs):
    p = Parameter(np.array([1.0, 2.0]))
    opt = optimizer_class([p], **kwargs)
    history = []
    for g in steps:
        p.grad = Tensor(g)
        opt.step()
        history.append(p.data.copy())
    return history


def test_sgd_plain():
    np.testing.assert_allclose(run(SGD, lr=0.1)[-1], [1.0, 2.0] - 0.1 * sum(GRADS))


def test_sgd_momentum_and_weight_decay():
    lr, mu, wd = 0.1, 0.9, 0.01
    p, v = np.array([1.0, 2.0]), None
    for g in GRADS:
        g = g + wd * p
        v = g if v is None else mu * v + g
        p = p - lr * v
    np.testing.assert_allclose(run(SGD, lr=lr, momentum=mu, weight_decay=wd)[-1], p)


def test_adam_matches_the_published_rule():
    lr, (b1, b2), eps = 0.01, (0.9, 0.999), 1e-8
    p, m, v = np.array([1.0, 2.0]), 0.0, 0.0
    for t, g in enumerate(GRADS, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    np.testing.assert_allclose(run(Adam, lr=lr)[-1], p)


def test_adam_against_pytorch():
    torch = pytest.importorskip("torch")
    ours = run(Adam, lr=0.05, weight_decay=0.1)
    p = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([p], lr=0.05, weight_decay=0.1)
    for g, want in zip(GRADS, ours):
        p.grad = torch.tensor(g)
        opt.step()
        np.testing.assert_allclose(p.detach().numpy(), want, rtol=1e-10)


def test_zero_grad_and_parameters_without_grad_are_left_alone():
    a, b = Parameter(np.ones(2)), Parameter(np.ones(2))
    opt = SGD([a, b], lr=1.0)
    (a * 3).sum().backward()
    opt.step()
    np.testing.assert_allclose(a.data, [-2.0, -2.0])
    np.testing.assert_allclose(b.data, [1.0, 1.0])
    opt.zero_grad()
    assert a.grad is None


def test_float32_parameters_stay_float32():
    p = Parameter(np.ones(3, dtype=np.float32))
    p.grad = Tensor(np.ones(3, dtype=np.float32))
    Adam([p]).step()
    assert p.dtype == np.float32


def test_training_reduces_the_loss():
    tinytorch.manual_seed(0)
    with tinytorch.use_backend("numpy"):
        model = tinytorch.build_mlp(in_features=3, hidden_sizes=(8,), num_classes=1)
        x = np.random.default_rng(0).standard_normal((32, 3)).astype(np.float32)
        y = x.sum(axis=1, keepdims=True)
        opt = SGD(model.parameters(), lr=0.05, momentum=0.9)
        losses = []
        for _ in range(50):
            opt.zero_grad()
            loss = tinytorch.nn.MSELoss()(model(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]


@pytest.mark.parametrize("params,lr,error,message", [
    ([], 0.1, ValueError, "empty parameter list"),
    ([Parameter(np.ones(1))], 0.0, ValueError, "learning rate must be positive"),
    ([np.ones(2)], 0.1, TypeError, "not a Tensor"),
])
def test_bad_arguments_are_clear(params, lr, error, message):
    with pytest.raises(error, match=message):
        SGD(params, lr=lr)


@pytest.mark.parametrize("optimizer_class,kwargs", [(SGD, {}), (SGD, {"momentum": 0.9}),
                                                    (Adam, {})])
def test_updates_are_in_place_unless_the_array_is_read_only(optimizer_class, kwargs):
    """Parameters are updated in place, as PyTorch's optimizers do (no new array per
    parameter per step); a read-only array is replaced by an updated copy instead."""
    p = Parameter(np.array([1.0, 2.0]))
    frozen = np.array([1.0, 2.0])
    frozen.flags.writeable = False
    q = Parameter(frozen)
    opt = optimizer_class([p, q], lr=0.1, **kwargs)
    array = p.data
    for _ in range(2):
        p.grad, q.grad = Tensor(np.array([1.0, -1.0])), Tensor(np.array([1.0, -1.0]))
        opt.step()
    assert p.data is array
    np.testing.assert_allclose(q.data, p.data)
    np.testing.assert_array_equal(frozen, [1.0, 2.0])
