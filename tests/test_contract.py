"""The backend contract: every core backend against a float64 reference, and validation."""
import numpy as np
import pytest

import tinytorch
from tinytorch.backends import BackendError, ComputeBackend, NaiveBackend, NumpyBackend
from tinytorch.backends.base import col2im, im2col

CORE = ["naive", "numpy", "optimized"]
TOL = {np.float32: 1e-5, np.float64: 1e-12}


def rel_err(out, ref):
    return np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-300)


def ref_conv(x, w, stride, padding):
    """Direct float64 cross-correlation, written independently of every backend."""
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    w = w.astype(np.float64)
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((n, f, oh, ow))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
            out += np.einsum("nchw,fc->nfhw", patch, w[:, :, i, j])
    return out


def ref_conv_grads(x, w, grad_out, stride, padding):
    """Gradients by the chain rule on the same direct formula, in float64."""
    x64 = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    w64, g = w.astype(np.float64), grad_out.astype(np.float64)
    _, _, kh, kw = w.shape
    oh, ow = g.shape[2:]
    gx, gw = np.zeros_like(x64), np.zeros_like(w64)
    for i in range(kh):
        for j in range(kw):
            sl = (slice(None), slice(None), slice(i, i + stride * oh, stride),
                  slice(j, j + stride * ow, stride))
            gx[sl] += np.einsum("nfhw,fc->nchw", g, w64[:, :, i, j])
            gw[:, :, i, j] = np.einsum("nfhw,nchw->fc", g, x64[sl])
    h, wd = x.shape[2:]
    return gx[:, :, padding:padding + h, padding:padding + wd], gw


MATMUL_SHAPES = [(1, 1, 1), (1, 7, 5), (6, 1, 9), (5, 8, 1), (17, 33, 9), (64, 64, 64),
                 (65, 31, 129), (3, 200, 2)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend,m,k,n", [
    (backend, *shape) for backend in CORE for shape in MATMUL_SHAPES
    if backend != "naive" or np.prod(shape) <= 70_000])   # naive is slow on purpose
def test_matmul_matches_float64_reference(backend, dtype, m, k, n, rng):
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    out = tinytorch.backends.load_backend(backend).matmul(a, b)
    assert out.dtype == dtype and out.shape == (m, n)
    assert rel_err(out, a.astype(np.float64) @ b.astype(np.float64)) < TOL[dtype]


CONV_CASES = [  # x shape, w shape, stride, padding
    ((1, 1, 5, 5), (1, 1, 3, 3), 1, 0),
    ((2, 3, 7, 6), (4, 3, 3, 2), 2, 1),
    ((2, 2, 8, 8), (3, 2, 1, 1), 1, 0),
    ((1, 3, 5, 4), (2, 3, 5, 4), 1, 0),
    ((2, 4, 9, 9), (5, 4, 3, 3), 3, 2),
]


@pytest.mark.parametrize("backend", CORE)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape,w_shape,stride,padding", CONV_CASES)
def test_conv2d_and_gradients_match_reference(backend, dtype, x_shape, w_shape, stride,
                                              padding, rng):
    impl = tinytorch.backends.load_backend(backend)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    ref = ref_conv(x, w, stride, padding)
    out = impl.conv2d(x, w, stride, padding)
    assert out.dtype == dtype and out.shape == ref.shape
    assert rel_err(out, ref) < TOL[dtype]

    grad_out = rng.standard_normal(ref.shape).astype(dtype)
    gx_ref, gw_ref = ref_conv_grads(x, w, grad_out, stride, padding)
    gx = impl.conv2d_grad_input(grad_out, w, x.shape, stride, padding)
    gw = impl.conv2d_grad_weight(x, grad_out, w.shape, stride, padding)
    assert gx.dtype == dtype and gw.dtype == dtype
    assert rel_err(gx, gx_ref) < TOL[dtype]
    assert rel_err(gw, gw_ref) < TOL[dtype]


@pytest.mark.parametrize("backend", CORE)
def test_batched_matmul(backend, rng):
    a = rng.standard_normal((3, 4, 5))
    b = rng.standard_normal((3, 5, 2))
    out = tinytorch.backends.load_backend(backend).batched_matmul(a, b)
    assert rel_err(out, np.matmul(a, b)) < 1e-12


