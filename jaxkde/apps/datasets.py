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

import hashlib
import http.client
import math
import os
import pathlib
import stat
import tempfile
import urllib.error
import urllib.request
import zlib

import numpy as np

__all__ = [
    "DATA_DIR_ENV",
    "MNIST_FILES",
    "MNIST_MIRRORS",
    "DatasetError",
    "load_mnist",
    "mnist_available",
    "mnist_cache_dir",
    "read_idx",
]

DATA_DIR_ENV = "JAXKDE_DATA_DIR"
SHIPPED_DIR = pathlib.Path(__file__).resolve().parent.parent / "data"

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


class DatasetError(OSError, ValueError):
    """A data set could not be found, downloaded or verified (an ``OSError``, and a
    ``ValueError`` for malformed contents)."""


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _read_file(path: pathlib.Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (symlinks followed); anything
    else (a folder, a device, a pipe, a file too large) is refused before it is read."""
    try:
        info = path.stat()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read it ({exc.strerror or exc}).") from None
    if not stat.S_ISREG(info.st_mode):
        raise DatasetError(f"{path} is not a regular file; it cannot be a data file.")
    if info.st_size > limit:
        raise DatasetError(f"{path} holds {info.st_size} bytes, more than the {limit} expected.")
    with path.open("rb") as f:
        raw = f.read(limit + 1)
    if len(raw) > limit:
        raise DatasetError(f"{path} grew past {limit} bytes while being read.")
    return raw


def _decompressed(raw: bytes, limit: int, path: pathlib.Path) -> bytes:
    """``raw`` gunzipped when it is gzip (at most ``limit`` bytes out), else itself.

    A corrupt or truncated stream raises ``DatasetError`` (zlib's own errors included).
    """
    if raw[:2] != b"\x1f\x8b":
        return raw
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflate.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise DatasetError(f"{path}: corrupt gzip stream ({exc}).") from None
    if len(out) > limit:
        raise DatasetError(f"{path} decompresses to more than {limit} bytes.")
    if not inflate.eof:
        raise DatasetError(f"{path}: corrupt gzip stream (truncated).")
    return out


def read_idx(path: str | os.PathLike, max_bytes: int = 2**31) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a numpy array.

    Parameters
    ----------
    path : path-like
        A regular file in the IDX format: two zero bytes, a type code, the number of
        dimensions, one big-endian uint32 size per dimension, then the data.
    max_bytes : int
        Largest file, and largest decompressed content, accepted (2 GiB by default).

    Returns
    -------
    np.ndarray
        Shape given by the header, e.g. ``(10000, 28, 28)`` uint8 for MNIST test images.

    Raises
    ------
    DatasetError
        (a ``ValueError`` and an ``OSError``) when the file is missing, not a regular file, too
        large, corrupt, or not IDX.
    """
    path = pathlib.Path(path)
    raw = _decompressed(_read_file(path, max_bytes), max_bytes, path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DatasetError(f"{path}: not an IDX file (bad magic number {raw[:4].hex()}).")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: truncated IDX header.")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = math.prod(shape) * dtype.itemsize
    if len(raw) - header != expected:
        raise DatasetError(
            f"{path}: IDX header promises {expected} bytes of data for shape {shape}, "
            f"the file holds {len(raw) - header}."
        )
    return np.frombuffer(raw, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def mnist_cache_dir() -> pathlib.Path:
    """The per-user cache folder for MNIST: ``$XDG_CACHE_HOME/jaxkde/mnist``."""
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "jaxkde" / "mnist"


#: Largest MNIST file accepted, compressed or not (the training images are 47 MB).
_MNIST_MAX_BYTES = 64 * 2**20


def _verify(path: pathlib.Path, sha256: str, where: str) -> None:
    """Raise DatasetError unless the decompressed bytes of ``path`` have the given SHA-256."""
    try:
        data = _decompressed(_read_file(path, _MNIST_MAX_BYTES), _MNIST_MAX_BYTES, path)
    except DatasetError as exc:
        raise DatasetError(
            f"{str(exc).rstrip('.')}; put a good copy of {path.name} in {where}."
        ) from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise DatasetError(
            f"{path} does not match the published SHA-256 of MNIST's {path.name} (corrupt, "
            f"truncated or a different file); put a good copy in {where}."
        )


def _download(name: str, sha256: str, cache: pathlib.Path, mirrors: list[str]) -> pathlib.Path:
    """Fetch ``name`` from the first mirror that serves a verified copy, into ``cache``.

    Each attempt streams into a temporary file beside the target (at most
    ``_MNIST_MAX_BYTES``), which is removed whatever goes wrong (network errors, broken or
    truncated HTTP responses, a wrong checksum, an interruption) before the next mirror is
    tried; only a verified file is renamed into place.
    """
    cache.mkdir(parents=True, exist_ok=True)
    errors = []
    for mirror in mirrors:
        url = mirror + name
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{name}.", suffix=".part")
        tmp = pathlib.Path(tmp)
        target = cache / name
        done = False
        try:
            with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=30) as response:
                size = 0
                while chunk := response.read(1 << 20):
                    size += len(chunk)
                    if size > _MNIST_MAX_BYTES:
                        raise DatasetError(f"more than {_MNIST_MAX_BYTES} bytes")
                    f.write(chunk)
            _verify(tmp, sha256, str(cache))
            tmp.replace(target)
            done = True
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            errors.append(f"{url}: {getattr(exc, 'reason', None) or exc!r}")
        finally:
            if not done:  # failed or interrupted: leave nothing behind
                tmp.unlink(missing_ok=True)
        if done:
            return target
    raise DatasetError(
        f"could not download {name} (offline?): " + "; ".join(errors) + f". Put the MNIST "
        f"file {name} in {cache}, or in a folder named by ${DATA_DIR_ENV} or data_dir."
    )


def mnist_available(split: str, data_dir: str | os.PathLike | None = None) -> bool:
    """Whether :func:`load_mnist` finds ``split`` without downloading it (in ``data_dir`` or
    ``$JAXKDE_DATA_DIR``, shipped, or in the cache; files are not verified here)."""
    if split not in MNIST_FILES:
        raise ValueError(f"split must be one of {list(MNIST_FILES)}; got {split!r}.")
    names = [name for name, _ in MNIST_FILES[split]]
    if data_dir is not None or os.environ.get(DATA_DIR_ENV):
        folder = pathlib.Path(data_dir if data_dir is not None else os.environ[DATA_DIR_ENV])
        return all((folder / n).exists() or (folder / n[:-3]).exists() for n in names)
    if split == "test" and all((SHIPPED_DIR / n).exists() for n in names):
        return True
    return all((mnist_cache_dir() / n).exists() for n in names)


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
    images = read_idx(image_path, _MNIST_MAX_BYTES)
    labels = read_idx(label_path, _MNIST_MAX_BYTES)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DatasetError(f"{image_path} and {label_path} do not form an MNIST split.")
    return images, labels
