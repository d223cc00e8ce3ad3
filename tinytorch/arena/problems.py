"""What each kernel event computes: inputs, float64 references, cheap checks, FLOPs.

The parent uses everything here except `call`, which is the one line the
worker runs. `check` compares with a full float64 reference (before timing
and after it, on freshly drawn inputs); `spot_check` verifies every timed
output cheaply: a Freivalds projection for matmul, sampled entries for the
convolutions. Both return the relative Frobenius error ||out - ref|| / ||ref||
(taken over all outputs, or over the sampled entries or projection), so an
all-zero or constant output fails any tolerance below 1.
"""
from __future__ import annotations

import threading

import numpy as np

from ..backends.base import conv_output_shape

SAMPLES = 64   # entries a convolution's spot check recomputes


def relative_error(outputs, references) -> float:
    """||out - ref|| / ||ref|| over all outputs together; inf for NaN/Inf or wrong shapes."""
    diff = ref = 0.0
    for out, r in zip(outputs, references):
        out = np.asarray(out, dtype=np.float64)
        if out.shape != r.shape or not np.all(np.isfinite(out)):
            return float("inf")
        diff += float(np.sum((out - r) ** 2))
        ref += float(np.sum(r ** 2))
    return float(np.sqrt(diff / ref)) if ref > 0 else float(np.sqrt(diff))


def has_nonfinite(outputs) -> bool:
    return any(not np.all(np.isfinite(o)) for o in outputs)


class Problem:
    """One event kind; subclasses fill in the arithmetic."""
    kind: str
    keys: tuple[str, ...]        # parameters a shape in events.toml must give
    input_count: int

    def label(self, p) -> str:
        raise NotImplementedError

    def flops(self, p) -> float:
        raise NotImplementedError

    def output_shapes(self, p) -> list[tuple]:
        raise NotImplementedError

    def make_inputs(self, p, dtype, rng) -> list[np.ndarray]:
        return self.make_batch(p, dtype, rng, 1)[0]

    def make_batch(self, p, dtype, rng, count) -> list[list[np.ndarray]]:
        """`count` independent input sets, each drawn in one call per input (fast for tiny ones)."""
        blocks = [_random(rng, (count, *shape), dtype) for shape in self.input_shapes(p)]
        return [[block[i] for block in blocks] for i in range(count)]

    def input_shapes(self, p) -> list[tuple]:
        raise NotImplementedError

    def reference(self, p, inputs) -> list[np.ndarray]:
        raise NotImplementedError

    def call(self, backend, p, inputs) -> list[np.ndarray]:
        raise NotImplementedError

    def spot_check(self, p, inputs, outputs, rng) -> float:
        raise NotImplementedError

    def rates(self, p, seconds) -> dict:
        """How fast one call of `seconds` is, for the board: GFLOP/s for a kernel."""
        return {"gflops": self.flops(p) / seconds / 1e9}

    def output_bytes(self, p, dtype) -> int:
        return sum(int(np.prod(s)) for s in self.output_shapes(p)) * np.dtype(dtype).itemsize

    def check(self, p, inputs, outputs) -> float:
        return relative_error(outputs, self.reference(p, inputs))


def _random(rng, shape, dtype):
    """Fresh random values, zero-mean, in [-0.5, 0.5): uniform is several times faster to draw."""
    values = rng.random(shape, dtype=np.dtype(dtype).type)
    values -= 0.5
    return values


class Matmul(Problem):
    kind, keys, input_count = "matmul", ("m", "k", "n"), 2

    def label(self, p):
        return f"{p['m']}x{p['k']}x{p['n']}"

    def flops(self, p):
        return 2.0 * p["m"] * p["k"] * p["n"]

    def output_shapes(self, p):
        return [(p["m"], p["n"])]

    def input_shapes(self, p):
        return [(p["m"], p["k"]), (p["k"], p["n"])]

    def reference(self, p, inputs):
        a, b = (x.astype(np.float64) for x in inputs)
        return [a @ b]

    def call(self, backend, p, inputs):
        return [backend.matmul(*inputs)]

    def spot_check(self, p, inputs, outputs, rng):
        """Freivalds: C r against A (B r) for a random r, O(n^2) instead of O(n^3)."""
        a, b = (x.astype(np.float64) for x in inputs)
        r = rng.standard_normal(p["n"])
        if outputs[0].shape != (p["m"], p["n"]) or has_nonfinite(outputs):
            return float("inf")
        return relative_error([outputs[0].astype(np.float64) @ r], [a @ (b @ r)])


