"""The IDX reader on tiny handmade files."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from jaxkde.apps.datasets import read_idx


def _idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, arr.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in arr.shape)
    return header + arr.tobytes()


@pytest.mark.parametrize("compress", [False, True])
def test_reads_images_and_labels(tmp_path, compress):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 1], np.uint8)
    for name, arr in [("img", images), ("lab", labels)]:
        data = _idx_bytes(arr)
        (tmp_path / name).write_bytes(gzip.compress(data) if compress else data)
    np.testing.assert_array_equal(read_idx(tmp_path / "img"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "lab"), labels)


def test_reads_big_endian_floats(tmp_path):
    arr = np.array([[1.5, -2.0], [3.25, 0.0]], ">f4")
    (tmp_path / "f").write_bytes(_idx_bytes(arr, 0x0D))
    got = read_idx(tmp_path / "f")
    np.testing.assert_array_equal(got, arr.astype(np.float32))
    assert got.dtype == np.float32


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"\x00\x00\x08\x01\x00\x00\x00\x05abc", "promises 5 bytes"),
        (b"\x01\x02\x03\x04", "bad magic"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated"),
        (gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x02ab", mtime=0)[:-6], "corrupt gzip"),
    ],
)
def test_rejects_malformed_files(tmp_path, payload, match):
    (tmp_path / "bad").write_bytes(payload)
    with pytest.raises(ValueError, match=match):
        read_idx(tmp_path / "bad")


def test_shipped_mnist_test_images_fixture(mnist_test_images):
    assert mnist_test_images.shape == (10000, 784)
    assert mnist_test_images.dtype == np.uint8


# --------------------------------------------------------------------------- load_mnist
from jaxkde import datasets  # noqa: E402


def _fake_split(folder, n=5, corrupt=None):
    """Write IDX files named like MNIST's; return (images, labels, {name: sha256})."""
    import hashlib

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    sums = {}
    for (name, _), arr in zip(datasets.MNIST_FILES["train"], (images, labels), strict=True):
        data = _idx_bytes(arr)
        sums[name] = hashlib.sha256(data).hexdigest()
        if corrupt == name:
            data = data[:-10]
        (folder / name).write_bytes(gzip.compress(data))
    return images, labels, sums


