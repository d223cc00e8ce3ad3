"""The backend contract: what every backend implements, and the checks around it.

| operation | shapes | required |
|---|---|---|
| `matmul(a, b)` | (M,K) @ (K,N) -> (M,N) | yes |
| `conv2d(x, w, stride, padding)` | (N,C,H,W), (F,C,KH,KW) -> (N,F,OH,OW) | yes |
| `batched_matmul(a, b)` | (B,M,K) @ (B,K,N) -> (B,M,N) | default: loop of matmul |
| `conv2d_grad_input(grad_out, w, x_shape, stride, padding)` | -> (N,C,H,W) | default: matmul |
| `conv2d_grad_weight(x, grad_out, w_shape, stride, padding)` | -> (F,C,KH,KW) | default: matmul |

conv2d is cross-correlation (as in PyTorch) with a symmetric integer stride >= 1
and zero padding >= 0. The framework always calls operations positionally.

Validation belongs to the contract, not to a caller: every operation a subclass
defines is wrapped when the class is created, so `get_backend().matmul(...)`,
`tinytorch.matmul(...)` and `NaiveBackend().matmul(...)` are equally safe, and a
kernel compiled with `boundscheck=False` only ever sees valid, C-contiguous,
same-dtype float arrays.
"""
from __future__ import annotations

import functools
import inspect
import numbers
from abc import ABCMeta, abstractmethod

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: Every operation of the contract; the first two are required.
OPERATIONS = ("matmul", "conv2d", "batched_matmul", "conv2d_grad_input", "conv2d_grad_weight")
REQUIRED_OPERATIONS = OPERATIONS[:2]


class BackendError(RuntimeError):
    """A backend returned something the contract does not allow."""


def backend_name(backend) -> str:
    """The registered name if the registry gave one, else the class name."""
    return getattr(backend, "name", None) or type(backend).__name__


# ---------------------------------------------------------------- input checks

def _as_float_arrays(op, first, second):
    """Both float32 or both float64, C-contiguous; anything else is a TypeError.

    On every kernel call, so written as plain statements (a comprehension or
    generator costs more than the checks themselves); no copy unless needed.
    """
    if type(first) is not np.ndarray:
        first = np.asarray(first)
    if type(second) is not np.ndarray:
        second = np.asarray(second)
    if first.dtype not in FLOAT_DTYPES or second.dtype != first.dtype:
        raise TypeError(
            f"{op}: inputs must be both float32 or both float64, got {first.dtype}, "
            f"{second.dtype}; convert first, e.g. x.astype(np.float32)")
    if not first.flags.c_contiguous:
        first = np.ascontiguousarray(first)
    if not second.flags.c_contiguous:
        second = np.ascontiguousarray(second)
    return first, second


def _check_ndim(op, what, array, ndim, layout):
    if array.ndim != ndim:
        raise ValueError(f"{op}: {what} must be {ndim}-D {layout}, got shape {array.shape}")


def _check_conv_params(op, stride, padding):
    if isinstance(stride, bool) or not isinstance(stride, numbers.Integral) or stride < 1:
        raise ValueError(f"{op}: stride must be an integer >= 1, got {stride!r}")
    if isinstance(padding, bool) or not isinstance(padding, numbers.Integral) or padding < 0:
        raise ValueError(f"{op}: padding must be an integer >= 0, got {padding!r}")
    return int(stride), int(padding)


def _check_shape_tuple(op, what, shape):
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(f"{op}: {what} must be a 4-tuple of ints, got {shape!r}") from None
    if len(shape) != 4 or min(shape) < 0:
        raise ValueError(f"{op}: {what} must be 4 non-negative ints, got {shape!r}")
    return shape


