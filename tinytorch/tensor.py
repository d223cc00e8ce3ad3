"""Tensor: a numpy array plus reverse-mode automatic differentiation.

`.data` is the numpy array (float32 unless you hand in another float or an
integer array). Every operation records how to send gradients back to its
inputs; `loss.backward()` walks that graph once, in reverse topological order,
and leaves `.grad` on the leaves that `requires_grad`. Every matmul, forward
and backward, calls `get_backend()` at the moment it runs, so switching
backends changes speed, never results beyond float tolerance.
"""
from __future__ import annotations

import contextlib
import numbers
import sys

import numpy as np

from .config import get_backend

_grad_enabled = True


@contextlib.contextmanager
def no_grad():
    """Inside the block no graph is recorded (inference, optimizer updates)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def _as_array(data, dtype=None):
    """numpy float and integer arrays keep their dtype; Python numbers and lists become float32."""
    if isinstance(data, Tensor):
        data = data.data
    if dtype is not None:
        return np.asarray(data, dtype=dtype)
    if isinstance(data, (np.ndarray, np.generic)) and data.dtype.kind in "fiub":
        return np.asarray(data)
    array = np.asarray(data)
    if array.dtype.kind not in "fiub":
        raise TypeError(f"Tensor needs numeric data, got {array.dtype} ({type(data).__name__})")
    return array.astype(np.float32)


def unbroadcast(grad, shape):
    """Sum `grad` down to `shape`, undoing numpy broadcasting (one reduction, not one per axis)."""
    if grad.shape == shape:          # the common case: nothing was broadcast
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(extra + i for i, size in enumerate(shape)
                                       if size == 1 and grad.shape[extra + i] != 1)
    return grad.sum(axis=axes).reshape(shape) if axes else grad.reshape(shape)


def from_op(data, parents, backward):
    """The result of an operation: records `backward(grad) -> grads per parent` when needed.

    For authors of operations (this module, `nn.functional`): `backward`
    receives the gradient of the output as a numpy array and returns one
    numpy gradient (or None) per parent, in order. A backward that needs
    nothing for a parent with requires_grad False may return None for it.

    Every operation of a training step ends here, so it is written for speed:
    operations hand over numpy arrays, which need none of the conversions
    Tensor() applies to user data, and a plain loop beats any() on a tuple.
    """
    out = Tensor.__new__(Tensor)
    out.data = data if type(data) is np.ndarray else _as_array(data)
    out.grad = None
    out._parents = ()
    out._backward = None
    out.requires_grad = False
    if _grad_enabled:
        for parent in parents:
            if parent.requires_grad:
                out.requires_grad = True
                out._parents = parents
                out._backward = backward
                break
    return out


def _power(x, exponent):
    """x ** exponent; small whole powers as products (numpy's pow() is ~5x slower)."""
    if exponent == 1:
        return x.copy()
    if exponent == 2:
        return x * x
    if exponent == 3:
        return x * x * x
    return x ** exponent


def _one_name_refcount():
    array = np.empty(1)             # held by one local name only, as `grad` in backward()
    return sys.getrefcount(array)


#: What sys.getrefcount reports for an array held by one local name (2 in CPython 3.11:
#: the name and getrefcount's own argument), measured rather than assumed.
_ONE_NAME = _one_name_refcount()


def _operand(value, like):
    """The other side of a binary operator, as a Tensor (Python numbers take like's dtype)."""
    return value if isinstance(value, Tensor) else Tensor.ensure(value, like=like)


class Tensor:
    """An n-dimensional array that can record gradients."""

    # ndarray (op) Tensor must reach Tensor's reflected operator, not numpy's.
    __array_ufunc__ = None

    def __init__(self, data, requires_grad=False, dtype=None):
        self.data = _as_array(data, dtype)
        self.grad = None
        self._parents = ()
        self._backward = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_()

    @classmethod
    def ensure(cls, value, like=None):
        """`value` as a Tensor; a Python number takes the float dtype of `like`."""
        if isinstance(value, Tensor):
            return value
        if like is not None and isinstance(value, numbers.Number) and like.dtype.kind == "f":
            return cls(np.asarray(value, dtype=like.dtype))
        return cls(value)

    def requires_grad_(self, flag=True):
        if flag and self.data.dtype.kind != "f":
            raise TypeError(f"only float tensors can require gradients, this one is "
                            f"{self.data.dtype}")
        self.requires_grad = bool(flag)
        return self

    # ------------------------------------------------------------ basics
    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    size = property(lambda self: self.data.size)

    def __len__(self):
        return len(self.data)

    def __array__(self, dtype=None, copy=None):
        return self.data if dtype is None else self.data.astype(dtype)

    def numpy(self):
        return self.data

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, this one has shape "
                             f"{self.shape}")
        return self.data.item()

    def detach(self):
        """The same numbers, cut off from the graph."""
        return Tensor(self.data)

    def __repr__(self):
        body = np.array2string(self.data, separator=", ", prefix="Tensor(", precision=4)
        extras = "" if self.dtype == np.float32 else f", dtype={self.dtype}"
        if self.requires_grad:
            extras += ", requires_grad=True"
        return f"Tensor({body}{extras})"

    # ------------------------------------------------------------ autograd
    def backward(self, gradient=None):
        """Accumulate d(self)/d(leaf) into `.grad` of every leaf that requires grad."""
        if not self.requires_grad:
            raise RuntimeError("backward(): this tensor does not require grad (no input that "
                               "it was computed from has requires_grad=True)")
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a scalar, this tensor "
                                   f"has shape {self.shape}; reduce it (e.g. .sum()) or pass "
                                   f"backward(gradient) of the same shape")
            gradient = np.ones_like(self.data)
        gradient = _as_array(gradient, self.dtype)
        if gradient.shape != self.shape:
            raise ValueError(f"backward(): gradient has shape {gradient.shape}, the tensor "
                             f"has shape {self.shape}")
        order, seen = [], set()
        stack = [(self, False)]
        while stack:                      # iterative DFS: deep graphs cannot hit recursion limits
            node, done = stack.pop()
            if done:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((p, False) for p in node._parents if p.requires_grad)
        grads = {id(self): gradient}
        for node in reversed(order):
            grad = grads.pop(id(node), None)
            if grad is None:
                continue
            if node._backward is None:    # a leaf
                grad = grad.astype(node.dtype, copy=False)
                if node.grad is None:
                    # A weight's gradient is nearly always a fresh backend result, and
                    # copying it cost up to a tenth of a small MLP's training step. Copy
                    # only an array someone else may hold: the gradient of another input
                    # too (x + y hands g to both), the user's backward(gradient), a view
                    # of either -- getrefcount counts every holder -- or a read-only one.
                    shared = sys.getrefcount(grad) > _ONE_NAME or not grad.flags.owndata \
                        or not grad.flags.writeable
                    node.grad = Tensor(grad.copy() if shared else grad)
                else:
                    node.grad.data = node.grad.data + grad
                continue
            for parent, pgrad in zip(node._parents, node._backward(grad)):
                if pgrad is None or not parent.requires_grad:
                    continue
                key = id(parent)
                grads[key] = pgrad if key not in grads else grads[key] + pgrad

    # ------------------------------------------------------------ elementwise arithmetic
    # Each backward computes only the gradients some parent needs: a product's
    # gradient for a constant side is a full-size multiply wasted.
    def __add__(self, other):
        other = _operand(other, self)
        a_shape, b_shape = self.data.shape, other.data.shape
        return from_op(self.data + other.data, (self, other),
                       lambda g: (unbroadcast(g, a_shape), unbroadcast(g, b_shape)))

    def __sub__(self, other):
        other = _operand(other, self)
        a_shape, b_shape = self.data.shape, other.data.shape
        return from_op(self.data - other.data, (self, other),
                       lambda g: (unbroadcast(g, a_shape),
                                  unbroadcast(-g, b_shape) if other.requires_grad else None))

    def __mul__(self, other):
        other = _operand(other, self)
        a, b = self.data, other.data

        def backward(g):
            return (unbroadcast(g * b, a.shape) if self.requires_grad else None,
                    unbroadcast(g * a, b.shape) if other.requires_grad else None)
        return from_op(a * b, (self, other), backward)

    def __truediv__(self, other):
        other = _operand(other, self)
        a, b = self.data, other.data
        out = a / b

        def backward(g):
            return (unbroadcast(g / b, a.shape) if self.requires_grad else None,
                    unbroadcast(-g * out / b, b.shape) if other.requires_grad else None)
        return from_op(out, (self, other), backward)

    def __radd__(self, other):
        return Tensor.ensure(other, like=self) + self

    def __rsub__(self, other):
        return Tensor.ensure(other, like=self) - self

    def __rmul__(self, other):
        return Tensor.ensure(other, like=self) * self

    def __rtruediv__(self, other):
        return Tensor.ensure(other, like=self) / self

    def __neg__(self):
        return from_op(-self.data, (self,), lambda g: (-g,))

    def __pow__(self, exponent):
        if not isinstance(exponent, numbers.Number):
            raise TypeError(f"Tensor ** takes a Python number exponent, got "
                            f"{type(exponent).__name__}")
        x = self.data
        return from_op(_power(x, exponent), (self,),
                       lambda g: (g * exponent * _power(x, exponent - 1),))

    def maximum(self, other):
        """Elementwise max; ties send the gradient to `self`."""
        other = _operand(other, self)
        a, b = self.data, other.data
        return from_op(np.maximum(a, b), (self, other), lambda g: (
            unbroadcast(g * (a >= b), a.shape), unbroadcast(g * (a < b), b.shape)))

    # comparisons give plain (non-differentiable) boolean tensors
    def __gt__(self, other):
        return Tensor(self.data > _as_array(other))

    def __lt__(self, other):
        return Tensor(self.data < _as_array(other))

    def __ge__(self, other):
        return Tensor(self.data >= _as_array(other))

    def __le__(self, other):
        return Tensor(self.data <= _as_array(other))

    __hash__ = object.__hash__

    # ------------------------------------------------------------ elementwise functions
    def exp(self):
        out = np.exp(self.data)
        return from_op(out, (self,), lambda g: (g * out,))

    def log(self):
        x = self.data
        return from_op(np.log(x), (self,), lambda g: (g / x,))

    def sqrt(self):
        out = np.sqrt(self.data)
        return from_op(out, (self,), lambda g: (g / (2 * out),))

    def tanh(self):
        out = np.tanh(self.data)
        return from_op(out, (self,), lambda g: (g * (1 - out * out),))

    def sigmoid(self):
        x = self.data
        # exp of a non-positive number only: no overflow for large |x|
        e = np.exp(-np.abs(x))
        out = np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)
        return from_op(out, (self,), lambda g: (g * out * (1 - out),))

    def relu(self):
        # max(x, 0) is one pass; the mask is only needed (and built) for backward
        out = np.maximum(self.data, 0)
        return from_op(out, (self,), lambda g: (g * (out > 0),))

    def abs(self):
        x = self.data
        return from_op(np.abs(x), (self,), lambda g: (g * np.sign(x),))

    # ------------------------------------------------------------ reductions
    def sum(self, axis=None, keepdims=False):
        shape = self.shape
        out = self.data.sum(axis=axis, keepdims=keepdims)

        def backward(g):
            if axis is not None and not keepdims:
                g = np.expand_dims(g, axis)
            return (np.broadcast_to(g, shape).copy(),)
        return from_op(out, (self,), backward)

    def mean(self, axis=None, keepdims=False):
        axes = range(self.ndim) if axis is None else (axis,) if isinstance(axis, int) else axis
        count = int(np.prod([self.shape[a] for a in axes]))
        return self.sum(axis=axis, keepdims=keepdims) * (1.0 / count)

    def var(self, axis=None, keepdims=False):
        """Biased variance (divides by the count), as batch norm and layer norm use it."""
        centred = self - self.mean(axis=axis, keepdims=True)
        return (centred * centred).mean(axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        """Maximum; the gradient is shared equally between tied maxima."""
        x = self.data
        top = x.max(axis=axis, keepdims=True)
        mask = x == top
        share = (mask / mask.sum(axis=axis, keepdims=True)).astype(x.dtype, copy=False)
        result = top if keepdims else x.max(axis=axis)
        return from_op(result, (self,), lambda g: (g.reshape(top.shape) * share,))

    def argmax(self, axis=None):
        return Tensor(self.data.argmax(axis=axis))

    # ------------------------------------------------------------ shape
    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        old = self.shape
        try:
            out = self.data.reshape(shape)
        except ValueError:
            raise ValueError(f"cannot reshape a tensor of shape {old} ({self.size} elements) "
                             f"into {shape}") from None
        return from_op(out, (self,), lambda g: (g.reshape(old),))

    view = reshape

    def flatten(self, start_axis=0):
        return self.reshape(self.shape[:start_axis] + (-1,))

    def permute(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        inverse = np.argsort(axes)
        return from_op(self.data.transpose(axes), (self,), lambda g: (g.transpose(inverse),))

    def transpose(self, axis0=-2, axis1=-1):
        """Swap two axes (the last two by default)."""
        axes = list(range(self.ndim))
        axes[axis0], axes[axis1] = axes[axis1], axes[axis0]
        return self.permute(axes)

    @property
    def T(self):
        return self.permute(tuple(reversed(range(self.ndim))))

    def __getitem__(self, index):
        if isinstance(index, Tensor):
            index = index.data
        elif isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        shape, dtype = self.shape, self.dtype

        def backward(g):
            grad = np.zeros(shape, dtype=dtype)
            np.add.at(grad, index, g)      # repeated indices add up (embeddings)
            return (grad,)
        return from_op(self.data[index], (self,), backward)

    # ------------------------------------------------------------ matrix products
    def matmul(self, other):
        """numpy-style matmul: 2-D on `backend.matmul`, stacked on `backend.batched_matmul`."""
        a, b = self, Tensor.ensure(other)
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError(f"matmul needs tensors with at least 1 dimension, got shapes "
                             f"{a.shape} and {b.shape}")
        if a.ndim == 1 or b.ndim == 1:    # numpy's rule: a vector gains an axis, then loses it
            out = (a.reshape(1, -1) if a.ndim == 1 else a).matmul(
                b.reshape(-1, 1) if b.ndim == 1 else b)
            shape = list(out.shape)
            if b.ndim == 1:
                shape.pop()                               # the column b gained
            if a.ndim == 1:
                shape.pop(-1 if b.ndim == 1 else -2)      # the row a gained
            return out.reshape(tuple(shape))
        if a.shape[-1] != b.shape[-2]:
            raise ValueError(f"matmul: inner dimensions differ: {a.shape} @ {b.shape}")
        dtype = np.result_type(a.dtype, b.dtype)
        dtype = dtype if dtype.kind == "f" else np.dtype(np.float32)
        if b.ndim == 2:
            return _matmul_2d(a, b, dtype)
        return _matmul_batched(a, b, dtype)

    __matmul__ = matmul

    def __rmatmul__(self, other):
        return Tensor.ensure(other).matmul(self)


def transposed_copy(a):
    """a.T as a C-contiguous array: the contract hands backends C-contiguous inputs, so a
    backward pass that needs A^T @ B makes the copy itself, as fast as numpy allows.

    numpy's transposing copy reads `a` a column at a time. When the rows of `a` are
    a multiple of 1 KiB apart, those reads fall into the same few sets of the L1
    cache and evict each other: 550 us for a float32 64 x 3072 array here, 30 times
    a plain copy. Copying `a` first into rows a little longer (a fast, contiguous
    copy) spreads the column over all the sets: 85 us, and 62 -> 27 us at 256 x 256.
    """
    m, n = a.shape
    if n * a.itemsize < 1024 or m * n < 4096:
        return np.ascontiguousarray(a.T)
    spread = np.empty((m, n + 64 // a.itemsize), dtype=a.dtype)
    spread[:, :n] = a
    return np.ascontiguousarray(spread[:, :n].T)


def _matmul_2d(a, b, dtype):
    """(..., K) @ (K, N): the leading axes fold into rows of one backend matmul."""
    k, n = b.shape
    a2 = a.data.reshape(-1, k).astype(dtype, copy=False)
    b2 = b.data.astype(dtype, copy=False)
    out = get_backend().matmul(a2, b2).reshape(a.shape[:-1] + (n,))

    def backward(g):
        backend = get_backend()
        g2 = g.reshape(-1, n)
        grad_a = backend.matmul(g2, transposed_copy(b2)).reshape(a.shape) \
            if a.requires_grad else None
        grad_b = backend.matmul(transposed_copy(a2), g2) if b.requires_grad else None
        return grad_a, grad_b
    return from_op(out, (a, b), backward)


def _matmul_batched(a, b, dtype):
    """(..., M, K) @ (..., K, N) with broadcast batch axes: one backend batched_matmul."""
    (m, k), n = a.shape[-2:], b.shape[-1]
    try:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: batch dimensions do not broadcast: {a.shape} @ "
                         f"{b.shape}") from None
    a3 = np.broadcast_to(a.data, batch + (m, k)).reshape(-1, m, k).astype(dtype, copy=False)
    b3 = np.broadcast_to(b.data, batch + (k, n)).reshape(-1, k, n).astype(dtype, copy=False)
    out = get_backend().batched_matmul(a3, b3).reshape(batch + (m, n))

    def backward(g):
        backend = get_backend()
        g3 = g.reshape(-1, m, n)
        grad_a = grad_b = None
        if a.requires_grad:
            grad_a = unbroadcast(backend.batched_matmul(g3, b3.transpose(0, 2, 1))
                                 .reshape(batch + (m, k)), a.shape)
        if b.requires_grad:
            grad_b = unbroadcast(backend.batched_matmul(a3.transpose(0, 2, 1), g3)
                                 .reshape(batch + (k, n)), b.shape)
        return grad_a, grad_b
    return from_op(out, (a, b), backward)


def cat(tensors, axis=0):
    """Join tensors along an existing axis."""
    tensors = [Tensor.ensure(t) for t in tensors]
    sizes = np.cumsum([t.shape[axis] for t in tensors])[:-1]
    out = np.concatenate([t.data for t in tensors], axis=axis)
    return from_op(out, tuple(tensors), lambda g: tuple(np.split(g, sizes, axis=axis)))


def stack(tensors, axis=0):
    """Join tensors along a new axis."""
    tensors = [Tensor.ensure(t) for t in tensors]
    return cat([t.reshape(np.expand_dims(t.data, axis).shape) for t in tensors], axis=axis)
