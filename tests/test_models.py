"""Reference models: shapes, configurability, every matmul/conv on the backend, backend parity."""
import collections

import numpy as np
import pytest

import tinytorch
from tinytorch import nn
from tinytorch.backends import ComputeBackend
from tinytorch.backends.numpy_backend import NumpyBackend
from tinytorch.backends.base import OPERATIONS


def _counted(op):
    def operation(self, *args):
        self.calls[op] += 1
        return getattr(self.inner, op)(*args)
    operation.__name__ = op
    return operation


class CountingBackend(ComputeBackend):
    """Delegates every operation to NumpyBackend and counts the calls."""

    def __init__(self):
        self.calls = collections.Counter()
        self.inner = NumpyBackend()

    matmul, conv2d, batched_matmul, conv2d_grad_input, conv2d_grad_weight = \
        [_counted(op) for op in OPERATIONS]


def forward_backward(model, inputs, targets):
    logits = model(inputs)
    loss = nn.CrossEntropyLoss()(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    loss.backward()
    return logits


def count_calls(model, inputs, targets):
    backend = CountingBackend()
    with tinytorch.use_backend(backend):
        forward_backward(model, inputs, targets)
    return dict(backend.calls)


def test_mlp_every_matmul_reaches_the_backend(rng):
    model = tinytorch.build_mlp(in_features=12, hidden_sizes=(8, 6), num_classes=4)
    calls = count_calls(model, rng.standard_normal((5, 12)).astype(np.float32),
                        rng.integers(0, 4, 5))
    # 3 Linear layers: 3 forward; backward 3 weight grads + 2 input grads (not the data's)
    assert calls == {"matmul": 3 + 5}


def test_cnn_every_convolution_reaches_the_backend(rng):
    model = tinytorch.build_resnet(width=4, num_stages=2, blocks_per_stage=1)
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert convs == 1 + 2 + 3          # stem, block 1, block 2 with a projection shortcut
    calls = count_calls(model, rng.standard_normal((2, 3, 8, 8)).astype(np.float32),
                        rng.integers(0, 10, 2))
    assert calls == {"conv2d": convs, "conv2d_grad_weight": convs,
                     "conv2d_grad_input": convs - 1,   # the stem's input is data
                     "matmul": 3}                      # classifier: forward, two grads


def test_transformer_every_matmul_reaches_the_backend(rng):
    layers = 2
    model = tinytorch.build_transformer(vocab_size=11, max_seq_len=8, embed_dim=8, num_heads=2,
                                        num_layers=layers)
    calls = count_calls(model, rng.integers(0, 11, (3, 5)), rng.integers(0, 11, (3, 5)))
    linears = 6 * layers + 1          # q, k, v, out, two MLP layers per block; the head
    assert calls == {"matmul": 3 * linears,
                     "batched_matmul": 3 * 2 * layers}  # QK^T and AV, forward and 2 grads


def tiny_models():
    tinytorch.manual_seed(0)
    return {
        "mlp": (tinytorch.build_mlp(in_features=12, hidden_sizes=(7,), num_classes=3),
                lambda r: r.standard_normal((4, 12)).astype(np.float32),
                lambda r: r.integers(0, 3, 4)),
        "resnet": (tinytorch.build_resnet(width=2, num_stages=2),
                   lambda r: r.standard_normal((2, 3, 6, 6)).astype(np.float32),
                   lambda r: r.integers(0, 10, 2)),
        "transformer": (tinytorch.build_transformer(vocab_size=7, max_seq_len=4, embed_dim=4,
                                                    num_heads=2, num_layers=1),
                        lambda r: r.integers(0, 7, (2, 4)),
                        lambda r: r.integers(0, 7, (2, 4))),
    }


@pytest.mark.parametrize("name", ["mlp", "resnet", "transformer"])
def test_backends_agree_on_outputs_and_gradients(name):
    results = {}
    for backend in ("naive", "numpy", "optimized"):
        model, make_x, make_y = tiny_models()[name]       # same seed: same weights
        rng = np.random.default_rng(1)
        with tinytorch.use_backend(backend):
            out = forward_backward(model, make_x(rng), make_y(rng))
        results[backend] = [out.data] + [p.grad.data for p in model.parameters()]
    for backend in ("naive", "optimized"):
        for got, want in zip(results[backend], results["numpy"]):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=backend)


