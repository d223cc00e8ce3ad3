"""Tensor: construction, dtypes, values of the operators, autograd bookkeeping, clear errors."""
import numpy as np
import pytest

import tinytorch
from tinytorch import Tensor, no_grad
from tinytorch import cat, stack


@pytest.fixture(autouse=True)
def numpy_backend():
    with tinytorch.use_backend("numpy"):
        yield


def test_data_is_the_numpy_array_float32_by_default():
    t = Tensor([[1, 2], [3, 4]])
    assert isinstance(t.data, np.ndarray) and t.dtype == np.float32 and t.shape == (2, 2)
    assert t.numpy() is t.data
    assert Tensor(np.zeros(3, dtype=np.float64)).dtype == np.float64   # float arrays kept
    assert Tensor(np.arange(3)).dtype.kind == "i"                        # ids stay integers
    assert Tensor(2.5).item() == 2.5


def test_python_numbers_keep_float32():
    t = Tensor([1.0, 2.0])
    assert (t * 2.5 + 1).dtype == np.float32
    assert (1 - t / 3).dtype == np.float32


def test_ndarray_on_the_left_still_gives_a_tensor():
    result = np.ones(2, dtype=np.float32) + Tensor([1.0, 2.0])
    assert isinstance(result, Tensor)
    np.testing.assert_array_equal(result.data, [2.0, 3.0])


def test_operators_compute_what_numpy_computes(rng):
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    ta, tb = Tensor(a), Tensor(b)
    np.testing.assert_allclose((ta @ tb).data, a @ b)
    np.testing.assert_allclose((ta * 2 - 1).data, a * 2 - 1)
    np.testing.assert_allclose(ta.exp().log().data, a, atol=1e-12)
    np.testing.assert_allclose(ta.sum(axis=1).data, a.sum(axis=1))
    np.testing.assert_allclose(ta.mean(axis=0, keepdims=True).data, a.mean(axis=0, keepdims=True))
    np.testing.assert_allclose(ta.max(axis=1).data, a.max(axis=1))
    np.testing.assert_allclose(ta.var(axis=1).data, a.var(axis=1))
    np.testing.assert_allclose(ta.T.data, a.T)
    np.testing.assert_allclose(ta[1:, :2].data, a[1:, :2])
    np.testing.assert_allclose(cat([ta, ta], axis=0).data, np.concatenate([a, a]))
    np.testing.assert_allclose(stack([ta, ta], axis=1).data, np.stack([a, a], axis=1))
    np.testing.assert_allclose(ta.sigmoid().data, 1 / (1 + np.exp(-a)))
    assert (ta > 0).data.dtype == bool


@pytest.mark.parametrize("shape_a,shape_b", [((3,), (3,)), ((3,), (3, 2)), ((2, 3), (3,)),
                                             ((4, 2, 3), (3,)), ((3,), (4, 3, 2))])
def test_matmul_with_vectors_follows_numpy(rng, shape_a, shape_b):
    a, b = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    out = Tensor(a) @ Tensor(b)
    assert out.shape == (a @ b).shape
    np.testing.assert_allclose(out.data, a @ b)


def test_sigmoid_does_not_overflow():
    with np.errstate(over="raise", invalid="raise"):
        out = Tensor([-1000.0, 0.0, 1000.0]).sigmoid().data
    np.testing.assert_allclose(out, [0.0, 0.5, 1.0])


def test_gradients_accumulate_until_cleared():
    x = Tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.data, [2 + 3, 4 + 3])


def test_a_tensor_used_twice_gets_both_contributions():
    x = Tensor([3.0], requires_grad=True)
    y = x * x + x
    y.backward()
    np.testing.assert_allclose(x.grad.data, [7.0])


def test_no_grad_records_nothing():
    x = Tensor([1.0], requires_grad=True)
    with no_grad():
        y = x * 2
    assert not y.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_backward_on_non_scalar_needs_a_gradient():
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match=r"needs a scalar.*shape \(2, 3\)"):
        y.backward()
    with pytest.raises(ValueError, match=r"gradient has shape \(3,\)"):
        y.backward(np.ones(3))
    y.backward(np.ones((2, 3)))
    np.testing.assert_allclose(x.grad.data, 2 * np.ones((2, 3)))


def test_deep_graphs_do_not_hit_the_recursion_limit():
    x = Tensor([1.0], requires_grad=True)
    y = x
    for _ in range(5000):
        y = y + 1
    y.backward()
    assert x.grad.item() == 1.0


def test_mixed_precision_matmul_promotes_and_grads_keep_dtype():
    w = Tensor(np.ones((3, 2), dtype=np.float32), requires_grad=True)
    out = Tensor(np.ones((4, 3), dtype=np.float64)) @ w
    assert out.dtype == np.float64
    out.sum().backward()
    assert w.grad.dtype == np.float32


def test_clear_errors():
    with pytest.raises(ValueError, match=r"inner dimensions differ: \(2, 3\) @ \(4, 5\)"):
        Tensor(np.ones((2, 3))) @ Tensor(np.ones((4, 5)))
    with pytest.raises(ValueError, match="cannot reshape a tensor of shape"):
        Tensor(np.ones(6)).reshape(4, 2)
    with pytest.raises(ValueError, match="one element"):
        Tensor([1.0, 2.0]).item()
    with pytest.raises(TypeError, match="only float tensors"):
        Tensor(np.arange(3), requires_grad=True)
    with pytest.raises(TypeError, match="numeric data"):
        Tensor(["a"])


def test_repr_is_readable():
    assert repr(Tensor([1.0, 2.0])) == "Tensor([1., 2.])"
    assert repr(Tensor([1.0], requires_grad=True)) == "Tensor([1.], requires_grad=True)"
    assert "dtype=float64" in repr(Tensor(np.zeros(1)))
