"""Data: DataLoader, CIFAR-10 files in the official format, verified atomic download, digits."""
import hashlib
import http.server
import io
import os
import pickle
import sys
import tarfile
import threading

import numpy as np
import pytest

import tinytorch
from tinytorch.data import (DataLoader, Dataset, DownloadError, TensorDataset, load_cifar10,
                            load_digits, synthetic_cifar10)
from tinytorch.data.cifar10 import FOLDER, MEAN, STD, TEST_FILES, TRAIN_FILES

PER_BATCH = 3


# ------------------------------------------------------------------ DataLoader
def test_batches_cover_the_data_once():
    data = TensorDataset(np.arange(10, dtype=np.float32), np.arange(10))
    batches = list(DataLoader(data, batch_size=4))
    assert [len(x) for x, _ in batches] == [4, 4, 2]
    assert isinstance(batches[0][0], tinytorch.Tensor) and batches[0][1].dtype == np.int64
    assert [len(x) for x, _ in DataLoader(data, batch_size=4, drop_last=True)] == [4, 4]
    assert len(DataLoader(data, 4)) == 3 and len(DataLoader(data, 4, drop_last=True)) == 2


def test_shuffling_is_a_repeatable_permutation():
    data = TensorDataset(np.arange(20))

    def order(**kwargs):
        return np.concatenate([x.data for (x,) in DataLoader(data, 6, shuffle=True, **kwargs)])
    first = order(seed=3)
    assert sorted(first) == list(range(20)) and list(first) != list(range(20))
    np.testing.assert_array_equal(first, order(seed=3))
    tinytorch.manual_seed(7)
    a = order()
    tinytorch.manual_seed(7)
    np.testing.assert_array_equal(a, order())


def test_any_dataset_is_stacked_into_batches():
    class Squares(Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.full(2, i, dtype=np.float32), i * i

    (x, y), *_ = DataLoader(Squares(), batch_size=3)
    np.testing.assert_array_equal(x.data, [[0, 0], [1, 1], [2, 2]])
    np.testing.assert_array_equal(y.data, [0, 1, 4])


def test_tensor_dataset_rejects_unequal_lengths():
    with pytest.raises(ValueError, match=r"different lengths \[3, 4\]"):
        TensorDataset(np.zeros(3), np.zeros(4))


def test_synthetic_cifar10_is_cifar_shaped():
    images, labels = synthetic_cifar10(8).arrays
    assert images.shape == (8, 3, 32, 32) and images.dtype == np.float32
    assert labels.dtype == np.int64 and labels.max() < 10


# ------------------------------------------------------------------ CIFAR-10 files
def batch_bytes(seed):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (PER_BATCH, 3072), dtype=np.uint8)
    return pickle.dumps({b"batch_label": b"generated", b"labels": [seed % 10] * PER_BATCH,
                         b"data": data, b"filenames": [b"x.png"] * PER_BATCH})


def write_cifar(folder):
    batches = folder / FOLDER
    batches.mkdir(parents=True)
    for seed, name in enumerate(TRAIN_FILES + TEST_FILES):
        (batches / name).write_bytes(batch_bytes(seed))
    return batches


def make_archive():
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for seed, name in enumerate(TRAIN_FILES + TEST_FILES):
            payload = batch_bytes(seed)
            info = tarfile.TarInfo(f"{FOLDER}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buffer.getvalue()


def test_reads_the_official_format_and_normalises(tmp_path):
    write_cifar(tmp_path)
    train, test = load_cifar10(tmp_path)
    images, labels = train.arrays
    assert images.shape == (5 * PER_BATCH, 3, 32, 32) and images.dtype == np.float32
    assert labels.dtype == np.int64 and list(labels[::PER_BATCH]) == [0, 1, 2, 3, 4]
    assert len(test) == PER_BATCH and test.arrays[1][0] == 5
    raw = pickle.loads(batch_bytes(0))[b"data"][0]
    # rows hold 1024 red, then 1024 green, then 1024 blue pixels, row-major
    expected = (raw.reshape(3, 32, 32) / 255.0 - MEAN[:, None, None]) / STD[:, None, None]
    np.testing.assert_allclose(images[0], expected, rtol=1e-5, atol=1e-5)
    unnormalised, _ = load_cifar10(tmp_path / FOLDER, normalize=False)   # the folder itself
    assert unnormalised.arrays[0].min() >= 0 and unnormalised.arrays[0].max() <= 1


def test_missing_data_names_the_folders_and_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYTORCH_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError) as caught:
        load_cifar10()
    message = str(caught.value)
    assert str(tmp_path / "data") in message and str(tmp_path / "cache" / "tinytorch") in message
    assert "download=True" in message


def test_root_none_finds_data_in_the_user_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("TINYTORCH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    write_cifar(tmp_path / "tinytorch")
    train, _ = load_cifar10()
    assert len(train) == 5 * PER_BATCH


def test_corrupt_batch_names_the_file(tmp_path):
    batches = write_cifar(tmp_path)
    (batches / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError, match="data_batch_3 is not a readable CIFAR-10 batch"):
        load_cifar10(tmp_path)
    (batches / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((2, 5))}))
    with pytest.raises(ValueError, match="data_batch_3"):
        load_cifar10(tmp_path)


