"""Every op and layer's gradient against central finite differences, in float64.

Each check projects the output on a fixed random tensor (so every output
element matters), perturbs every input element by +-eps, and compares
(f(x+eps) - f(x-eps)) / 2eps with what backward() computed.
"""
import numpy as np
import pytest

import tinytorch
from tinytorch import nn
from tinytorch.nn import functional as F
from tinytorch.tensor import Tensor, cat, stack

EPS = 1e-6


@pytest.fixture(autouse=True)
def numpy_backend():
    with tinytorch.use_backend("numpy"):
        yield


def numerical_grad(loss_of, array):
    grad = np.zeros_like(array)
    for i in np.ndindex(array.shape):
        old = array[i]
        array[i] = old + EPS
        up = loss_of()
        array[i] = old - EPS
        down = loss_of()
        array[i] = old
        grad[i] = (up - down) / (2 * EPS)
    return grad


def check_gradients(fn, *shapes, params=(), seed=0, positive=False):
    """fn(*tensors) -> Tensor; compare analytic and numerical grads of inputs and params."""
    rng = np.random.default_rng(seed)
    inputs = [Tensor(rng.uniform(0.5, 2.0, s) if positive else rng.standard_normal(s),
                     requires_grad=True) for s in shapes]
    projection = rng.standard_normal(fn(*inputs).shape)

    def loss_value():
        return float((fn(*inputs).data * projection).sum())

    for t in [*inputs, *params]:
        t.grad = None
    (fn(*inputs) * Tensor(projection)).sum().backward()
    for name, t in [*((f"input {i}", t) for i, t in enumerate(inputs)),
                    *((f"param {i}", p) for i, p in enumerate(params))]:
        assert t.grad is not None, f"{name} got no gradient"
        expected = numerical_grad(loss_value, t.data)
        np.testing.assert_allclose(t.grad.data, expected, rtol=1e-5, atol=1e-7,
                                   err_msg=f"gradient of {name}")


def as_float64(module):
    for p in module.parameters():
        p.data = p.data.astype(np.float64)
    return module


# ------------------------------------------------------------------ tensor operations
BINARY = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b, "maximum": lambda a, b: a.maximum(b),
}


@pytest.mark.parametrize("op", BINARY)
@pytest.mark.parametrize("shapes", [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1), (1, 4)),
                                    ((2, 1, 4), (3, 1))])
def test_binary_ops_with_broadcasting(op, shapes):
    check_gradients(BINARY[op], *shapes, positive=(op == "div"))


def test_reflected_scalar_ops():
    check_gradients(lambda a: 2.0 - a, (3,))
    check_gradients(lambda a: 3.0 / a, (3,), positive=True)
    check_gradients(lambda a: 1.5 * a + 0.5, (3,))


UNARY = {
    "neg": lambda a: -a, "pow": lambda a: a ** 3, "sqrt": lambda a: a.sqrt(),
    "exp": lambda a: a.exp(), "log": lambda a: a.log(), "tanh": lambda a: a.tanh(),
    "sigmoid": lambda a: a.sigmoid(), "relu": lambda a: a.relu(), "abs": lambda a: a.abs(),
    "gelu": F.gelu,
}


@pytest.mark.parametrize("op", UNARY)
def test_unary_ops(op):
    check_gradients(UNARY[op], (3, 5), positive=op in ("sqrt", "log"))


@pytest.mark.parametrize("reduce", ["sum", "mean", "max", "var"])
@pytest.mark.parametrize("axis,keepdims", [(None, False), (0, False), (1, True), ((0, 2), False),
                                           (-1, True)])
def test_reductions(reduce, axis, keepdims):
    check_gradients(lambda a: getattr(a, reduce)(axis=axis, keepdims=keepdims), (2, 3, 4))


SHAPE_OPS = {
    "reshape": lambda a: a.reshape(4, 6), "flatten": lambda a: a.flatten(1),
    "permute": lambda a: a.permute(2, 0, 1), "transpose": lambda a: a.transpose(0, 2),
    "T": lambda a: a.T, "slice": lambda a: a[1:, ::2, -1],
    "gather": lambda a: a[np.array([0, 1, 1, 0])],             # repeated rows add up
    "pairs": lambda a: a[np.array([0, 1]), np.array([2, 2])],
    "cat": lambda a: cat([a, a * 2], axis=1), "stack": lambda a: stack([a, a], axis=-1),
}


@pytest.mark.parametrize("op", SHAPE_OPS)
def test_shape_ops(op):
    check_gradients(SHAPE_OPS[op], (2, 3, 4))