@pytest.fixture
def fake_sums(monkeypatch, tmp_path):
    """Point the train split's published sums at our small fake files."""

    def install(sums):
        files = tuple((name, sums[name]) for name, _ in datasets.MNIST_FILES["train"])
        monkeypatch.setitem(datasets.MNIST_FILES, "train", files)

    monkeypatch.delenv(datasets.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return install


def test_shipped_test_split_has_the_published_label_counts(monkeypatch):
    monkeypatch.delenv(datasets.DATA_DIR_ENV, raising=False)
    images, labels = datasets.load_mnist("test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and labels.dtype == np.uint8
    counts = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    np.testing.assert_array_equal(np.bincount(labels), counts)


def test_data_dir_then_environment_variable(tmp_path, monkeypatch, fake_sums):
    images, labels, sums = _fake_split(tmp_path)
    fake_sums(sums)
    got = datasets.load_mnist("train", tmp_path)
    np.testing.assert_array_equal(got[0], images)
    np.testing.assert_array_equal(got[1], labels)
    monkeypatch.setenv(datasets.DATA_DIR_ENV, str(tmp_path))
    np.testing.assert_array_equal(datasets.load_mnist("train")[0], images)
    # An explicit folder that lacks the files is an error naming it, not a silent fallback.
    with pytest.raises(datasets.DatasetError, match=r"not found in .*empty"):
        datasets.load_mnist("train", tmp_path / "empty")


def test_corrupted_file_is_rejected_naming_it(tmp_path, fake_sums):
    _, _, sums = _fake_split(tmp_path, corrupt="train-labels-idx1-ubyte.gz")
    fake_sums(sums)
    with pytest.raises(datasets.DatasetError, match=r"labels-idx1-ubyte\.gz.*put a good copy"):
        datasets.load_mnist("train", tmp_path)


def test_real_file_of_the_wrong_split_is_rejected(tmp_path, monkeypatch):
    monkeypatch.delenv(datasets.DATA_DIR_ENV, raising=False)
    shipped = datasets.SHIPPED_DIR / "t10k-labels-idx1-ubyte.gz"
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(shipped.read_bytes())
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"\x00\x00\x08\x03")
    with pytest.raises(datasets.DatasetError, match="does not match the published SHA-256"):
        datasets.load_mnist("train", tmp_path)


def test_download_into_cache_from_a_mirror(tmp_path, fake_sums):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    images, _, sums = _fake_split(mirror)
    fake_sums(sums)
    got, _ = datasets.load_mnist(
        "train", mirrors=["file://" + str(tmp_path / "nowhere") + "/", mirror.as_uri() + "/"]
    )
    np.testing.assert_array_equal(got, images)
    cache = datasets.mnist_cache_dir()
    assert sorted(p.name for p in cache.iterdir()) == sorted(sums)  # no partial files left
    # Now cached: no mirror needed.
    np.testing.assert_array_equal(datasets.load_mnist("train", mirrors=[])[0], images)


def test_corrupt_download_is_never_half_written(tmp_path, fake_sums):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    _, _, sums = _fake_split(mirror, corrupt="train-images-idx3-ubyte.gz")
    fake_sums(sums)
    with pytest.raises(datasets.DatasetError, match="could not download"):
        datasets.load_mnist("train", mirrors=[mirror.as_uri() + "/"])
    cache = datasets.mnist_cache_dir()
    assert not (cache / "train-images-idx3-ubyte.gz").exists()
    assert not [p for p in cache.iterdir() if p.name.endswith(".part")]


def test_offline_with_nothing_cached_gives_a_clear_message(tmp_path, fake_sums):
    _, _, sums = _fake_split(tmp_path, n=1)
    fake_sums(sums)
    with pytest.raises(datasets.DatasetError, match=r"could not download .*\(offline\?\).*Put the"):
        datasets.load_mnist("train", mirrors=["http://127.0.0.1:9/"])


def test_bad_split_name():
    with pytest.raises(ValueError, match="split must be one of"):
        datasets.load_mnist("validation")


def _flip_crc(path):
    """Flip one byte of a gzip file's CRC: gunzip then fails inside zlib (zlib.error)."""
    raw = bytearray(path.read_bytes())
    raw[-8] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_a_bit_flipped_gzip_is_the_documented_error_everywhere(tmp_path, monkeypatch, capsys):
    for name, _ in datasets.MNIST_FILES["test"]:
        (tmp_path / name).write_bytes((datasets.SHIPPED_DIR / name).read_bytes())
    _flip_crc(tmp_path / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(datasets.DatasetError, match=r"corrupt gzip.*put a good copy"):
        datasets.load_mnist("test", tmp_path)
    monkeypatch.setenv(datasets.DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(datasets.DatasetError, match="corrupt gzip"):
        datasets.load_mnist("test")
    with pytest.raises(ValueError, match="corrupt gzip"):
        read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz")
    from jaxkde.apps.cli import main

    for argv in (["sample", "-n", "2"], ["score", "--train", "test", "--limit", "5"]):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "corrupt gzip" in err[0]


def test_data_files_must_be_regular_files_of_bounded_size(tmp_path):
    endless = tmp_path / "t10k-images-idx3-ubyte.gz"
    endless.symlink_to("/dev/zero")
    with pytest.raises(datasets.DatasetError, match="not a regular file"):
        read_idx(endless)
    big = tmp_path / "big"
    big.write_bytes(b"\x00" * 2000)
    with pytest.raises(datasets.DatasetError, match="more than the 1000"):
        read_idx(big, max_bytes=1000)
    bomb = tmp_path / "bomb.gz"
    bomb.write_bytes(gzip.compress(b"\x00" * 5000))
    with pytest.raises(datasets.DatasetError, match="decompresses to more than 1000"):
        read_idx(bomb, max_bytes=1000)


@pytest.fixture
def misbehaving_mirrors(tmp_path):
    """An HTTP server on loopback: /bad/ answers garbage (BadStatusLine), /short/ promises more
    bytes than it sends (IncompleteRead), /good/ serves files from ``tmp_path / "mirror"``."""
    import socket
    import threading

    served = tmp_path / "mirror"
    served.mkdir()
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                request = conn.recv(65536).decode("latin-1")
                path = request.split(" ")[1] if " " in request else "/"
                if path.startswith("/bad/"):
                    conn.sendall(b"garbage that is no status line\r\n\r\n")
                elif path.startswith("/short/"):
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nonly this")
                else:
                    body = (served / path.rsplit("/", 1)[-1]).read_bytes()
                    head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n\r\n"
                    conn.sendall(head.encode() + body)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    server.close()


def test_broken_mirrors_are_skipped_and_leave_nothing(misbehaving_mirrors, fake_sums):
    served, base = misbehaving_mirrors
    images, _, sums = _fake_split(served)
    fake_sums(sums)
    mirrors = [f"{base}/bad/", f"{base}/short/", f"{base}/good/"]
    got, _ = datasets.load_mnist("train", mirrors=mirrors)
    np.testing.assert_array_equal(got, images)
    cache = datasets.mnist_cache_dir()
    assert sorted(p.name for p in cache.iterdir()) == sorted(sums)  # no .part files
    cache_files = list(cache.iterdir())
    for p in cache_files:
        p.unlink()
    with pytest.raises(datasets.DatasetError, match=r"could not download.*bad.*short"):
        datasets.load_mnist("train", mirrors=mirrors[:2])
    assert not list(cache.iterdir())


def test_an_interrupted_download_leaves_no_partial_file(tmp_path, fake_sums, monkeypatch):
    (tmp_path / "unused").mkdir()
    _, _, sums = _fake_split(tmp_path / "unused", n=1)
    fake_sums(sums)

    class Interrupted:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def read(self, size):
            raise KeyboardInterrupt

    monkeypatch.setattr(datasets.urllib.request, "urlopen", lambda *a, **k: Interrupted())
    with pytest.raises(KeyboardInterrupt):
        datasets.load_mnist("train", mirrors=["http://127.0.0.1:9/"])
    assert not list(datasets.mnist_cache_dir().iterdir())