def test_im2col_col2im_are_adjoint(rng):
    """<im2col(x), y> == <x, col2im(y)>: the gradient of im2col is col2im."""
    x = rng.standard_normal((3, 7, 6))
    cols = im2col(x, 3, 2, 2, 1)
    y = rng.standard_normal(cols.shape)
    assert np.isclose(np.sum(cols * y), np.sum(x * col2im(y, x.shape, 3, 2, 2, 1)))


# ------------------------------------------------------------------ validation

@pytest.mark.parametrize("backend", CORE)
def test_validation_errors_name_the_problem(backend):
    impl = tinytorch.backends.load_backend(backend)
    f32 = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match=r"inner dimensions differ: a \(2, 3\) @ b \(4, 2\)"):
        impl.matmul(f32, np.ones((4, 2), np.float32))
    with pytest.raises(TypeError, match="both float32 or both float64, got float32, float64"):
        impl.matmul(f32, np.ones((3, 2)))
    with pytest.raises(TypeError, match="int64"):
        impl.matmul(np.ones((2, 3), np.int64), np.ones((3, 2), np.int64))
    with pytest.raises(ValueError, match="must be 2-D"):
        impl.matmul(np.ones(3), np.ones(3))
    x, w = np.ones((1, 3, 5, 5)), np.ones((2, 3, 3, 3))
    with pytest.raises(ValueError, match="3 channels but weight expects 2"):
        impl.conv2d(x, np.ones((2, 2, 3, 3)))
    with pytest.raises(ValueError, match="larger than the padded input"):
        impl.conv2d(x, np.ones((2, 3, 9, 9)), 1, 1)
    with pytest.raises(ValueError, match="stride must be an integer >= 1"):
        impl.conv2d(x, w, 0)
    with pytest.raises(ValueError, match="padding must be an integer >= 0"):
        impl.conv2d(x, w, 1, -1)
    with pytest.raises(ValueError, match="must be 4-D"):
        impl.conv2d(np.ones((3, 5, 5)), w)
    with pytest.raises(ValueError, match="grad_out has shape"):
        impl.conv2d_grad_input(np.ones((1, 2, 4, 4)), w, x.shape, 1, 0)


def test_dispatch_validates_and_uses_current_backend():
    with tinytorch.use_backend("numpy"):
        out = tinytorch.matmul(np.ones((2, 3), np.float32), np.ones((3, 4), np.float32))
        assert out.shape == (2, 4) and out.dtype == np.float32 and np.all(out == 3)
        with pytest.raises(ValueError, match="inner dimensions"):
            tinytorch.matmul(np.ones((2, 3)), np.ones((2, 3)))


def test_non_contiguous_inputs_are_made_contiguous(rng):
    seen = []

    class Recording(NumpyBackend):
        def matmul(self, a, b):
            seen.append(a.flags.c_contiguous and b.flags.c_contiguous)
            return a @ b

    a = rng.standard_normal((6, 4)).T          # Fortran-ordered view
    b = rng.standard_normal((12, 5))[::2]      # strided view
    out = Recording().matmul(a, b)
    assert seen == [True] and rel_err(out, a @ b) < 1e-12


def test_zero_size_inputs_give_empty_or_zero_result_without_kernel():
    class Exploding(ComputeBackend):
        def matmul(self, a, b):
            raise AssertionError("kernel called on empty input")

        def conv2d(self, x, w, stride=1, padding=0):
            raise AssertionError("kernel called on empty input")

    impl = Exploding()
    assert impl.matmul(np.ones((0, 3)), np.ones((3, 4))).shape == (0, 4)
    out = impl.matmul(np.ones((2, 0), np.float32), np.ones((0, 4), np.float32))
    assert out.shape == (2, 4) and out.dtype == np.float32 and not out.any()
    assert impl.conv2d(np.ones((0, 3, 5, 5)), np.ones((2, 3, 3, 3))).shape == (0, 2, 3, 3)