@pytest.mark.parametrize("shapes", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)),
                                    ((2, 1, 3, 4), (3, 4, 2)), ((4,), (4, 3)), ((3, 4), (4,))])
def test_matmul(shapes):
    check_gradients(lambda a, b: a @ b, *shapes)


# ------------------------------------------------------------------ functional
@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1), (1, 2), (3, 1)])
def test_conv2d(stride, padding):
    check_gradients(lambda x, w, b: F.conv2d(x, w, b, stride, padding),
                    (2, 3, 6, 5), (4, 3, 3, 2), (4,))


@pytest.mark.parametrize("relu", [False, True])
def test_conv2d_epilogue(relu):
    """Bias, residual and ReLU added to the convolution's output in place: gradients reach
    all four inputs (the ReLU's kink is avoided by the residual's offset)."""
    check_gradients(lambda x, w, b, r: F.conv2d(x, w, b, 1, 1, residual=r + 0.3, relu=relu),
                    (2, 3, 5, 4), (4, 3, 3, 3), (4,), (2, 4, 5, 4))


@pytest.mark.parametrize("with_bias", [False, True])
def test_linear_function(with_bias):
    if with_bias:
        check_gradients(lambda x, w, b: F.linear(x, w, b), (2, 3, 4), (4, 5), (5,))
    else:
        check_gradients(lambda x, w: F.linear(x, w), (3, 4), (4, 5))


def test_folded_batch_norm_equals_conv_then_batch_norm():
    """fold_batch_norm: one convolution computes bn(conv(x)) in eval mode, and gradients
    reach the convolution's weight and bias and the batch norm's weight and bias."""
    conv, bn = as_float64(nn.Conv2d(3, 4, 3, padding=1)), as_float64(nn.BatchNorm2d(4))
    bn.weight.data = np.array([1.0, 2.0, 0.5, -1.0])
    bn.bias.data = np.array([0.1, -0.2, 0.3, 0.0])
    bn.running_mean, bn.running_var = np.array([0.1, 0.2, -0.3, 0.0]), np.array([1.5, 0.5, 2.0, 1.0])
    bn.eval()
    x = Tensor(np.random.default_rng(1).standard_normal((2, 3, 5, 5)))
    weight, bias = F.fold_batch_norm(conv.weight, conv.bias, bn)
    np.testing.assert_allclose(F.conv2d(x, weight, bias, 1, 1).data, bn(conv(x)).data,
                               rtol=1e-12, atol=1e-12)

    def folded(x):
        weight, bias = F.fold_batch_norm(conv.weight, conv.bias, bn)
        return F.conv2d(x, weight, bias, 1, 1)
    check_gradients(folded, (2, 3, 5, 5), params=[*conv.parameters(), *bn.parameters()])


@pytest.mark.parametrize("pool", [F.max_pool2d, F.avg_pool2d])
@pytest.mark.parametrize("kernel,stride,padding", [(2, 2, 0), (3, 1, 1), (3, 2, 1)])
def test_pooling(pool, kernel, stride, padding):
    check_gradients(lambda x: pool(x, kernel, stride, padding), (2, 2, 5, 6))


@pytest.mark.parametrize("fn", [F.softmax, F.log_softmax])
@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax(fn, axis):
    check_gradients(lambda x: fn(x, axis), (3, 4))


def test_dropout_with_a_fixed_mask():
    def fn(x):
        tinytorch.manual_seed(3)
        return F.dropout(x, 0.4, training=True)
    check_gradients(fn, (4, 5))


# ------------------------------------------------------------------ layers
def layer_check(layer, *shapes, **kwargs):
    layer = as_float64(layer)
    check_gradients(layer, *shapes, params=layer.parameters(), **kwargs)


def test_linear():
    layer_check(nn.Linear(4, 3), (2, 5, 4))


def test_conv2d_layer():
    layer_check(nn.Conv2d(2, 3, 3, stride=2, padding=1), (2, 2, 5, 5))


def test_batchnorm_train_mode():
    bn = nn.BatchNorm2d(3)
    bn.weight.data = np.array([1.0, 2.0, 0.5])
    bn.bias.data = np.array([0.1, -0.2, 0.3])
    layer_check(bn, (4, 3, 2, 3))


def test_batchnorm_eval_mode():
    bn = nn.BatchNorm2d(3)
    bn.running_mean, bn.running_var = np.array([0.1, 0.2, -0.3]), np.array([1.5, 0.5, 2.0])
    layer_check(bn.eval(), (2, 3, 2, 2))


def test_layernorm():
    ln = nn.LayerNorm(5)
    ln.weight.data = np.linspace(0.5, 1.5, 5)
    layer_check(ln, (2, 3, 5))


