"""Writers of tiny data sets in the real on-disk formats (CIFAR pickles, IDX, ImageFolder PNGs), shared by tests."""
from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# --------------------------------------------------------------------------- file writers


def _dump(path, obj, protocol=2):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def write_cifar10(root, rng, n_per_batch=4, n_test=6, protocol=2):
    """Write cifar-10-batches-py/ like the real one; return (train_data, train_labels, test_data, test_labels)."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    datas, labels = [], []
    for i in range(1, 6):
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        lab = [int(v) for v in rng.integers(0, 10, n_per_batch)]
        _dump(d / f"data_batch_{i}", {b"batch_label": f"training batch {i} of 5".encode(), b"labels": lab,
                                      b"data": data, b"filenames": [b"x.png"] * n_per_batch}, protocol)
        datas.append(data)
        labels += lab
    test = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    test_lab = [int(v) for v in rng.integers(0, 10, n_test)]
    _dump(d / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": test_lab, b"data": test,
                             b"filenames": [b"y.png"] * n_test}, protocol)
    _dump(d / "batches.meta", {b"num_cases_per_batch": 10000,
                               b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_vis": 3072}, protocol)
    return np.concatenate(datas), np.array(labels), test, np.array(test_lab)


def write_cifar100(root, rng, coarse_of=lambda f: f // 5, reps=(2, 1)):
    """cifar-100-python/ with reps = (train, test) samples per fine class; coarse = coarse_of(fine)."""
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    out = {}
    for split, n in zip(("train", "test"), reps):
        fine = np.tile(np.arange(100), n)
        rng.shuffle(fine)
        data = rng.integers(0, 256, (fine.size, 3072), dtype=np.uint8)
        coarse = [int(coarse_of(int(f))) for f in fine]
        _dump(d / split, {b"filenames": [b"a.png"] * fine.size, b"batch_label": split.encode(),
                          b"fine_labels": [int(f) for f in fine], b"coarse_labels": coarse, b"data": data})
        out[split] = (data, fine)
    _dump(d / "meta", {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                       b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]})
    return out


def idx_bytes(arr: np.ndarray) -> bytes:
    """Serialise a uint8 array in the IDX format (big-endian header)."""
    header = struct.pack(">I", 0x0800 | arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_fashion(d, rng, gz, n_train=12, n_test=6):
    d.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    for name, arr in arrays.items():
        raw = idx_bytes(arr)
        if gz:
            (d / (name + ".gz")).write_bytes(gzip.compress(raw))
        else:
            (d / name).write_bytes(raw)
    return arrays


def write_confusable_fashion(d, rng, n_per_class=40, n_test=20, minority=1, majority=0, ratio=4):
    """Fashion-MNIST IDX files built to make COLAM erase a class: every class is its own bright square on noise,
    except `minority`, whose images are drawn exactly like `majority`'s and which has `ratio` times fewer of
    them. No model can tell the two apart, so it predicts `majority` for both, and the minority's class-mean
    logits peak at the majority class."""
    def images(labels):
        x = rng.integers(0, 40, (len(labels), 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            c = majority if c == minority else c
            r, q = divmod(int(c), 4)
            x[i, 7 * r:7 * r + 7, 7 * q:7 * q + 7] = 230
        return x
    counts = [n_per_class * ratio if c == majority else n_per_class // ratio if c == minority else n_per_class
              for c in range(10)]
    y_tr = rng.permutation(np.repeat(np.arange(10), counts)).astype(np.uint8)
    y_te = np.repeat(np.arange(10), n_test).astype(np.uint8)
    d.mkdir(parents=True, exist_ok=True)
    for name, arr in {"train-images-idx3-ubyte": images(y_tr), "train-labels-idx1-ubyte": y_tr,
                      "t10k-images-idx3-ubyte": images(y_te), "t10k-labels-idx1-ubyte": y_te}.items():
        (d / name).write_bytes(idx_bytes(arr))
    return y_tr


def write_png(path, size, color):
    from PIL import Image

    arr = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    arr[...] = color
    arr[: size[1] // 2, : size[0] // 3] = 255 - np.array(color, dtype=np.uint8)  # asymmetric detail
    Image.fromarray(arr).save(path)


def write_folder(root, classes=("cat", "dog"), n_train=3, n_val=2):
    for split, n in (("train", n_train), ("val", n_val)):
        for ci, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True)
            for k in range(n):
                write_png(d / f"img{k}.png", (40 + 4 * k, 36 + 2 * ci), (30 * ci + 10 * k, 100, 200 - 20 * k))
    (root / "train" / classes[0] / "notes.txt").write_text("not an image")