class _Conv(Problem):
    """Shared parameters of the convolution events: x (N,C,H,W), w (F,C,K,K)."""
    keys = ("n", "c", "h", "w", "f", "k", "stride", "padding")

    def label(self, p):
        return (f"{p['n']}x{p['c']}x{p['h']}x{p['w']} * {p['f']}x{p['k']}x{p['k']}"
                f" s{p['stride']} p{p['padding']}")

    def x_shape(self, p):
        return (p["n"], p["c"], p["h"], p["w"])

    def w_shape(self, p):
        return (p["f"], p["c"], p["k"], p["k"])

    def y_shape(self, p):
        return conv_output_shape(self.x_shape(p), self.w_shape(p), p["stride"], p["padding"])

    def flops(self, p):
        n, f, oh, ow = self.y_shape(p)
        return 2.0 * n * f * oh * ow * p["c"] * p["k"] ** 2


def _numpy64():
    from ..backends.numpy_backend import NumpyBackend
    return NumpyBackend()


def _gather(x, n, c, rows, cols):
    """x[n, c, rows, cols] with zeros outside the image (zero padding), broadcasting."""
    inside = (rows >= 0) & (rows < x.shape[2]) & (cols >= 0) & (cols < x.shape[3])
    values = x[n, c, np.clip(rows, 0, x.shape[2] - 1), np.clip(cols, 0, x.shape[3] - 1)]
    return np.where(inside, values, 0.0)


class Conv2d(_Conv):
    kind, input_count = "conv2d", 2

    def output_shapes(self, p):
        return [self.y_shape(p)]

    def input_shapes(self, p):
        return [self.x_shape(p), self.w_shape(p)]

    def reference(self, p, inputs):
        x, w = (a.astype(np.float64) for a in inputs)
        return [_numpy64().conv2d(x, w, p["stride"], p["padding"])]

    def call(self, backend, p, inputs):
        return [backend.conv2d(inputs[0], inputs[1], p["stride"], p["padding"])]

    def spot_check(self, p, inputs, outputs, rng):
        """Recompute SAMPLES random output entries directly."""
        y = outputs[0]
        if y.shape != self.y_shape(p) or has_nonfinite(outputs):
            return float("inf")
        x, w = (a.astype(np.float64) for a in inputs)
        n, f, oh, ow = y.shape
        s, pad, k = p["stride"], p["padding"], p["k"]
        b, o = rng.integers(n, size=SAMPLES), rng.integers(f, size=SAMPLES)
        i, j = rng.integers(oh, size=SAMPLES), rng.integers(ow, size=SAMPLES)
        ch, di, dj = np.arange(p["c"]), np.arange(k), np.arange(k)
        rows = (i * s - pad)[:, None, None, None] + di[None, None, :, None]
        cols = (j * s - pad)[:, None, None, None] + dj[None, None, None, :]
        patches = _gather(x, b[:, None, None, None], ch[None, :, None, None], rows, cols)
        expected = np.einsum("scij,scij->s", patches, w[o])
        return relative_error([y[b, o, i, j].astype(np.float64)], [expected])