def test_adaptive_avg_pool():
    layer_check(nn.AdaptiveAvgPool2d(1), (2, 3, 4, 4))
    layer_check(nn.AdaptiveAvgPool2d(2), (2, 3, 4, 4))


@pytest.mark.parametrize("causal,with_mask", [(False, False), (True, False), (False, True),
                                              (True, True)])
def test_attention(causal, with_mask):
    mask = np.array([[0, 0, 1, 1]] * 4, dtype=bool) if with_mask else None
    attn = as_float64(nn.MultiHeadAttention(6, 2, causal=causal))
    check_gradients(lambda x: attn(x, mask=mask), (2, 4, 6), params=attn.parameters())


def test_embedding():
    emb = as_float64(nn.Embedding(5, 3))
    ids = np.array([[0, 4, 4], [1, 0, 2]])
    check_gradients(lambda x: emb(ids) * x, (2, 3, 3), params=emb.parameters())


def test_cross_entropy():
    targets = np.array([0, 3, 2, 3, 1])
    check_gradients(lambda logits: nn.CrossEntropyLoss()(logits, targets), (5, 4))


def test_mse():
    check_gradients(lambda a, b: nn.MSELoss()(a, b), (3, 4), (3, 4))


def test_models_end_to_end():
    """A whole residual network: conv, batch norm, pooling, skip connections, linear."""
    tinytorch.manual_seed(0)
    model = as_float64(tinytorch.build_resnet(in_channels=1, width=2, num_stages=2))
    check_gradients(model, (2, 1, 6, 6), params=model.parameters()[:4])


def test_models_end_to_end_in_eval_mode():
    """In eval mode the residual network folds each batch norm into its convolution and
    runs skip connection and ReLU as the convolution's epilogue: same gradients."""
    tinytorch.manual_seed(0)
    model = as_float64(tinytorch.build_resnet(in_channels=1, width=2, num_stages=2))
    for name, value in model.named_buffers():      # statistics as if trained a little
        module = model
        *path, attr = name.split(".")
        for part in path:
            module = getattr(module, part)
        setattr(module, attr, value + 0.1 if attr == "running_mean" else value * 1.5)
    model.eval()
    check_gradients(model, (2, 1, 6, 6), params=model.parameters()[:6])


def test_leaf_gradients_never_share_memory():
    """A leaf keeps a fresh gradient array without copying it, but never one that another
    leaf, the user or another array also holds."""
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = Tensor(np.array([3.0, 4.0]), requires_grad=True)
    gradient = np.array([1.0, -1.0])
    (x + y).backward(gradient)                   # the same g for both inputs
    assert not np.shares_memory(x.grad.data, y.grad.data)
    assert not np.shares_memory(x.grad.data, gradient)
    assert not np.shares_memory(y.grad.data, gradient)
    x.grad.data *= 2                             # a user's in-place change stays local
    np.testing.assert_array_equal(y.grad.data, [1.0, -1.0])
    np.testing.assert_array_equal(gradient, [1.0, -1.0])
    w = Tensor(np.ones((2, 3)), requires_grad=True)
    (x.reshape(1, 2) @ w).sum().backward()        # a fresh matmul result: kept as it is
    assert w.grad.data.flags.owndata and w.grad.data.flags.writeable
    np.testing.assert_array_equal(w.grad.data, [[1.0] * 3, [2.0] * 3])


@pytest.mark.parametrize("make", [lambda: nn.Linear(4, 3), lambda: nn.Conv2d(2, 3, 3, padding=1)],
                         ids=["linear", "conv2d"])
def test_sequential_runs_a_following_relu_as_the_layers_epilogue(make):
    """Sequential(layer, ReLU) computes ReLU in place on the layer's output: the same values
    and gradients as the two layers one after the other; a ReLU subclass is left alone."""
    tinytorch.manual_seed(0)
    layer = as_float64(make())
    shape = (2, 5, 4) if isinstance(layer, nn.Linear) else (2, 2, 5, 5)
    fused = nn.Sequential(layer, nn.ReLU())
    rng = np.random.default_rng(2)
    x = Tensor(rng.standard_normal(shape), requires_grad=True)
    out = fused(x)
    np.testing.assert_allclose(out.data, layer(x).relu().data, rtol=1e-12, atol=1e-12)
    check_gradients(fused, shape, params=layer.parameters())

    class Recording(nn.ReLU):
        calls = 0

        def forward(self, x):
            Recording.calls += 1
            return super().forward(x)
    nn.Sequential(layer, Recording())(x)
    assert Recording.calls == 1
