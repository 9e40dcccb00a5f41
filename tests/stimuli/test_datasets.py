import gzip
import struct

import numpy as np
import pytest

from stimuli.datasets import fashion_mnist_dir, load_fashion_mnist, procedural_dataset


def write_idx(path, array):
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_is_read_from_the_env_folder(tmp_path, monkeypatch):
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([1, 0, 9]))
    monkeypatch.setenv("FASHION_MNIST_DIR", str(tmp_path))
    assert fashion_mnist_dir() == tmp_path
    data = load_fashion_mnist("test")
    assert data.images.shape == (3, 28, 28) and np.array_equal(data.images, images)
    assert data.labels.tolist() == [1, 0, 9] and data.classes[9] == "ankle boot"
    with pytest.raises(ValueError, match="Fashion-MNIST train files are missing$"):
        load_fashion_mnist("train")
    with pytest.raises(ValueError, match="^split must be 'train' or 'test', not 'val'$"):
        load_fashion_mnist("val")


def test_procedural_dataset_is_balanced_and_seeded():
    a, b = procedural_dataset(50, seed=3), procedural_dataset(50, seed=3)
    assert a.images.shape == (50, 28, 28) and a.images.dtype == np.uint8
    assert np.array_equal(a.images, b.images)
    assert np.bincount(a.labels).tolist() == [5] * 10
