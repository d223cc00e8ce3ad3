"""Operations with their own backward: linear, convolution, batch norm, pooling,
softmax, cross-entropy, GELU, dropout.

Each is one forward computation plus the gradient rule, built on
`tinytorch.tensor.from_op`. Convolutions, forward and backward, run on the
current backend (`conv2d`, `conv2d_grad_input`, `conv2d_grad_weight`), and so
does every matrix product.

Why fused: a layer written as a chain of Tensor operations (GELU is eight of
them, batch norm a dozen) makes a full-size temporary array and a graph node
per step, and each backward step another. As one operation, the forward keeps
its intermediate arrays in numpy, updates the arrays it just allocated in
place (a bias added to a fresh matmul output, a ReLU applied to it), and the
backward is the derivative worked out by hand: fewer passes over memory, and
far less Python per training step.
"""
import numpy as np

from ..backends.base import col2im, conv_output_shape
from ..backends.numpy_backend import _windows as receptive_fields
from ..config import get_backend
from ..rng import generator
from ..tensor import Tensor, from_op, transposed_copy as _transposed


def _float_pair(x, w):
    """Both as the wider float dtype, so the backend sees matching dtypes."""
    dtype = np.result_type(x.dtype, w.dtype)
    dtype = dtype if dtype.kind == "f" else np.dtype(np.float32)
    return x.data.astype(dtype, copy=False), w.data.astype(dtype, copy=False)


def _owned(out):
    """A backend's result, safe to update in place (the contract guarantees it is a new
    array, not one of the inputs; a read-only one is copied)."""
    return out if out.flags.writeable else out.copy()


def linear(x, weight, bias=None, relu=False):
    """x @ weight + bias (then ReLU if asked), weight (in, out), bias (out,); x may have
    leading axes.

    One operation: the bias (and the ReLU) go into the backend's fresh product in
    place, and backward makes one matmul per gradient it needs (W^T and x^T made
    contiguous by `_transposed`, which the contract would otherwise copy the slow way)."""
    x, weight = Tensor.ensure(x), Tensor.ensure(weight)
    k, n = weight.shape
    if x.ndim < 1 or x.shape[-1] != k:
        raise ValueError(f"linear: input of shape {x.shape} does not fit a weight of shape "
                         f"{weight.shape} (in_features, out_features)")
    x2, w = _float_pair(x, weight)
    x2 = x2.reshape(-1, k)
    out = _owned(get_backend().matmul(x2, w))
    parents = (x, weight)
    if bias is not None:
        bias = Tensor.ensure(bias)
        out += bias.data
        parents = (x, weight, bias)
    if relu:
        np.maximum(out, 0, out=out)

    def backward(g):
        backend = get_backend()
        g2 = g.reshape(-1, n).astype(out.dtype, copy=False)
        if relu:
            g2 = g2 * (out > 0)
        grad_x = backend.matmul(g2, _transposed(w)).reshape(x.shape) \
            if x.requires_grad else None
        grad_w = backend.matmul(_transposed(x2), g2) if weight.requires_grad else None
        if bias is None:
            return grad_x, grad_w
        return grad_x, grad_w, g2.sum(axis=0) if bias.requires_grad else None
    return from_op(out.reshape(x.shape[:-1] + (n,)), parents, backward)


def conv2d(x, weight, bias=None, stride=1, padding=0, residual=None, relu=False):
    """Cross-correlation of (N, C, H, W) with (F, C, KH, KW), plus a bias of shape (F,).

    An epilogue can follow in the same operation: `residual` (a tensor of the
    output's shape) is added, then `relu` applied, both in place on the
    backend's fresh output -- a residual block's `relu(conv(x) + b + skip)`
    writes one array instead of three.
    """
    x, weight = Tensor.ensure(x), Tensor.ensure(weight)
    if x.ndim != 4 or weight.ndim != 4:
        raise ValueError(f"conv2d expects x of shape (N, C, H, W) and weight (F, C, KH, KW), "
                         f"got {x.shape} and {weight.shape}")
    shape = conv_output_shape(x.shape, weight.shape, stride, padding)  # clear errors first
    xd, wd = _float_pair(x, weight)
    out = _owned(get_backend().conv2d(xd, wd, stride, padding))
    parents = [x, weight]
    if bias is not None:
        bias = Tensor.ensure(bias)
        out += bias.data.reshape(-1, 1, 1)
        parents.append(bias)
    if residual is not None:
        residual = Tensor.ensure(residual)
        if residual.shape != shape:
            raise ValueError(f"conv2d: residual of shape {residual.shape} does not match the "
                             f"output shape {shape}")
        out += residual.data
        parents.append(residual)
    if relu:
        np.maximum(out, 0, out=out)

    def backward(g):
        backend = get_backend()
        g = g.astype(xd.dtype, copy=False)
        if relu:
            g = g * (out > 0)
        grads = [backend.conv2d_grad_input(g, wd, xd.shape, stride, padding)
                 if x.requires_grad else None,
                 backend.conv2d_grad_weight(xd, g, wd.shape, stride, padding)
                 if weight.requires_grad else None]
        if bias is not None:
            grads.append(g.sum(axis=(0, 2, 3)) if bias.requires_grad else None)
        if residual is not None:
            grads.append(g)
        return grads
    return from_op(out, tuple(parents), backward)


def _channel_sum(a):
    """Sum of an (N, C, H, W) array over everything but C: per image first (contiguous
    rows, numpy's pairwise sum), then over the batch -- faster than axis=(0, 2, 3)."""
    n, c = a.shape[:2]
    return a.reshape(n, c, -1).sum(axis=2).sum(axis=0)


