"""The `optimized` backend's kernels against a float64 reference, path by path.

The GEMM has edge tiles, cache blocks, a transposed orientation for narrow
outputs, strided packing and a threaded split; conv2d has im2col, col2im, a
1x1 fast path and per-thread partial gradients. Each test below aims at one
of those paths with shapes chosen from the compiled tile and block sizes.
"""
import numpy as np
import pytest

from tinytorch.backends import OptimizedBackend, _conv, _gemm
from tinytorch.backends.optimized import THREADS_ENV

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 1e-5, np.float64: 1e-12}
MR, NR = _gemm.tile["float32"]
NARROW_MR, NARROW_NR = _gemm.narrow_tile["float32"]
KC, MC = 256, 192          # the block sizes documented in _gemm.pyx, section 1
RNG = np.random.default_rng(7)


def rel_err(out, ref):
    return np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-300)


def rand(*shape, dtype=np.float64):
    return RNG.standard_normal(shape).astype(dtype)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def backend(request):
    return OptimizedBackend(threads=request.param)


# ---------------------------------------------------------------- matmul

EDGE_SHAPES = (
    [(m, 7, n) for m in range(1, MR + 2) for n in (1, MR + 1, NR - 1, NR, NR + 1)]
    + [(1, 33, 97), (97, 33, 1), (13, 1, 17), (31, 37, 41), (257, 511, 129)]
    + [(MC + 5, KC + 3, NR * 3 + 5), (5, 2 * KC + 17, 9), (3, 5, 4100)]
    + [(1000, 64, 10), (10, 64, 1000), (64, 600, 64)]
    # narrow tile (few columns): direct kernel; packed (k past the small path); threaded
    + [(37, 19, NARROW_NR // 2 + 1), (45, 600, NARROW_NR - 1), (3000, 100, 12)]
    # one small side: unpacked, deep (k up to the direct path's limit and past it)
    + [(70, 3000, 40), (130, 700, 100), (20, 5000, 20)]
)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,k,n", EDGE_SHAPES)
def test_matmul_matches_float64_reference(backend, dtype, m, k, n):
    a, b = rand(m, k, dtype=dtype), rand(k, n, dtype=dtype)
    out = backend.matmul(a, b)
    assert out.dtype == dtype and out.shape == (m, n)
    assert rel_err(out, a.astype(np.float64) @ b.astype(np.float64)) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m,k,n", [(300, 200, 170), (170, 200, 300), (64, 700, 64)])
def test_one_and_two_threads_agree(dtype, m, k, n):
    """Large enough for the threaded split (row slabs when tall, column slabs when wide)."""
    a, b = rand(m, k, dtype=dtype), rand(k, n, dtype=dtype)
    one = OptimizedBackend(threads=1).matmul(a, b)
    two = OptimizedBackend(threads=2).matmul(a, b)
    assert rel_err(two, one) < TOL[dtype]
    assert rel_err(two, a.astype(np.float64) @ b.astype(np.float64)) < TOL[dtype]


def test_non_contiguous_inputs(backend):
    base = rand(90, 140, dtype=np.float32)
    a, b = base[:, ::2], base.T[::2, :50]        # (90, 70) strided, (70, 50) transposed
    assert rel_err(backend.matmul(a, b), a.astype(np.float64) @ b) < 1e-5


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_packs_through_any_strides(dtype):
    """_gemm.matmul reads transposed and strided views in place (conv relies on it)."""
    a, b = rand(60, 300, dtype=dtype), rand(250, 90, dtype=dtype)
    views = [(a[:, :250], b), (a.T[:250].T, b),             # row-major, and a copy of it
             (np.asfortranarray(a[:, :250]), b),           # column-major A: contiguous rows of A^T
             (a[:, :250], np.asfortranarray(b)),           # column-major B: transposing pack
             (a[::2, :250:2], b[::2, ::3])]                # neither stride is 1
    for x, y in views:
        c = np.full((x.shape[0], y.shape[1]), np.nan, dtype=dtype)
        _gemm.matmul(x, y, c, 2)
        assert rel_err(c, x.astype(np.float64) @ y.astype(np.float64)) < TOL[dtype]


def test_kernel_accumulates_when_asked():
    a, b = rand(20, 30), rand(30, 40)
    c = np.ones((20, 40))
    _gemm.matmul(a, b, c, 1, accumulate=True)
    assert rel_err(c, 1 + a @ b) < 1e-12


def test_kernel_rejects_a_wrong_call_instead_of_crashing():
    ints = np.ones((3, 3), dtype=np.int64)
    with pytest.raises(TypeError, match="float32 or float64"):
        _gemm.matmul(ints, ints, np.empty((3, 3)), 1)
    with pytest.raises(ValueError, match="shapes"):
        _gemm.matmul(np.ones((3, 4)), np.ones((5, 3)), np.empty((3, 3)), 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("count,m,k,n", [(12, 9, 16, 9), (2, 130, 140, 150), (1, 1, 5, 1)])
def test_batched_matmul(backend, dtype, count, m, k, n):
    """Many small products (one thread each) and few large ones (threads inside each)."""
    a, b = rand(count, m, k, dtype=dtype), rand(count, k, n, dtype=dtype)
    out = backend.batched_matmul(a, b)
    assert out.shape == (count, m, n) and out.dtype == dtype
    assert rel_err(out, np.matmul(a.astype(np.float64), b.astype(np.float64))) < TOL[dtype]


# ---------------------------------------------------------------- conv2d

def reference_conv(x, w, g, stride, padding):
    """Forward, grad_input, grad_weight in float64, tap by tap (no im2col, no backend)."""
    x, w, g = (v.astype(np.float64) for v in (x, w, g))
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh, ow = g.shape[2:]
    out, dxp, dw = np.zeros(g.shape), np.zeros(xp.shape), np.zeros(w.shape)
    for i in range(kh):
        for j in range(kw):
            window = (slice(None), slice(None), slice(i, i + stride * oh, stride),
                      slice(j, j + stride * ow, stride))
            out += np.einsum("nchw,fc->nfhw", xp[window], w[:, :, i, j])
            dxp[window] += np.einsum("nfhw,fc->nchw", g, w[:, :, i, j])
            dw[:, :, i, j] = np.einsum("nfhw,nchw->fc", g, xp[window])
    return out, dxp[:, :, padding:padding + h, padding:padding + wd], dw


CONV_CASES = [  # (n, c, h, w, f, kh, kw, stride, padding)
    (3, 4, 9, 7, 5, 3, 3, 1, 1),      # the common 3x3, padding 1
    (4, 3, 11, 10, 6, 3, 3, 2, 1),    # stride 2
    (2, 2, 6, 8, 3, 5, 5, 1, 2),      # padding 2, kernel larger than the stride
    (3, 5, 7, 6, 4, 3, 2, 2, 0),      # non-square kernel, stride 2, no padding
    (3, 6, 5, 7, 7, 1, 1, 1, 0),      # 1x1 fast path (no im2col)
    (2, 6, 5, 7, 7, 1, 1, 2, 0),      # 1x1 with stride: back through im2col
    (1, 3, 8, 8, 4, 3, 3, 1, 1),      # batch smaller than the thread count
    (2, 3, 7, 9, 5, 3, 3, 1, 0),      # stride 1 without padding (im2col copies the image)
    (2, 2, 5, 45, 3, 3, 3, 1, 1),     # output rows wider than a GEMM sliver
    # output rows of whole cache lines: the forward reads B in place from shifted planes
    (2, 3, 6, 16, 4, 3, 3, 1, 1),     # ... 3x3 stride 1 (and its input gradient)
    (2, 3, 9, 32, 5, 3, 3, 2, 1),     # ... stride 2
    (2, 3, 7, 17, 4, 3, 2, 1, 0),     # ... a 3x2 kernel, no padding
    (2, 2, 6, 16, 3, 5, 5, 1, 2),     # ... 5x5, padding 2
    (1, 3, 8, 16, 4, 3, 3, 1, 1),     # ... one image: its columns split between threads
    # 256+ output positions, 32+ filters: the weight gradient reads im2col's rows in place
    (2, 3, 16, 16, 32, 3, 3, 1, 1),
    (2, 5, 33, 31, 40, 3, 3, 2, 1),   # ... stride 2, filters not a whole number of slivers
    (2, 32, 24, 24, 32, 3, 3, 1, 1),  # Winograd (3x3 stride 1, 32+ channels, 288 tiles)
    (5, 33, 17, 15, 40, 3, 3, 1, 0),  # Winograd: odd sizes (edge tiles), no padding
    (3, 40, 19, 21, 33, 3, 3, 1, 2),  # Winograd: padding 2 (its gradient pads by 0)
]
WINOGRAD_CASES = CONV_CASES[-3:]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "x".join(map(str, c)))
def test_conv2d_and_both_gradients(backend, dtype, case):
    n, c, h, wd, f, kh, kw, stride, padding = case
    x, w = rand(n, c, h, wd, dtype=dtype), rand(f, c, kh, kw, dtype=dtype)
    out = backend.conv2d(x, w, stride, padding)
    g = rand(*out.shape, dtype=dtype)
    ref_out, ref_dx, ref_dw = reference_conv(x, w, g, stride, padding)
    dx = backend.conv2d_grad_input(g, w, x.shape, stride, padding)
    dw = backend.conv2d_grad_weight(x, g, w.shape, stride, padding)
    for got, ref in ((out, ref_out), (dx, ref_dx), (dw, ref_dw)):
        assert got.dtype == dtype and got.shape == ref.shape
        assert rel_err(got, ref) < TOL[dtype]


@pytest.mark.parametrize("case", WINOGRAD_CASES, ids=lambda c: "x".join(map(str, c)))
def test_winograd_cases_take_the_winograd_path(case):
    """The cases above meant for Winograd reach it, forward and for the input gradient
    (otherwise test_conv2d_and_both_gradients would not be testing it)."""
    n, c, h, wd, f, kh, kw, stride, padding = case
    for op in ("conv2d", "conv2d_grad_input", "conv2d_grad_weight"):
        assert _conv.algorithm((n, c, h, wd), (f, c, kh, kw), stride, padding, op) == "winograd"
    assert _conv.algorithm((1, 3, 32, 32), (16, 3, 3, 3), 1, 1, "conv2d") == "im2col"


def test_conv_threads_agree_on_a_real_layer():
    x, w = rand(8, 16, 12, 12, dtype=np.float32), rand(16, 16, 3, 3, dtype=np.float32)
    one, two = OptimizedBackend(threads=1), OptimizedBackend(threads=2)
    assert rel_err(two.conv2d(x, w, 1, 1), one.conv2d(x, w, 1, 1)) < 1e-6
    g = rand(8, 16, 12, 12, dtype=np.float32)
    assert rel_err(two.conv2d_grad_weight(x, g, w.shape, 1, 1),
                   one.conv2d_grad_weight(x, g, w.shape, 1, 1)) < 1e-5


# ---------------------------------------------------------------- threads setting

def test_threads_default_env_and_setter(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert isinstance(OptimizedBackend.openmp, bool)
    default = OptimizedBackend().threads
    assert default == (_gemm.max_threads() if OptimizedBackend.openmp else 1)
    monkeypatch.setenv(THREADS_ENV, "3")
    backend = OptimizedBackend()
    assert backend.threads == (3 if backend.openmp else 1)
    assert OptimizedBackend(threads=2).threads == (2 if backend.openmp else 1)
    backend.threads = 1
    assert backend.threads == 1


@pytest.mark.parametrize("bad", ["0", "two", "-1", "1.5"])
def test_bad_thread_count_from_env_is_named(monkeypatch, bad):
    monkeypatch.setenv(THREADS_ENV, bad)
    with pytest.raises(ValueError, match=THREADS_ENV):
        OptimizedBackend()


@pytest.mark.parametrize("bad", [0, -2, 1.5, "x", True])
def test_bad_thread_count_attribute_is_named(bad):
    backend = OptimizedBackend(threads=1)
    with pytest.raises(ValueError, match="threads"):
        backend.threads = bad
    assert backend.threads == 1