class _Returns(ComputeBackend):
    """Returns whatever `make(a, b)` builds, to test the output check."""
    name = "returns"

    def __init__(self, make):
        self.make = make

    def matmul(self, a, b):
        return self.make(a, b)

    def conv2d(self, x, w, stride=1, padding=0):
        raise NotImplementedError


def test_output_checks_raise_backend_error_naming_the_backend():
    a = np.ones((2, 3), np.float32)
    b = np.ones((3, 2), np.float32)
    cases = [
        (lambda a, b: (a @ b).tolist(), "returned list"),
        (lambda a, b: np.ones((3, 3), np.float32), r"returned shape \(3, 3\), expected \(2, 2\)"),
        (lambda a, b: (a @ b).astype(np.int32), "returned dtype int32 for float32"),
        (lambda a, b: (a @ b).astype(np.float16), "returned dtype float16"),
        (lambda a, b: a[:, :2], "returned an array that shares memory with one of its inputs"),
    ]
    for make, message in cases:
        with pytest.raises(BackendError, match=f"backend 'returns': matmul {message}"):
            _Returns(make).matmul(a, b)
    assert issubclass(BackendError, RuntimeError)


def test_float64_result_for_float32_inputs_is_cast_down():
    """The course's NaiveBackend accumulates into np.zeros((m, n)): float64."""
    out = _Returns(lambda a, b: a.astype(np.float64) @ b).matmul(
        np.ones((2, 3), np.float32), np.ones((3, 2), np.float32))
    assert out.dtype == np.float32 and np.all(out == 3)


def test_validation_wraps_each_operation_once_also_in_subclasses():
    calls = []

    class Counting(NaiveBackend):
        def matmul(self, a, b):
            calls.append(a.shape)
            return super().matmul(a, b)

    Counting().matmul(np.ones((2, 2)), np.ones((2, 2)))
    assert calls == [(2, 2)]
    with pytest.raises(ValueError):
        Counting().matmul(np.ones((2, 3)), np.ones((2, 3)))
    assert calls == [(2, 2)]


def test_backend_missing_a_required_operation_cannot_be_instantiated():
    class OnlyMatmul(ComputeBackend):
        def matmul(self, a, b):
            return a @ b

    with pytest.raises(TypeError, match="conv2d"):
        OnlyMatmul()


def test_an_operation_assigned_after_the_class_is_validated_too():
    """A notebook habit: patch a method onto an existing backend class."""
    class Patched(ComputeBackend):
        def matmul(self, a, b):
            return a @ b

        def conv2d(self, x, w, stride=1, padding=0):
            raise NotImplementedError

    Patched.matmul = lambda self, a, b: "not an array"
    with pytest.raises(ValueError, match=r"inner dimensions differ"):
        Patched().matmul(np.ones((2, 3)), np.ones((4, 5)))
    with pytest.raises(BackendError, match=r"backend 'Patched': matmul returned str"):
        Patched().matmul(np.ones((2, 3)), np.ones((3, 5)))


def test_a_virtual_subclass_is_refused_since_it_would_bypass_validation():
    class Lookalike:
        def matmul(self, a, b):
            return "x"

    with pytest.raises(TypeError, match=r"subclass ComputeBackend instead"):
        ComputeBackend.register(Lookalike)
    assert not isinstance(Lookalike(), ComputeBackend)


def test_keywords_use_the_backends_own_parameter_names(rng):
    """The course's backend names conv2d's parameters `input` and `kernel`."""
    class Course(ComputeBackend):
        def matmul(self, a, b):
            return a @ b

        def conv2d(self, input, kernel, stride=1, padding=0):
            return NaiveBackend().conv2d(input, kernel, stride, padding)

    x = rng.standard_normal((1, 2, 5, 5))
    w = rng.standard_normal((3, 2, 3, 3))
    by_keyword = Course().conv2d(input=x, kernel=w, padding=1)
    np.testing.assert_allclose(by_keyword, ref_conv(x, w, 1, 1), rtol=1e-12)
    with pytest.raises(ValueError, match=r"padding must be an integer >= 0"):
        Course().conv2d(input=x, kernel=w, padding=-1)
    with pytest.raises(TypeError, match=r"conv2d\(self, x, w, stride=1, padding=0\).*'w'"):
        NaiveBackend().conv2d(x, kernel=w)