def conv_output_shape(x_shape, w_shape, stride, padding, op="conv2d"):
    """(N, F, OH, OW) of a convolution, or a ValueError naming both shapes."""
    n, c, h, w = x_shape
    f, cw, kh, kw = w_shape
    if c != cw:
        raise ValueError(f"{op}: input has {c} channels but weight expects {cw}: "
                         f"x {tuple(x_shape)}, w {tuple(w_shape)} (layouts NCHW, FCKHKW)")
    if kh > h + 2 * padding or kw > w + 2 * padding:
        raise ValueError(f"{op}: kernel {kh}x{kw} is larger than the padded input "
                         f"{h + 2 * padding}x{w + 2 * padding}: x {tuple(x_shape)}, "
                         f"w {tuple(w_shape)}, padding {padding}")
    return (n, f, (h + 2 * padding - kh) // stride + 1, (w + 2 * padding - kw) // stride + 1)


def _validate_matmul(a, b):
    a, b = _as_float_arrays("matmul", a, b)
    _check_ndim("matmul", "a", a, 2, "(M, K)")
    _check_ndim("matmul", "b", b, 2, "(K, N)")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul: inner dimensions differ: a {a.shape} @ b {b.shape}")
    return (a, b), (a.shape[0], b.shape[1])


def _validate_batched_matmul(a, b):
    a, b = _as_float_arrays("batched_matmul", a, b)
    _check_ndim("batched_matmul", "a", a, 3, "(B, M, K)")
    _check_ndim("batched_matmul", "b", b, 3, "(B, K, N)")
    if a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
        raise ValueError(f"batched_matmul: shapes do not match: a {a.shape} @ b {b.shape} "
                         f"(need (B, M, K) @ (B, K, N))")
    return (a, b), (a.shape[0], a.shape[1], b.shape[2])


def _validate_conv2d(x, w, stride=1, padding=0):
    stride, padding = _check_conv_params("conv2d", stride, padding)
    x, w = _as_float_arrays("conv2d", x, w)
    _check_ndim("conv2d", "x", x, 4, "(N, C, H, W)")
    _check_ndim("conv2d", "w", w, 4, "(F, C, KH, KW)")
    return (x, w, stride, padding), conv_output_shape(x.shape, w.shape, stride, padding)


def _validate_conv2d_grad_input(grad_out, w, x_shape, stride=1, padding=0):
    op = "conv2d_grad_input"
    stride, padding = _check_conv_params(op, stride, padding)
    grad_out, w = _as_float_arrays(op, grad_out, w)
    _check_ndim(op, "w", w, 4, "(F, C, KH, KW)")
    x_shape = _check_shape_tuple(op, "x_shape", x_shape)
    expected = conv_output_shape(x_shape, w.shape, stride, padding, op)
    if grad_out.shape != expected:
        raise ValueError(f"{op}: grad_out has shape {grad_out.shape}, but x {x_shape} and "
                         f"w {w.shape} give outputs of shape {expected}")
    return (grad_out, w, x_shape, stride, padding), x_shape


def _validate_conv2d_grad_weight(x, grad_out, w_shape, stride=1, padding=0):
    op = "conv2d_grad_weight"
    stride, padding = _check_conv_params(op, stride, padding)
    x, grad_out = _as_float_arrays(op, x, grad_out)
    _check_ndim(op, "x", x, 4, "(N, C, H, W)")
    w_shape = _check_shape_tuple(op, "w_shape", w_shape)
    expected = conv_output_shape(x.shape, w_shape, stride, padding, op)
    if grad_out.shape != expected:
        raise ValueError(f"{op}: grad_out has shape {grad_out.shape}, but x {x.shape} and "
                         f"w {w_shape} give outputs of shape {expected}")
    return (x, grad_out, w_shape, stride, padding), w_shape


_VALIDATORS = {
    "matmul": _validate_matmul,
    "conv2d": _validate_conv2d,
    "batched_matmul": _validate_batched_matmul,
    "conv2d_grad_input": _validate_conv2d_grad_input,
    "conv2d_grad_weight": _validate_conv2d_grad_weight,
}


# ---------------------------------------------------------------- output check

def _check_output(backend, op, out, shape, first, second):
    """Accept the kernel's result or raise BackendError naming the backend."""
    if not isinstance(out, np.ndarray):
        raise BackendError(f"backend {backend_name(backend)!r}: {op} returned "
                           f"{type(out).__name__}, expected a numpy array of shape {shape}")
    if out.shape != shape:
        raise BackendError(f"backend {backend_name(backend)!r}: {op} returned shape "
                           f"{out.shape}, expected {shape}")
    if out is first or out is second or np.may_share_memory(out, first) \
            or np.may_share_memory(out, second):
        raise BackendError(f"backend {backend_name(backend)!r}: {op} returned an array "
                           f"that shares memory with one of its inputs; return a new array")
    dtype = first.dtype
    if out.dtype != dtype:
        # The course's own naive code accumulates into np.zeros(...) (float64)
        # for float32 inputs: a wider float is cast back, anything else is wrong.
        if dtype == np.float32 and out.dtype == np.float64:
            # Remembered for `tinytorch check`, which tells the student the cast costs a copy.
            backend.__dict__.setdefault("float64_results", set()).add(op)
            return out.astype(np.float32)
        raise BackendError(f"backend {backend_name(backend)!r}: {op} returned dtype "
                           f"{out.dtype} for {dtype} inputs")
    return out


def _checked(op, raw):
    """Wrap one operation with its validation; applied once per class attribute."""
    validate = _VALIDATORS[op]
    signature = None        # read on the first keyword call: not every callable has one

    @functools.wraps(raw)
    def operation(self, *args, **kwargs):
        nonlocal signature
        if kwargs:
            signature = signature or inspect.signature(raw)
            # Keywords use the backend's own parameter names (the course's are
            # `input` and `kernel`); the checks and the kernel take positions.
            try:
                bound = signature.bind(self, *args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{backend_name(self)}.{op}{signature}: {exc}") from None
            bound.apply_defaults()
            args = bound.args[1:]
        args, shape = validate(*args)
        first, second = args[0], args[1]      # every operation's two arrays come first
        if 0 in shape or not first.size or not second.size:
            # Empty sums are zero; no kernel needs to handle size 0.
            return np.zeros(shape, dtype=first.dtype)
        return _check_output(self, op, raw(self, *args), shape, first, second)

    operation.__tinytorch_unchecked__ = raw
    return operation


def _wrap_operations(cls):
    """Wrap the operations a class body defines (the metaclass wraps them on assignment)."""
    for op in OPERATIONS:
        if op in cls.__dict__:
            setattr(cls, op, cls.__dict__[op])


def implemented_operations(cls) -> list[str]:
    """The contract operations `cls` (or a parent other than ComputeBackend) defines."""
    return [op for op in OPERATIONS
            if any(op in klass.__dict__ for klass in cls.__mro__
                   if klass is not ComputeBackend and issubclass(klass, ComputeBackend))]


# ---------------------------------------------------------------- the contract

class _ContractMeta(ABCMeta):
    """Keeps every operation validated, however it reaches the class.

    An operation assigned after the class exists (`MyBackend.matmul = f`, a
    notebook habit) is wrapped like one defined in the class body; a virtual
    subclass (`ComputeBackend.register(C)`) is refused, since C's methods
    would pass `isinstance` checks without ever being wrapped.
    """

    def __setattr__(cls, attr, value):
        if attr in OPERATIONS and callable(value) and not hasattr(value, "__tinytorch_unchecked__") \
                and not getattr(value, "__isabstractmethod__", False):
            value = _checked(attr, value)
        super().__setattr__(attr, value)

    def register(cls, subclass):
        raise TypeError(f"{cls.__name__}.register({getattr(subclass, '__name__', subclass)}) "
                        f"would skip the contract's input checks; subclass {cls.__name__} instead")


class ComputeBackend(metaclass=_ContractMeta):
    """Base class of every backend: implement `matmul` and `conv2d`, optionally more.

    Inputs reaching your methods are already validated: C-contiguous numpy
    arrays, both float32 or both float64, shapes compatible, stride >= 1,
    padding >= 0, no zero-size dimension. Return a new array of the
    documented shape and the input dtype.
    """

    #: Set by the registry to the name the backend was loaded under.
    name: str | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _wrap_operations(cls)

    def __repr__(self):
        return f"<{type(self).__name__} backend {backend_name(self)!r}>"

    @abstractmethod
    def matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(M, K) @ (K, N) -> (M, N)."""

    @abstractmethod
    def conv2d(self, x: np.ndarray, w: np.ndarray, stride: int = 1, padding: int = 0) -> np.ndarray:
        """Cross-correlation: (N, C, H, W) with (F, C, KH, KW) -> (N, F, OH, OW)."""

    def batched_matmul(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """(B, M, K) @ (B, K, N) -> (B, M, N), one `matmul` per batch entry."""
        return np.stack([self.matmul(a[i], b[i]) for i in range(a.shape[0])])

    def conv2d_grad_input(self, grad_out, w, x_shape, stride=1, padding=0):
        """dL/dx: one matmul W^T @ dY per image, scattered back by col2im."""
        n, c, h, wd = x_shape
        f, _, kh, kw = w.shape
        w_t = np.ascontiguousarray(w.reshape(f, -1).T)            # (C*KH*KW, F)
        grad_x = np.empty(x_shape, dtype=grad_out.dtype)
        for i in range(n):
            cols = self.matmul(w_t, grad_out[i].reshape(f, -1))  # (C*KH*KW, OH*OW)
            grad_x[i] = col2im(cols, (c, h, wd), kh, kw, stride, padding)
        return grad_x

    def conv2d_grad_weight(self, x, grad_out, w_shape, stride=1, padding=0):
        """dL/dw: sum over images of dY @ im2col(x)^T, one matmul per image."""
        f, c, kh, kw = w_shape
        grad_w = np.zeros((f, c * kh * kw), dtype=x.dtype)
        for i in range(x.shape[0]):
            cols_t = np.ascontiguousarray(im2col(x[i], kh, kw, stride, padding).T)
            grad_w += self.matmul(np.ascontiguousarray(grad_out[i].reshape(f, -1)), cols_t)
        return grad_w.reshape(w_shape)


_wrap_operations(ComputeBackend)


# ---------------------------------------------------------------- im2col helpers

def im2col(image, kh, kw, stride, padding):
    """(C, H, W) -> (C*KH*KW, OH*OW): each column is one receptive field."""
    if padding:
        image = np.pad(image, ((0, 0), (padding, padding), (padding, padding)))
    c = image.shape[0]
    windows = np.lib.stride_tricks.sliding_window_view(image, (kh, kw), axis=(1, 2))
    windows = windows[:, ::stride, ::stride]                   # (C, OH, OW, KH, KW)
    return np.ascontiguousarray(windows.transpose(0, 3, 4, 1, 2)).reshape(c * kh * kw, -1)


def col2im(cols, image_shape, kh, kw, stride, padding):
    """Inverse scatter of im2col: overlapping receptive fields add up."""
    c, h, w = image_shape
    oh = (h + 2 * padding - kh) // stride + 1
    ow = (w + 2 * padding - kw) // stride + 1
    padded = np.zeros((c, h + 2 * padding, w + 2 * padding), dtype=cols.dtype)
    cols = cols.reshape(c, kh, kw, oh, ow)
    for i in range(kh):
        for j in range(kw):
            padded[:, i:i + stride * oh:stride, j:j + stride * ow:stride] += cols[:, i, j]
    return padded[:, padding:padding + h, padding:padding + w]