def test_resnet_eval_folds_batch_norm_without_changing_results(rng):
    """Eval mode folds every batch norm into its convolution (with the skip connection
    and ReLU as the epilogue); layer by layer, unfused, gives the same logits."""
    tinytorch.manual_seed(0)
    model = tinytorch.build_resnet(width=4, num_stages=3)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):           # statistics unlike a fresh layer's
            module.running_mean = rng.uniform(-0.5, 0.5, module.num_features).astype(np.float32)
            module.running_var = rng.uniform(0.5, 2.0, module.num_features).astype(np.float32)
            module.weight.data = rng.uniform(0.5, 1.5, module.num_features).astype(np.float32)
    model.eval()
    x = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)

    def unfused(x):
        out = model.stem(x)                              # Sequential: conv, bn, relu in turn
        for block in model.stages:
            inner = block.bn2(block.conv2(block.bn1(block.conv1(out)).relu()))
            skip = out if block.shortcut is None else block.shortcut(out)
            out = (inner + skip).relu()
        return model.fc(model.flatten(model.pool(out)))
    with tinytorch.use_backend("numpy"), tinytorch.no_grad():
        np.testing.assert_allclose(model(x).data, unfused(tinytorch.Tensor(x)).data,
                                   rtol=1e-5, atol=1e-5)
    calls = count_calls(model, x, rng.integers(0, 10, 3))      # forward and backward
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert calls["conv2d"] == calls["conv2d_grad_weight"] == convs   # one call per conv


def test_defaults_match_what_the_course_and_competition_run(rng):
    with tinytorch.use_backend("numpy"):
        images = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
        assert tinytorch.build_resnet()(images).shape == (2, 10)
        assert tinytorch.build_mlp()(images).shape == (2, 10)
        ids = rng.integers(0, 256, (2, 64))
        assert tinytorch.build_transformer()(ids).shape == (2, 64, 256)


def test_sizes_are_configurable():
    small = tinytorch.build_resnet(width=4, blocks_per_stage=1)
    deep = tinytorch.build_resnet(width=4, blocks_per_stage=2)
    wide = tinytorch.build_resnet(width=8, blocks_per_stage=1)
    count = lambda m: sum(p.size for p in m.parameters())  # noqa: E731
    assert count(small) < count(deep) and count(small) < count(wide)
    mlp = tinytorch.build_mlp(in_features=10, hidden_sizes=(5, 5, 5), num_classes=2)
    assert sum(isinstance(m, nn.Linear) for m in mlp.modules()) == 4


def test_transformer_is_causal(rng):
    """Changing a later token never changes the logits of earlier positions."""
    model = tinytorch.build_transformer(vocab_size=9, max_seq_len=6, embed_dim=8, num_heads=2)
    ids = rng.integers(0, 9, (1, 6))
    changed = ids.copy()
    changed[0, 4] = (ids[0, 4] + 1) % 9
    with tinytorch.use_backend("numpy"), tinytorch.no_grad():
        a, b = model(ids).data, model(changed).data
    np.testing.assert_allclose(a[0, :4], b[0, :4], rtol=1e-5, atol=1e-6)
    assert not np.allclose(a[0, 4], b[0, 4])


def test_transformer_rejects_bad_ids():
    model = tinytorch.build_transformer(vocab_size=9, max_seq_len=4, embed_dim=8, num_heads=2)
    with pytest.raises(ValueError, match="max_seq_len"):
        model(np.zeros((1, 5), dtype=np.int64))
    with pytest.raises(ValueError, match=r"\(N, T\)"):
        model(np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match=r"ids must be in \[0, 9\)"):
        model(np.full((1, 4), 9))


def test_mlp_activation_is_a_module_class():
    gelu = tinytorch.build_mlp(in_features=4, hidden_sizes=(3, 3), num_classes=2,
                               activation=nn.GELU)
    assert sum(isinstance(m, nn.GELU) for m in gelu.modules()) == 2
    assert not any(isinstance(m, nn.ReLU) for m in gelu.modules())
    with pytest.raises(TypeError, match=r"activation=.*Module class.*'relu'"):
        tinytorch.build_mlp(in_features=4, hidden_sizes=(3,), activation="relu")
