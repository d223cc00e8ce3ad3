"""Operations with their own backward: convolution, pooling, softmax, dropout.

Each is one forward computation plus the gradient rule, built on
`tinytorch.tensor.from_op`. Convolutions, forward and backward, run on the
current backend (`conv2d`, `conv2d_grad_input`, `conv2d_grad_weight`).
"""
import numpy as np

from ..backends.base import col2im, conv_output_shape
from ..backends.numpy_backend import _windows as receptive_fields
from ..config import get_backend
from ..rng import generator
from ..tensor import Tensor, from_op


def _float_pair(x, w):
    """Both as the wider float dtype, so the backend sees matching dtypes."""
    dtype = np.result_type(x.dtype, w.dtype)
    dtype = dtype if dtype.kind == "f" else np.dtype(np.float32)
    return x.data.astype(dtype, copy=False), w.data.astype(dtype, copy=False)


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """Cross-correlation of (N, C, H, W) with (F, C, KH, KW), plus a bias of shape (F,)."""
    x, weight = Tensor.ensure(x), Tensor.ensure(weight)
    if x.ndim != 4 or weight.ndim != 4:
        raise ValueError(f"conv2d expects x of shape (N, C, H, W) and weight (F, C, KH, KW), "
                         f"got {x.shape} and {weight.shape}")
    conv_output_shape(x.shape, weight.shape, stride, padding)   # clear shape errors first
    xd, wd = _float_pair(x, weight)
    out = get_backend().conv2d(xd, wd, stride, padding)

    def backward(g):
        backend = get_backend()
        g = g.astype(xd.dtype, copy=False)
        grad_x = backend.conv2d_grad_input(g, wd, xd.shape, stride, padding) \
            if x.requires_grad else None
        grad_w = backend.conv2d_grad_weight(xd, g, wd.shape, stride, padding) \
            if weight.requires_grad else None
        return grad_x, grad_w
    out = from_op(out, (x, weight), backward)
    if bias is not None:
        out = out + Tensor.ensure(bias).reshape(1, -1, 1, 1)
    return out


def _windows(x, kernel, stride, padding, fill=0.0):
    """(N, C, H, W) -> view (N, C, OH, OW, KH, KW) of every pooling window."""
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)),
                   constant_values=fill)
    return receptive_fields(x, kernel, kernel, stride, 0)


def _scatter_windows(grad_windows, x_shape, kernel, stride, padding):
    """Adjoint of `_windows`: add each window's gradient back to the input positions."""
    n, c, h, w = x_shape
    oh, ow = grad_windows.shape[2:4]
    cols = grad_windows.transpose(0, 1, 4, 5, 2, 3).reshape(n * c * kernel * kernel, oh * ow)
    return col2im(cols, (n * c, h, w), kernel, kernel, stride, padding).reshape(x_shape)


def _check_pool_input(name, x, kernel, padding):
    if x.ndim != 4:
        raise ValueError(f"{name} expects input of shape (N, C, H, W), got {x.shape}")
    if kernel > x.shape[2] + 2 * padding or kernel > x.shape[3] + 2 * padding:
        raise ValueError(f"{name}: window {kernel}x{kernel} is larger than the (padded) "
                         f"input {x.shape}")


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max over each window; the gradient goes to the (first) maximum."""
    x = Tensor.ensure(x)
    stride = stride or kernel_size
    _check_pool_input("max_pool2d", x, kernel_size, padding)
    win = _windows(x.data, kernel_size, stride, padding, fill=-np.inf)
    flat = win.reshape(win.shape[:4] + (-1,))
    arg = flat.argmax(axis=-1)
    out = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]

    def backward(g):
        onehot = np.zeros(flat.shape, dtype=g.dtype)
        np.put_along_axis(onehot, arg[..., None], g[..., None], axis=-1)
        return (_scatter_windows(onehot.reshape(win.shape), x.shape, kernel_size, stride,
                                 padding),)
    return from_op(out, (x,), backward)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Mean over each window (zero padding counts, as in PyTorch's default)."""
    x = Tensor.ensure(x)
    stride = stride or kernel_size
    _check_pool_input("avg_pool2d", x, kernel_size, padding)
    win = _windows(x.data, kernel_size, stride, padding)
    out = win.mean(axis=(-2, -1))
    area = kernel_size * kernel_size

    def backward(g):
        spread = np.broadcast_to((g / area)[..., None, None], win.shape)
        return (_scatter_windows(spread, x.shape, kernel_size, stride, padding),)
    return from_op(out.astype(x.dtype, copy=False), (x,), backward)


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along `axis`, shifted by the max so it never overflows."""
    x = Tensor.ensure(x)
    e = np.exp(x.data - x.data.max(axis=axis, keepdims=True))
    out = e / e.sum(axis=axis, keepdims=True)
    return from_op(out, (x,), lambda g: (out * (g - (g * out).sum(axis=axis, keepdims=True)),))


def log_softmax(x, axis=-1):
    """x - logsumexp(x) along `axis`, computed stably."""
    x = Tensor.ensure(x)
    shifted = x.data - x.data.max(axis=axis, keepdims=True)
    out = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))

    def backward(g):
        return (g - np.exp(out) * g.sum(axis=axis, keepdims=True),)
    return from_op(out, (x,), backward)


def dropout(x, p, training=True):
    """Zero each element with probability p, scale the rest by 1/(1-p) (inverted dropout)."""
    x = Tensor.ensure(x)
    if not training or p == 0:
        return x
    keep = (generator().random(x.shape) >= p).astype(x.dtype) / (1 - p)
    return x * Tensor(keep)


def gelu(x):
    """GELU, tanh approximation (PyTorch's GELU(approximate='tanh'))."""
    x = Tensor.ensure(x)
    c = float(np.sqrt(2 / np.pi))
    return 0.5 * x * (1 + (c * (x + 0.044715 * x ** 3)).tanh())
