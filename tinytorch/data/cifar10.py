"""CIFAR-10 in its official python format (cifar-10-batches-py), found or downloaded.

The batches are Python pickles, as the data set's authors publish them, so
only read files you trust: the official archive, which `download=True`
verifies against its published MD5 before unpacking. Unpacking happens in a
hidden staging folder that is renamed into place only when complete, so a
half-finished download never looks like data.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

from .dataset import TensorDataset

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
#: Per-channel mean and standard deviation of the training images (in [0, 1]).
MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)


class DownloadError(RuntimeError):
    """The archive could not be fetched, or was not the archive expected."""


def default_folders() -> list[Path]:
    """Where `load_cifar10()` looks: $TINYTORCH_DATA, then the per-user cache folder."""
    folders = []
    if os.environ.get("TINYTORCH_DATA"):
        folders.append(Path(os.environ["TINYTORCH_DATA"]).expanduser())
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    folders.append(Path(cache) / "tinytorch")
    return folders


def _batch_folder(folder: Path) -> Path | None:
    """folder/cifar-10-batches-py (or folder itself when it holds the batches), if present."""
    for candidate in (folder / FOLDER, folder):
        if (candidate / TEST_FILES[0]).exists() or (candidate / TRAIN_FILES[0]).exists():
            missing = [f for f in TRAIN_FILES + TEST_FILES if not (candidate / f).is_file()]
            if missing:
                raise FileNotFoundError(f"CIFAR-10 in {candidate} is incomplete: missing "
                                        f"{', '.join(missing)}; delete the folder and "
                                        f"download again")
            return candidate
    return None


def _read_batch(path: Path):
    """(uint8 images (n, 3072), int64 labels (n,)) from one official batch file."""
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        images = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
        if images.ndim != 2 or images.shape[1] != 3072 or labels.shape != images.shape[:1]:
            raise ValueError(f"data {images.shape} and labels {labels.shape} are not "
                             f"(n, 3072) and (n,)")
    except Exception as exc:  # noqa: BLE001 - any failure to parse means a corrupt file
        raise ValueError(f"{path} is not a readable CIFAR-10 batch file ({type(exc).__name__}: "
                         f"{exc}); delete it and download the data again") from None
    return images, labels


def _read_split(folder: Path, files, normalize):
    parts = [_read_batch(folder / name) for name in files]
    images = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32).astype(np.float32)
    images /= 255.0
    if normalize:
        images = (images - MEAN[:, None, None]) / STD[:, None, None]
    return TensorDataset(images, np.concatenate([p[1] for p in parts]))


def _fetch(url: str, destination: Path) -> str:
    """Stream `url` to `destination`; the MD5 hex digest of what arrived."""
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(destination, "wb") as f:
            expected = response.headers.get("Content-Length")
            received = 0
            while chunk := response.read(1 << 20):
                f.write(chunk)
                digest.update(chunk)
                received += len(chunk)
    except (OSError, http.client.HTTPException, urllib.error.URLError) as exc:
        raise DownloadError(f"downloading {url} failed: {exc}; nothing was kept, "
                            f"try again") from None
    if expected is not None and received != int(expected):
        raise DownloadError(f"downloading {url} stopped after {received} of {expected} bytes; "
                            f"nothing was kept, try again")
    return digest.hexdigest()


def _extract_plain_files(tar: tarfile.TarFile, destination: Path):
    """Unpack only regular files and folders inside `destination`.

    tarfile's "data" filter does exactly that, but only exists from Python
    3.10.12 / 3.11.4; on older patch releases the same rule is checked here.
    """
    if hasattr(tarfile, "data_filter"):
        tar.extractall(destination, filter="data")
        return
    for member in tar.getmembers():
        if not (member.isfile() or member.isdir()) or member.name.startswith("/") \
                or ".." in Path(member.name).parts:
            raise tarfile.TarError(f"refusing to unpack {member.name!r} (a link, a device "
                                   f"or a path outside the folder)")
    tar.extractall(destination)


def download_cifar10(folder, url: str = URL, md5: str = MD5) -> Path:
    """Fetch the archive into `folder`, verify its MD5, unpack it atomically; the batch folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".cifar10-download-", dir=folder))
    try:
        archive = staging / "cifar-10-python.tar.gz"
        got = _fetch(url, archive)
        if got != md5:
            raise DownloadError(f"{url} has MD5 {got}, expected {md5}: not the CIFAR-10 "
                                f"archive, or damaged on the way; nothing was kept")
        try:
            with tarfile.open(archive, "r:gz") as tar:
                _extract_plain_files(tar, staging / "unpacked")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DownloadError(f"{url} passed its checksum but does not unpack: {exc}") from None
        unpacked = staging / "unpacked" / FOLDER
        missing = [f for f in TRAIN_FILES + TEST_FILES if not (unpacked / f).is_file()]
        if missing:
            raise DownloadError(f"the archive from {url} lacks {FOLDER}/{', '.join(missing)}")
        target = folder / FOLDER
        os.rename(unpacked, target)     # atomic: the batch folder appears complete or not at all
        return target
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_cifar10(root=None, download=False, url: str = URL, md5: str = MD5,
                 normalize=True):
    """(train, test) TensorDatasets: float32 images (N, 3, 32, 32), int64 labels (N,).

    root=None looks in $TINYTORCH_DATA, then ~/.cache/tinytorch (or
    $XDG_CACHE_HOME/tinytorch). download=True fetches the official archive
    into the first of those folders (or `root`) when the data is absent.
    normalize=True subtracts the per-channel mean and divides by the std.
    """
    folders = [Path(root).expanduser()] if root is not None else default_folders()
    found = next((b for b in map(_batch_folder, folders) if b is not None), None)
    if found is None:
        if not download:
            searched = ", ".join(str(f) for f in folders)
            raise FileNotFoundError(
                f"CIFAR-10 not found: looked for {FOLDER}/ in {searched}. Fetch it with "
                f"tinytorch.load_cifar10(download=True) (about 170 MB), or download {URL} "
                f"yourself and unpack it into one of those folders (or set TINYTORCH_DATA).")
        found = download_cifar10(folders[0], url, md5)
    return _read_split(found, TRAIN_FILES, normalize), _read_split(found, TEST_FILES, normalize)