def test_missing_batch_file_is_named(tmp_path):
    batches = write_cifar(tmp_path)
    (batches / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="incomplete: missing test_batch"):
        load_cifar10(tmp_path)


# ------------------------------------------------------------------ download
class ArchiveServer:
    """Serves the archive at /ok and half of it (promising all) at /truncated, on 127.0.0.1."""

    def __init__(self, payload):
        self.payload, self.requests = payload, 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests += 1
                body = server.payload
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if self.path == "/ok" else body[:len(body) // 2])
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture(autouse=True)
def no_proxy_for_localhost(monkeypatch):
    """A proxy configured on the machine must not intercept the local test server."""
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


@pytest.fixture(scope="module")
def archive():
    payload = make_archive()
    return payload, hashlib.md5(payload).hexdigest()


def test_download_verifies_and_unpacks(tmp_path, archive):
    payload, md5 = archive
    with ArchiveServer(payload) as server:
        train, test = load_cifar10(tmp_path, download=True, url=server.url("/ok"), md5=md5)
        assert len(train) == 5 * PER_BATCH and len(test) == PER_BATCH
        assert os.listdir(tmp_path) == [FOLDER]          # no staging folder or archive left
        load_cifar10(tmp_path, download=True, url=server.url("/ok"), md5=md5)
        assert server.requests == 1                      # present data is not fetched again


def test_download_into_the_default_folder(tmp_path, monkeypatch, archive):
    payload, md5 = archive
    monkeypatch.setenv("TINYTORCH_DATA", str(tmp_path / "data"))
    with ArchiveServer(payload) as server:
        load_cifar10(download=True, url=server.url("/ok"), md5=md5)
    assert (tmp_path / "data" / FOLDER / "test_batch").is_file()


def test_checksum_mismatch_keeps_nothing(tmp_path, archive):
    payload, _ = archive
    with ArchiveServer(payload) as server:
        with pytest.raises(DownloadError, match="expected 0{32}"):
            load_cifar10(tmp_path, download=True, url=server.url("/ok"), md5="0" * 32)
    assert os.listdir(tmp_path) == []
    with pytest.raises(FileNotFoundError):
        load_cifar10(tmp_path)


def test_interrupted_transfer_keeps_nothing(tmp_path, archive):
    payload, md5 = archive
    with ArchiveServer(payload) as server:
        with pytest.raises(DownloadError, match="try again"):
            load_cifar10(tmp_path, download=True, url=server.url("/truncated"), md5=md5)
    assert os.listdir(tmp_path) == []


def test_unreachable_server_is_a_clear_error(tmp_path):
    with pytest.raises(DownloadError, match="downloading http://127.0.0.1:9/"):
        load_cifar10(tmp_path, download=True, url="http://127.0.0.1:9/x.tar.gz")
    assert os.listdir(tmp_path) == []


# ------------------------------------------------------------------ digits
def test_digits_shapes_and_split():
    train, test = load_digits()
    assert train.arrays[0].shape[1:] == (64,) and len(train) + len(test) == 1797
    assert train.arrays[0].dtype == np.float32 and 0 <= train.arrays[0].min() <= 1
    images, _ = load_digits(as_images=True)
    assert images.arrays[0].shape[1:] == (1, 8, 8)


def test_digits_without_scikit_learn_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[digits\]"'):
        load_digits()


def test_a_short_digits_run_reaches_90_percent():
    """Small MLP, 4 epochs of Adam, fixed seed: at least 90% test accuracy."""
    tinytorch.manual_seed(0)
    train, test = load_digits()
    model = tinytorch.build_mlp(in_features=64, hidden_sizes=(64,), num_classes=10)
    opt = tinytorch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = tinytorch.nn.CrossEntropyLoss()
    with tinytorch.use_backend("numpy"):
        for _ in range(4):
            for x, y in DataLoader(train, 32, shuffle=True):
                opt.zero_grad()
                loss_fn(model(x), y).backward()
                opt.step()
        with tinytorch.no_grad():
            predicted = model(test.arrays[0]).data.argmax(axis=1)
    assert (predicted == test.arrays[1]).mean() >= 0.90


@pytest.mark.parametrize("has_data_filter", [True, False])
def test_unpacking_refuses_paths_outside_the_folder(tmp_path, monkeypatch, has_data_filter):
    """Python < 3.10.12 / 3.11.4 lacks tarfile's "data" filter; the same rule holds there."""
    import io
    import tarfile

    from tinytorch.data.cifar10 import _extract_plain_files
    if not has_data_filter:
        monkeypatch.delattr(tarfile, "data_filter")

    def archive(name):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"ok"))
        buffer.seek(0)
        return tarfile.open(fileobj=buffer)

    with archive("cifar-10-batches-py/data_batch_1") as tar:
        _extract_plain_files(tar, tmp_path / "good")
    assert (tmp_path / "good" / "cifar-10-batches-py" / "data_batch_1").read_bytes() == b"ok"
    with archive("../escaped") as tar, pytest.raises(tarfile.TarError):
        _extract_plain_files(tar, tmp_path / "bad")
    assert not (tmp_path / "escaped").exists()
