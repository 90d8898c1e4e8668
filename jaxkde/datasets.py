"""Datasets: MNIST with an offline default, and a reader for its IDX files.

``load_mnist(split)`` looks for the split's two files, in order:

1. ``data_dir``, when given (and nowhere else);
2. the folder named by the environment variable ``JAXKDE_DATA_DIR``, when set (and nowhere else);
3. for ``split="test"``, the copy shipped inside the package (``jaxkde/data``);
4. the per-user cache, ``$XDG_CACHE_HOME/jaxkde/mnist`` (default ``~/.cache/jaxkde/mnist``);
5. a download from the public MNIST mirrors into that cache.

Every file is checked against the SHA-256 of its decompressed bytes as published with MNIST; a
corrupt, truncated or mismatched file is rejected, naming the file and where a good copy goes.
Downloads land in a temporary file and are verified before they are moved into place, so a
failed download never leaves a half-written file behind.

MNIST is by Yann LeCun, Corinna Cortes and Christopher J.C. Burges, CC BY-SA 3.0.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pathlib
import tempfile
import urllib.error
import urllib.request

import numpy as np

__all__ = [
    "DATA_DIR_ENV",
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "DatasetError",
    "load_mnist",
    "mnist_cache_dir",
    "read_idx",
]

DATA_DIR_ENV = "JAXKDE_DATA_DIR"
SHIPPED_DIR = pathlib.Path(__file__).resolve().parent / "data"

# split -> ((file, SHA-256 of the decompressed bytes), ...) for images, then labels.
MNIST_FILES = {
    "train": (
        ("train-images-idx3-ubyte.gz",
         "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
        ("train-labels-idx1-ubyte.gz",
         "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    ),
    "test": (
        ("t10k-images-idx3-ubyte.gz",
         "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
        ("t10k-labels-idx1-ubyte.gz",
         "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
    ),
}  # fmt: skip
MNIST_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]


class DatasetError(OSError):
    """A data set could not be found, downloaded or verified."""


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a numpy array.

    Parameters
    ----------
    path : path-like
        File in the IDX format: two zero bytes, a type code, the number of dimensions, one
        big-endian uint32 size per dimension, then the data.

    Returns
    -------
    np.ndarray
        Shape given by the header, e.g. ``(10000, 28, 28)`` uint8 for MNIST test images.
    """
    path = pathlib.Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: corrupt gzip stream ({exc}).") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()}).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: IDX header promises {expected} bytes of data for shape {shape}, "
            f"the file holds {len(raw) - header}."
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def mnist_cache_dir() -> pathlib.Path:
    """The per-user cache folder for MNIST: ``$XDG_CACHE_HOME/jaxkde/mnist``."""
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "jaxkde" / "mnist"


def _decompressed(raw: bytes) -> bytes:
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def _verify(path: pathlib.Path, sha256: str, where: str) -> None:
    """Raise DatasetError unless the decompressed bytes of ``path`` have the given SHA-256."""
    try:
        data = _decompressed(path.read_bytes())
    except (OSError, EOFError) as exc:
        raise DatasetError(
            f"{path} is corrupt ({exc}); put a good copy of {path.name} in {where}."
        ) from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise DatasetError(
            f"{path} does not match the published SHA-256 of MNIST's {path.name} (corrupt, "
            f"truncated or a different file); put a good copy in {where}."
        )


def _download(name: str, sha256: str, cache: pathlib.Path, mirrors: list[str]) -> pathlib.Path:
    cache.mkdir(parents=True, exist_ok=True)
    errors = []
    for mirror in mirrors:
        url = mirror + name
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                raw = response.read()
        except (urllib.error.URLError, OSError, ValueError) as exc:
            errors.append(f"{url}: {getattr(exc, 'reason', exc)}")
            continue
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{name}.", suffix=".part")
        tmp = pathlib.Path(tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
            _verify(tmp, sha256, str(cache))
        except DatasetError as exc:
            tmp.unlink(missing_ok=True)
            errors.append(f"{url}: {exc}")
            continue
        target = cache / name
        tmp.replace(target)
        return target
    raise DatasetError(
        f"could not download {name} (offline?): " + "; ".join(errors) + f". Put the MNIST "
        f"file {name} in {cache}, or in a folder named by ${DATA_DIR_ENV} or data_dir."
    )


def _locate(split: str, data_dir, mirrors) -> list[pathlib.Path]:
    files = MNIST_FILES[split]
    if data_dir is not None or os.environ.get(DATA_DIR_ENV):
        folder = pathlib.Path(data_dir if data_dir is not None else os.environ[DATA_DIR_ENV])
        source = "data_dir" if data_dir is not None else f"${DATA_DIR_ENV}"
        paths = []
        for name, sha in files:
            path = folder / name
            if not path.exists() and (folder / name[:-3]).exists():
                path = folder / name[:-3]  # decompressed copy
            if not path.exists():
                raise DatasetError(
                    f"MNIST {split} file {name} not found in {folder} ({source}); put the file "
                    "there (gzipped or not)."
                )
            _verify(path, sha, str(folder))
            paths.append(path)
        return paths
    if split == "test" and all((SHIPPED_DIR / name).exists() for name, _ in files):
        paths = [SHIPPED_DIR / name for name, _ in files]
        for path, (_, sha) in zip(paths, files, strict=True):
            _verify(path, sha, f"{SHIPPED_DIR} (reinstall jaxkde)")
        return paths
    cache = mnist_cache_dir()
    paths = []
    for name, sha in files:
        path = cache / name
        if path.exists():
            _verify(path, sha, str(cache))
        else:
            path = _download(name, sha, cache, MNIST_MIRRORS if mirrors is None else mirrors)
        paths.append(path)
    return paths


def load_mnist(
    split: str = "test",
    data_dir: str | os.PathLike | None = None,
    *,
    mirrors: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Load an MNIST split, verified against its published SHA-256 sums.

    Parameters
    ----------
    split : {"test", "train"}
        ``"test"`` (10,000 images, shipped with jaxkde, the default) or ``"train"`` (60,000).
    data_dir : path-like, optional
        Folder holding the split's IDX files (gzipped or not); see the module docstring for the
        places searched without it.
    mirrors : list of str, optional
        Base URLs tried in order for a download (default ``MNIST_MIRRORS``).

    Returns
    -------
    images : np.ndarray of uint8, shape (n, 28, 28)
    labels : np.ndarray of uint8, shape (n,)

    Raises
    ------
    DatasetError
        When the files are missing and cannot be downloaded, or fail verification.
    """
    if split not in MNIST_FILES:
        raise ValueError(f"split must be one of {list(MNIST_FILES)}; got {split!r}.")
    image_path, label_path = _locate(split, data_dir, mirrors)
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{image_path} and {label_path} do not form an MNIST split.")
    return images, labels