def batch_norm(x, weight, bias, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    """Batch normalisation of (N, C, H, W) per channel, as one operation.

    training: normalise by the batch's statistics and return them too, as
    (out, mean, biased var) -- the caller updates its running averages;
    otherwise by running_mean / running_var (arrays), and return (out, None, None).
    The backward is the closed form (for training, the one through the batch
    statistics: dx = gamma/std * (g - mean(g) - xhat * mean(g * xhat)))."""
    x, weight, bias = Tensor.ensure(x), Tensor.ensure(weight), Tensor.ensure(bias)
    xd = x.data if x.dtype.kind == "f" else x.data.astype(np.float32)
    dtype = xd.dtype
    shape = (1, -1, 1, 1)
    count = xd.size // xd.shape[1]
    if training:
        mean = _channel_sum(xd) / dtype.type(count)
        xhat = xd - mean.reshape(shape)
        var = _channel_sum(xhat * xhat) / dtype.type(count)
    else:
        mean = np.asarray(running_mean, dtype=dtype)
        var = np.asarray(running_var, dtype=dtype)
        xhat = xd - mean.reshape(shape)
    inv_std = (1 / np.sqrt(var + dtype.type(eps))).astype(dtype, copy=False)
    xhat *= inv_std.reshape(shape)                  # in place: xhat is ours
    gamma = weight.data.astype(dtype, copy=False)
    out = xhat * gamma.reshape(shape)
    out += bias.data.astype(dtype, copy=False).reshape(shape)

    def backward(g):
        g = g.astype(dtype, copy=False)
        grad_beta = _channel_sum(g)
        grad_gamma = _channel_sum(g * xhat)
        grad_x = None
        if x.requires_grad:
            scale = (gamma * inv_std).reshape(shape)
            if training:
                grad_x = g - (grad_beta / dtype.type(count)).reshape(shape)
                grad_x -= xhat * (grad_gamma / dtype.type(count)).reshape(shape)
                grad_x *= scale
            else:
                grad_x = g * scale
        return grad_x, grad_gamma, grad_beta
    out = from_op(out, (x, weight, bias), backward)
    return (out, mean, var) if training else (out, None, None)


def fold_batch_norm(weight, bias, bn):
    """(weight, bias) of one convolution equal to a convolution (weight, bias or None)
    followed by `bn` in eval mode: w * gamma/std per filter, beta + (b - mean) * gamma/std.

    Tensor operations, so gradients still reach both layers' parameters; the cost is
    a multiply over the weights instead of a pass over every activation."""
    dtype = weight.dtype
    inv_std = 1 / np.sqrt(np.asarray(bn.running_var, dtype=dtype) + dtype.type(bn.eps))
    scale = bn.weight * Tensor(inv_std.astype(dtype, copy=False))
    offset = Tensor(-np.asarray(bn.running_mean, dtype=dtype))
    if bias is not None:
        offset = offset + bias
    return weight * scale.reshape(-1, 1, 1, 1), bn.bias + offset * scale


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
    out = x.data - x.data.max(axis=axis, keepdims=True)
    np.exp(out, out=out)
    out /= out.sum(axis=axis, keepdims=True)

    def backward(g):
        grad = g * out
        grad -= out * grad.sum(axis=axis, keepdims=True)
        return (grad,)
    return from_op(out, (x,), backward)


def log_softmax(x, axis=-1):
    """x - logsumexp(x) along `axis`, computed stably."""
    x = Tensor.ensure(x)
    shifted = x.data - x.data.max(axis=axis, keepdims=True)
    out = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))

    def backward(g):
        return (g - np.exp(out) * g.sum(axis=axis, keepdims=True),)
    return from_op(out, (x,), backward)


def cross_entropy(logits, targets):
    """mean over rows of -log softmax(logits)[row, target], as one operation.

    logits (N, C), targets (N,) int. Backward is (softmax - onehot(target)) / N:
    the softmax is the exponentials the forward already computed."""
    logits = Tensor.ensure(logits)
    z = logits.data
    rows = np.arange(len(targets))
    e = z - z.max(axis=1, keepdims=True)
    picked = e[rows, targets]
    np.exp(e, out=e)
    total = e.sum(axis=1)
    loss = (np.log(total) - picked).mean(dtype=z.dtype).reshape(())

    def backward(g):
        grad = e / total[:, None]
        grad[rows, targets] -= 1
        grad *= g / z.dtype.type(len(rows))
        return (grad,)
    return from_op(loss, (logits,), backward)


def dropout(x, p, training=True):
    """Zero each element with probability p, scale the rest by 1/(1-p) (inverted dropout)."""
    x = Tensor.ensure(x)
    if not training or p == 0:
        return x
    keep = (generator().random(x.shape) >= p).astype(x.dtype) / (1 - p)
    return x * Tensor(keep)


#: GELU's tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
_GELU_C, _GELU_A = float(np.sqrt(2 / np.pi)), 0.044715


def gelu(x):
    """GELU, tanh approximation (PyTorch's GELU(approximate='tanh')), as one operation.

    d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2), t the tanh."""
    x = Tensor.ensure(x)
    d = x.data if x.dtype.kind == "f" else x.data.astype(np.float32)
    x2 = d * d
    t = x2 * _GELU_A
    t += 1
    t *= d
    t *= _GELU_C
    np.tanh(t, out=t)                 # t = tanh(c (x + a x^3))
    out = t + 1
    out *= d
    out *= 0.5

    def backward(g):
        slope = x2 * (3 * _GELU_A)    # c (1 + 3 a x^2) (1 - t^2) * 0.5 x ...
        slope += 1
        slope *= _GELU_C
        slope *= 1 - t * t
        slope *= d
        slope += t
        slope += 1                    # ... + (1 + t), all times 0.5
        slope *= 0.5
        slope *= g
        return (slope,)
    return from_op(out, (x,), backward)
