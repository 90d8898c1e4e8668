"""The IDX reader on tiny handmade files."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from jaxkde.datasets import read_idx


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
        (gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x02ab")[:-6], "corrupt gzip"),
    ],
)
def test_rejects_malformed_files(tmp_path, payload, match):
    (tmp_path / "bad").write_bytes(payload)
    with pytest.raises(ValueError, match=match):
        read_idx(tmp_path / "bad")


def test_shared_mnist_test_split(mnist_test_images):
    assert mnist_test_images.shape == (10000, 784)
    assert mnist_test_images.dtype == np.uint8