class Conv2dBackward(_Conv):
    """Both gradients of a convolution: (grad_out, w) -> dx and (x, grad_out) -> dw."""
    kind, input_count = "conv2d_backward", 3

    def output_shapes(self, p):
        return [self.x_shape(p), self.w_shape(p)]

    def flops(self, p):
        return 2 * super().flops(p)

    def input_shapes(self, p):
        return [self.x_shape(p), self.w_shape(p), self.y_shape(p)]

    def reference(self, p, inputs):
        x, w, gy = (a.astype(np.float64) for a in inputs)
        backend, s, pad = _numpy64(), p["stride"], p["padding"]
        return [backend.conv2d_grad_input(gy, w, x.shape, s, pad),
                backend.conv2d_grad_weight(x, gy, w.shape, s, pad)]

    def call(self, backend, p, inputs):
        x, w, gy = inputs
        s, pad = p["stride"], p["padding"]
        return [backend.conv2d_grad_input(gy, w, x.shape, s, pad),
                backend.conv2d_grad_weight(x, gy, w.shape, s, pad)]

    def spot_check(self, p, inputs, outputs, rng):
        """Recompute SAMPLES random entries of each gradient directly."""
        gx, gw = outputs
        if gx.shape != self.x_shape(p) or gw.shape != self.w_shape(p) or has_nonfinite(outputs):
            return float("inf")
        x, w, gy = (a.astype(np.float64) for a in inputs)
        n, f, oh, ow = gy.shape
        s, pad, k = p["stride"], p["padding"], p["k"]
        # dw[o, c, a, b] = sum over n, i, j of gy[n, o, i, j] * xpad[n, c, i*s + a, j*s + b]
        o, c = rng.integers(f, size=SAMPLES), rng.integers(p["c"], size=SAMPLES)
        a, b = rng.integers(k, size=SAMPLES), rng.integers(k, size=SAMPLES)
        rows = (np.arange(oh) * s - pad)[None, None, :, None] + a[:, None, None, None]
        cols = (np.arange(ow) * s - pad)[None, None, None, :] + b[:, None, None, None]
        xs = _gather(x, np.arange(n)[None, :, None, None], c[:, None, None, None], rows, cols)
        dw = np.einsum("snij,snij->s", xs, gy[:, o].transpose(1, 0, 2, 3))
        # dx[m, c, y, z] = sum over o, a, b of gy[m, o, (y+pad-a)/s, (z+pad-b)/s] * w[o, c, a, b]
        m, c2 = rng.integers(n, size=SAMPLES), rng.integers(p["c"], size=SAMPLES)
        yy, zz = rng.integers(p["h"], size=SAMPLES), rng.integers(p["w"], size=SAMPLES)
        dx = np.zeros(SAMPLES)
        for da in range(k):
            for db in range(k):
                r, q = yy + pad - da, zz + pad - db
                ok = (r % s == 0) & (q % s == 0) & (r >= 0) & (q >= 0) \
                    & (r // s < oh) & (q // s < ow)
                g = gy[m[:, None], np.arange(f)[None, :],
                       np.clip(r // s, 0, oh - 1)[:, None], np.clip(q // s, 0, ow - 1)[:, None]]
                dx += np.where(ok, np.einsum("so,os->s", g, w[:, c2, da, db]), 0.0)
        return relative_error([gx[m, c2, yy, zz].astype(np.float64), gw[o, c, a, b].astype(np.float64)],
                              [dx, dw])


def _float_model(model, dtype):
    """Cast every float parameter and buffer of `model` to `dtype` (for float64 references)."""
    for param in model.parameters():
        param.data = param.data.astype(dtype)
    for module in model.modules():
        for name in module.__dict__.get("_buffers", ()):
            value = getattr(module, name)
            if value.dtype.kind == "f":
                setattr(module, name, value.astype(dtype))
    return model


def _counting_backend():
    """The numpy backend, counting the FLOPs of every matmul and convolution it runs."""
    from ..backends.numpy_backend import NumpyBackend

    class Counting(NumpyBackend):
        flops = 0.0

        def matmul(self, a, b):
            Counting.flops += 2.0 * a.shape[0] * a.shape[1] * b.shape[1]
            return super().matmul(a, b)

        def batched_matmul(self, a, b):
            Counting.flops += 2.0 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]
            return super().batched_matmul(a, b)

        def _conv_flops(self, x_shape, w_shape, stride, padding):
            n, f, oh, ow = conv_output_shape(x_shape, w_shape, stride, padding)
            Counting.flops += 2.0 * n * f * oh * ow * w_shape[1] * w_shape[2] * w_shape[3]

        def conv2d(self, x, w, stride=1, padding=0):
            self._conv_flops(x.shape, w.shape, stride, padding)
            return super().conv2d(x, w, stride, padding)

        def conv2d_grad_input(self, grad_out, w, x_shape, stride=1, padding=0):
            self._conv_flops(x_shape, w.shape, stride, padding)
            return super().conv2d_grad_input(grad_out, w, x_shape, stride, padding)

        def conv2d_grad_weight(self, x, grad_out, w_shape, stride=1, padding=0):
            self._conv_flops(x.shape, w_shape, stride, padding)
            return super().conv2d_grad_weight(x, grad_out, w_shape, stride, padding)

    return Counting()


class _Model(Problem):
    """A model from tinytorch.models with weights from manual_seed(0), run on the backend.

    The weights are the same in the parent and the worker; the inputs are fresh
    for every call. The reference is the same model in float64 on the numpy
    backend, and every timed output is checked against it in full (a model has
    no cheap projection check). Model events report a rate (images, samples
    or tokens per second) and, like the kernels, GFLOP/s: `flops` counts the
    model's matmuls and convolutions (measured once, by running it on a
    counting backend), which is what bounds an impossible time.
    """
    unit = "samples"

    # The framework's current backend and no_grad are process-wide: the parent's
    # --jobs threads take turns with every model problem, not only with the same
    # one (a ResNet reference's no_grad would switch off an MLP reference's graph).
    # The worker has one thread anyway.
    _lock = threading.RLock()

    def __init__(self):
        self._models = {}           # (params, dtype) -> (model, initial state)
        self._flops = {}            # params -> FLOPs of one call

    def build(self, p):
        raise NotImplementedError

    def label(self, p):
        return ", ".join(f"{k}={v}" for k, v in p.items())

    def flops(self, p):
        """FLOPs of the matmuls and convolutions of one call (elementwise work not counted)."""
        key = tuple(sorted(p.items()))
        if key not in self._flops:
            counter = _counting_backend()
            inputs = self.make_inputs(p, np.float64, np.random.default_rng(0))
            with self._lock:
                self._run(counter, p, inputs, np.float64)
            self._flops[key] = type(counter).flops
        return self._flops[key]

    def items(self, p) -> int:
        """How many samples (images, tokens) one call processes."""
        return p["batch"]

    def rates(self, p, seconds):
        return {**super().rates(p, seconds),
                "throughput": self.items(p) / seconds, "throughput_unit": f"{self.unit}/s"}

    def model(self, p, dtype):
        """(model, initial state) for these parameters, built once, weights from manual_seed(0)."""
        key = (tuple(sorted(p.items())), np.dtype(dtype).str)
        with self._lock:
            if key not in self._models:
                from ..rng import manual_seed
                manual_seed(0)
                model = _float_model(self.build(p), dtype)
                self._models[key] = (model, model.state_dict())
            return self._models[key]

    def output_shapes(self, p):
        model, _ = self.model(p, np.float32)
        return self._output_shapes(p, model)

    def reference(self, p, inputs):
        from ..backends.numpy_backend import NumpyBackend
        inputs = [a.astype(np.float64) if a.dtype.kind == "f" else a for a in inputs]
        with self._lock:
            return [o.astype(np.float64) for o in self._run(NumpyBackend(), p, inputs, np.float64)]

    def call(self, backend, p, inputs):
        dtype = next((a.dtype for a in inputs if a.dtype.kind == "f"), np.dtype(np.float32))
        return self._run(backend, p, inputs, dtype)

    def spot_check(self, p, inputs, outputs, rng):
        return self.check(p, inputs, outputs)

    def make_batch(self, p, dtype, rng, count):
        return [self.make_inputs(p, dtype, rng) for _ in range(count)]


class ResnetInference(_Model):
    kind, input_count, unit = "resnet_inference", 1, "images"
    keys = ("batch", "size", "width", "stages", "blocks")

    def build(self, p):
        from ..models import build_resnet
        return build_resnet(3, 10, p["width"], p["stages"], p["blocks"]).eval()

    def _output_shapes(self, p, model):
        return [(p["batch"], 10)]

    def make_inputs(self, p, dtype, rng):
        return [_random(rng, (p["batch"], 3, p["size"], p["size"]), dtype)]

    def _run(self, backend, p, inputs, dtype):
        from ..config import use_backend
        from ..tensor import Tensor, no_grad
        model, _ = self.model(p, dtype)
        with use_backend(backend), no_grad():
            return [model(Tensor(inputs[0])).numpy()]


class TransformerForward(_Model):
    kind, input_count, unit = "transformer_forward", 1, "tokens"
    keys = ("batch", "seq_len", "vocab", "dim", "heads", "layers")

    def build(self, p):
        from ..models import build_transformer
        return build_transformer(p["vocab"], p["seq_len"], p["dim"], p["heads"], p["layers"]).eval()

    def items(self, p):
        return p["batch"] * p["seq_len"]

    def _output_shapes(self, p, model):
        return [(p["batch"], p["seq_len"], p["vocab"])]

    def make_inputs(self, p, dtype, rng):
        return [rng.integers(0, p["vocab"], size=(p["batch"], p["seq_len"]), dtype=np.int64)]

    def call(self, backend, p, inputs):
        return self._run(backend, p, inputs, np.float32)

    def reference(self, p, inputs):
        from ..backends.numpy_backend import NumpyBackend
        with self._lock:
            return self._run(NumpyBackend(), p, inputs, np.float64)

    def _run(self, backend, p, inputs, dtype):
        from ..config import use_backend
        from ..tensor import no_grad
        model, _ = self.model(p, dtype)
        with use_backend(backend), no_grad():
            return [model(inputs[0]).numpy()]


class MlpTrainStep(_Model):
    """Forward, cross-entropy loss, backward and an SGD step from the same starting weights;
    the outputs are the loss and every parameter's gradient.

    The hidden activation is GELU, not ReLU: at ReLU's kink a float32 rounding
    difference in a pre-activation near zero switches a whole gradient entry on
    or off, which put honest float32 backends over the tolerance at random
    (measured: 1 input draw in 40 at a relative error of 4e-4). A smooth
    activation leaves only the rounding of the kernels to check.
    """
    kind, input_count, unit = "mlp_train_step", 2, "samples"
    keys = ("batch", "features", "hidden", "layers", "classes")

    def build(self, p):
        from ..models import build_mlp
        from ..nn import GELU
        return build_mlp(p["features"], (p["hidden"],) * p["layers"], p["classes"],
                         activation=GELU).train()

    def _output_shapes(self, p, model):
        return [(1,)] + [param.shape for param in model.parameters()]

    def make_inputs(self, p, dtype, rng):
        return [_random(rng, (p["batch"], p["features"]), dtype),
                rng.integers(0, p["classes"], size=p["batch"], dtype=np.int64)]

    def _run(self, backend, p, inputs, dtype):
        from ..config import use_backend
        from ..nn import CrossEntropyLoss
        from ..optim import SGD
        from ..tensor import Tensor
        model, initial = self.model(p, dtype)
        model.load_state_dict(initial)            # every call starts from the same weights
        with use_backend(backend):
            model.zero_grad()
            loss = CrossEntropyLoss()(model(Tensor(inputs[0])), inputs[1])
            loss.backward()
            grads = [param.grad.numpy().copy() for param in model.parameters()]
            SGD(model.parameters(), lr=0.01).step()
        return [np.array([loss.item()], dtype=dtype), *grads]


PROBLEMS = {problem.kind: problem for problem in (
    Matmul(), Conv2d(), Conv2dBackward(), MlpTrainStep(), ResnetInference(), TransformerForward())}
