"""nn: Module bookkeeping, initialisation, layer behaviour, clear errors, PyTorch parity."""
import numpy as np
import pytest

import tinytorch
from tinytorch import Tensor, nn
from tinytorch.nn import functional as F


@pytest.fixture(autouse=True)
def numpy_backend():
    with tinytorch.use_backend("numpy"):
        yield


def small_cnn():
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(),
                         nn.Flatten(), nn.Linear(2 * 4 * 4, 3))


# ------------------------------------------------------------------ Module
def test_parameters_are_found_and_named():
    model = small_cnn()
    names = [name for name, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias"]
    assert all(p.requires_grad for p in model.parameters())
    assert "1.running_mean" in model.state_dict()


def test_train_and_eval_reach_every_layer():
    model = nn.Sequential(nn.Dropout(0.5), small_cnn())
    model.eval()
    assert not any(m.training for m in model.modules())
    x = np.ones((2, 1, 4, 4), dtype=np.float32)
    np.testing.assert_array_equal(model(x).data, model(x).data)   # no dropout, running stats
    model.train()
    assert all(m.training for m in model.modules())


def test_state_dict_round_trip_and_file(tmp_path):
    tinytorch.manual_seed(0)
    a = small_cnn()
    a(np.random.default_rng(0).standard_normal((4, 1, 4, 4)).astype(np.float32))  # moves stats
    tinytorch.manual_seed(1)
    b = small_cnn()
    path = tmp_path / "model.npz"
    a.save(path)
    b.load(path)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert b.state_dict()["1.running_mean"].any()


def test_load_state_dict_names_the_mismatch():
    model = small_cnn()
    state = model.state_dict()
    state["4.weight"] = np.zeros((5, 5))
    with pytest.raises(ValueError, match=r"'4.weight' has shape \(5, 5\)"):
        model.load_state_dict(state)
    del state["4.weight"]
    with pytest.raises(KeyError, match="missing.*4.weight"):
        model.load_state_dict(state)


def test_loading_a_corrupt_file_names_it(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="broken.npz is not a model file"):
        small_cnn().load(path)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        small_cnn().load(tmp_path / "missing.npz")


def test_pytorch_default_initialisation():
    tinytorch.manual_seed(0)
    layer = nn.Linear(400, 300)
    bound = 1 / np.sqrt(400)
    for p in (layer.weight, layer.bias):
        assert p.dtype == np.float32
        assert np.abs(p.data).max() <= bound
    assert abs(layer.weight.data.std() - bound / np.sqrt(3)) < 0.02 * bound   # uniform spread
    conv = nn.Conv2d(8, 4, 3)
    assert np.abs(conv.weight.data).max() <= 1 / np.sqrt(8 * 9)


def test_manual_seed_makes_initialisation_and_dropout_repeatable():
    def draw():
        tinytorch.manual_seed(42)
        return nn.Linear(3, 3).weight.data, F.dropout(Tensor(np.ones(20)), 0.5).data
    (w1, d1), (w2, d2) = draw(), draw()
    np.testing.assert_array_equal(w1, w2)
    np.testing.assert_array_equal(d1, d2)


def test_dense_is_linear_and_sequential_indexes():
    assert nn.Dense is nn.Linear
    model = small_cnn()
    assert isinstance(model[0], nn.Conv2d) and len(model) == 5


# ------------------------------------------------------------------ layer behaviour
def test_batchnorm_running_statistics_and_eval():
    bn = nn.BatchNorm2d(2, momentum=0.5)
    x = np.random.default_rng(0).standard_normal((8, 2, 3, 3)).astype(np.float32) * 3 + 1
    out = bn(x).data
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), 1, atol=1e-3)
    np.testing.assert_allclose(bn.running_mean, 0.5 * x.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(bn.running_var, 0.5 + 0.5 * x.var(axis=(0, 2, 3), ddof=1),
                               rtol=1e-5)
    bn.eval()
    np.testing.assert_allclose(bn(x).data, (x - bn.running_mean[None, :, None, None])
                               / np.sqrt(bn.running_var[None, :, None, None] + 1e-5), rtol=1e-4)


def test_dropout_zeroes_and_rescales_in_training_only():
    drop = nn.Dropout(0.25)
    out = drop(np.ones(10000, dtype=np.float32)).data
    assert set(np.unique(out)) == {0.0, np.float32(1 / 0.75)}
    assert abs((out == 0).mean() - 0.25) < 0.02
    np.testing.assert_array_equal(drop.eval()(np.ones(5, dtype=np.float32)).data, np.ones(5))


def test_cross_entropy_is_stable_for_huge_logits():
    logits = Tensor(np.array([[1000.0, 0.0], [0.0, -1000.0]], dtype=np.float32),
                    requires_grad=True)
    loss = nn.CrossEntropyLoss()(logits, np.array([0, 1]))
    assert np.isfinite(loss.item()) and abs(loss.item() - 500.0) < 1e-3
    loss.backward()
    assert np.isfinite(logits.grad.data).all()


# ------------------------------------------------------------------ clear errors
@pytest.mark.parametrize("layer,x,message", [
    (nn.Linear(4, 2), np.ones((3, 5)), r"last axis is 4, got shape \(3, 5\)"),
    (nn.Conv2d(3, 2, 3), np.ones((1, 2, 5, 5)), r"3 input channels.*\(1, 2, 5, 5\)"),
    (nn.Conv2d(3, 2, 3), np.ones((3, 5, 5)), r"\(N, C, H, W\), got \(3, 5, 5\)"),
    (nn.Conv2d(1, 1, 5), np.ones((1, 1, 3, 3)), "larger than the padded input"),
    (nn.MaxPool2d(4), np.ones((1, 1, 3, 3)), "larger than the"),
    (nn.BatchNorm2d(3), np.ones((2, 4, 2, 2)), "expects 3 channels"),
    (nn.LayerNorm(4), np.ones((2, 3)), "last axis of 4"),
    (nn.MultiHeadAttention(4, 2), np.ones((2, 3, 5)), r"query must have shape \(N, T, 4\)"),
    (nn.AdaptiveAvgPool2d(2), np.ones((1, 1, 5, 5)), "multiple of 2"),
])
def test_wrong_shapes_into_layers_are_clear(layer, x, message):
    with pytest.raises(ValueError, match=message):
        layer(x.astype(np.float32))


@pytest.mark.parametrize("targets,error,message", [
    (np.array([0, 1]), ValueError, r"need targets of shape \(3,\), got \(2,\)"),
    (np.array([0, 1, 4]), ValueError, r"class indices in \[0, 4\)"),
    (np.array([0.0, 1.0, 2.0]), TypeError, "integer class targets"),
])
def test_mismatched_loss_targets_are_clear(targets, error, message):
    with pytest.raises(error, match=message):
        nn.CrossEntropyLoss()(np.zeros((3, 4), dtype=np.float32), targets)


def test_mse_shape_mismatch_is_clear():
    with pytest.raises(ValueError, match=r"prediction \(3,\) and target \(4,\)"):
        nn.MSELoss()(np.zeros(3, dtype=np.float32), np.zeros(4, dtype=np.float32))


@pytest.mark.parametrize("build,message", [
    (lambda: nn.Linear(0, 3), "Linear: in_features must be >= 1, got 0"),
    (lambda: nn.Linear(2.5, 3), "Linear: in_features must be an int, got 2.5"),
    (lambda: nn.Conv2d(3, 4, 3, padding=-1), "Conv2d: padding must be >= 0"),
    (lambda: nn.Embedding(True, 3), "Embedding: num_embeddings must be an int, got True"),
    (lambda: nn.Dropout(1.0), "Dropout probability must be in"),
])
def test_bad_constructor_arguments_are_named(build, message):
    with pytest.raises((TypeError, ValueError), match=message):
        build()


def test_attention_heads_must_divide_width():
    with pytest.raises(ValueError, match="not divisible"):
        nn.MultiHeadAttention(6, 4)


# ------------------------------------------------------------------ PyTorch parity (optional)
class TestAgainstPyTorch:
    """The same numbers through PyTorch: skipped when torch is not installed."""

    @pytest.fixture(autouse=True)
    def torch(self):
        return pytest.importorskip("torch")

    @staticmethod
    def compare(ours_out, theirs_out, ours_in, theirs_in, rtol=1e-4, atol=1e-5):
        np.testing.assert_allclose(ours_out.data, theirs_out.detach().numpy(), rtol=rtol,
                                   atol=atol)
        grad = np.random.default_rng(5).standard_normal(ours_out.shape).astype(np.float32)
        ours_out.backward(grad)
        theirs_out.backward(torch_tensor(grad))
        np.testing.assert_allclose(ours_in.grad.data, theirs_in.grad.numpy(), rtol=rtol,
                                   atol=atol)

    def test_linear(self, torch, rng):
        ours = nn.Linear(5, 3)
        theirs = torch.nn.Linear(5, 3)
        with torch.no_grad():
            theirs.weight.copy_(torch_tensor(ours.weight.data.T))
            theirs.bias.copy_(torch_tensor(ours.bias.data))
        x, tx = pair(rng, (4, 5))
        self.compare(ours(x), theirs(tx), x, tx)
        np.testing.assert_allclose(ours.weight.grad.data, theirs.weight.grad.numpy().T,
                                   rtol=1e-4, atol=1e-5)

    @pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1)])
    def test_conv2d(self, torch, rng, stride, padding):
        ours = nn.Conv2d(3, 4, 3, stride, padding)
        theirs = torch.nn.Conv2d(3, 4, 3, stride, padding)
        with torch.no_grad():
            theirs.weight.copy_(torch_tensor(ours.weight.data))
            theirs.bias.copy_(torch_tensor(ours.bias.data))
        x, tx = pair(rng, (2, 3, 7, 6))
        self.compare(ours(x), theirs(tx), x, tx)
        np.testing.assert_allclose(ours.weight.grad.data, theirs.weight.grad.numpy(),
                                   rtol=1e-4, atol=1e-4)

    @pytest.mark.parametrize("name", ["max", "avg"])
    def test_pooling(self, torch, rng, name):
        ours = (nn.MaxPool2d if name == "max" else nn.AvgPool2d)(3, 2, 1)
        theirs = getattr(torch.nn, "MaxPool2d" if name == "max" else "AvgPool2d")(3, 2, 1)
        x, tx = pair(rng, (2, 2, 7, 7))
        self.compare(ours(x), theirs(tx), x, tx)

    def test_batchnorm_train(self, torch, rng):
        ours, theirs = nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
        x, tx = pair(rng, (4, 3, 5, 5))
        self.compare(ours(x), theirs(tx), x, tx)
        np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy(), rtol=1e-5)

    def test_layernorm_gelu_softmax(self, torch, rng):
        x, tx = pair(rng, (3, 6))
        ours = F.softmax(nn.GELU()(nn.LayerNorm(6)(x)), axis=-1)
        theirs = torch.softmax(torch.nn.GELU(approximate="tanh")(
            torch.nn.LayerNorm(6)(tx)), dim=-1)
        self.compare(ours, theirs, x, tx)

    def test_cross_entropy(self, torch, rng):
        x, tx = pair(rng, (5, 4))
        targets = np.array([0, 3, 1, 1, 2])
        ours = nn.CrossEntropyLoss()(x, targets)
        theirs = torch.nn.functional.cross_entropy(tx, torch.tensor(targets))
        self.compare(ours, theirs, x, tx)

    @pytest.mark.parametrize("causal", [False, True])
    def test_attention(self, torch, rng, causal):
        ours = nn.MultiHeadAttention(8, 2, causal=causal)
        theirs = torch.nn.MultiheadAttention(8, 2, batch_first=True)
        projections = [ours.q_proj, ours.k_proj, ours.v_proj]
        with torch.no_grad():
            theirs.in_proj_weight.copy_(torch_tensor(
                np.concatenate([p.weight.data.T for p in projections])))
            theirs.in_proj_bias.copy_(torch_tensor(
                np.concatenate([p.bias.data for p in projections])))
            theirs.out_proj.weight.copy_(torch_tensor(ours.out_proj.weight.data.T))
            theirs.out_proj.bias.copy_(torch_tensor(ours.out_proj.bias.data))
        x, tx = pair(rng, (2, 5, 8))
        mask = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1) if causal else None
        self.compare(ours(x), theirs(tx, tx, tx, attn_mask=mask, need_weights=False)[0], x, tx)


def torch_tensor(array):
    import torch
    return torch.tensor(np.array(array))


def pair(rng, shape):
    """The same float32 numbers as a tinytorch Tensor and a torch tensor, both needing grads."""
    import torch
    data = rng.standard_normal(shape).astype(np.float32)
    return Tensor(data.copy(), requires_grad=True), torch.tensor(data, requires_grad=True)
