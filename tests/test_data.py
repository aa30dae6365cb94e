"""Tests for colam_core.data: loaders on tiny files in the real on-disk formats, safety of
the CIFAR unpickler, batched augmentation, seeding / resuming, and the CS-KD pair sampler."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from colam_core import data as D
from colam_core.data import discovery  # where the default places are read, at call time
from colam_core.data import (
    DATASETS,
    DataError,
    check_dataset_args,
    crop_flip_uint8,
    load_dataset,
    make_pair_batch_sampler,
    read_idx,
    stratified_subset,
)

from datafiles import (  # noqa: E402  (tests/ is on sys.path under pytest's rootdir-based import)
    CIFAR10_NAMES,
    _dump,
    idx_bytes,
    write_cifar10,
    write_cifar100,
    write_fashion,
    write_folder,
)


@pytest.fixture
def no_default_dirs(tmp_path, monkeypatch):
    """Point the download cache and Debian's Fashion-MNIST dir at empty places."""
    monkeypatch.setattr(discovery, "DEFAULT_DATA_ROOT", str(tmp_path / "cache"))
    monkeypatch.setattr(discovery, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "no-system-dir"))


@pytest.fixture(scope="module")
def synth():
    return load_dataset("synthetic", seed=0)


# --------------------------------------------------------------------------- argument errors


def test_unknown_name_lists_allowed():
    for call in (lambda: check_dataset_args("mnist"), lambda: load_dataset("mnist")):
        with pytest.raises(DataError) as ei:
            call()
        msg = str(ei.value)
        assert "'mnist'" in msg
        for name in DATASETS:
            assert name in msg
    assert issubclass(DataError, ValueError)


def test_registry_is_the_single_source(monkeypatch):
    """Names, native sizes and loaders live in one DatasetSpec each; config and load_dataset read them."""
    import ast
    import dataclasses
    from pathlib import Path

    from colam_core.config import Config
    from colam_core.data import DatasetSpec, native_size
    from colam_core.errors import ConfigError

    assert list(DATASETS) == ["digits", "fashion_mnist", "cifar10", "cifar100", "imagefolder", "synthetic"]
    for name, spec in DATASETS.items():
        assert isinstance(spec, DatasetSpec) and spec.name == name and callable(spec.loader)
        assert native_size(name) == spec.native_size
    assert DATASETS["cifar10"].native_size == 32 and DATASETS["imagefolder"].native_size is None
    with pytest.raises(ConfigError) as ei:
        Config(dataset="cifar10", image_size=64).validate()
    assert ei.value.option == "image_size" and "32" in ei.value.allowed
    # change the spec and both config validation and load_dataset follow it
    monkeypatch.setitem(DATASETS, "synthetic", dataclasses.replace(DATASETS["synthetic"], native_size=16))
    Config(dataset="synthetic", image_size=16).validate()
    with pytest.raises(ConfigError) as ei:
        Config(dataset="synthetic", image_size=8).validate()
    assert ei.value.option == "image_size" and "16" in ei.value.allowed
    with pytest.raises(DataError, match="whose images are 16x16"):
        load_dataset("synthetic", image_size=8)
    # no second list: a dataset name appears as a string constant only where it is registered
    package = Path(D.__file__).parent
    where = {p.name for p in package.glob("*.py") for node in ast.walk(ast.parse(p.read_text()))
             if isinstance(node, ast.Constant) and node.value in DATASETS}
    assert where == {"loaders.py"}


def test_missing_data_mentions_fixes(tmp_path, no_default_dirs):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as ei:
        check_dataset_args("cifar10", data_root=str(empty))
    msg = str(ei.value)
    assert str(empty / "cifar-10-batches-py") in msg and "data_root" in msg and "download" in msg
    with pytest.raises(DataError) as ei:
        load_dataset("cifar100", data_root=str(empty))
    assert "cifar-100-python" in str(ei.value) and "--download" in str(ei.value)

    with pytest.raises(DataError) as ei:
        check_dataset_args("fashion_mnist")
    msg = str(ei.value)
    for place in (tmp_path / "cache", tmp_path / "cache" / "FashionMNIST" / "raw", tmp_path / "no-system-dir"):
        assert str(place) in msg
    assert "data_root" in msg and "download=True" in msg

    with pytest.raises(DataError) as ei:
        check_dataset_args("imagefolder", download=True)
    assert "data_root" in str(ei.value) and "cannot be downloaded" in str(ei.value)
    (tmp_path / "tree" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="val/"):
        check_dataset_args("imagefolder", data_root=str(tmp_path / "tree"))
    # download=True defers the search (the download itself happens in load_dataset)
    check_dataset_args("cifar10", data_root=str(empty), download=True)


@pytest.mark.parametrize("kwargs, match", [
    (dict(name="synthetic", train_limit=0), "train_limit=0"),
    (dict(name="synthetic", test_limit=2.5), "test_limit=2.5"),
    (dict(name="synthetic", image_size=32), "image_size=32"),
    (dict(name="synthetic", device="nonsense"), "nonsense"),
    (dict(name="synthetic", train_limit=3), "smaller than the number of classes"),
    (dict(name="digits", download="yes"), "download='yes'"),
])
def test_bad_load_arguments(kwargs, match):
    with pytest.raises(DataError, match=match):
        load_dataset(**kwargs)


def test_bad_batch_arguments(synth):
    with pytest.raises(DataError, match="'bogus'.*'crop_flip'"):
        synth.train_batches(32, 0, 0, augment="bogus")
    with pytest.raises(DataError, match="batch_size=0"):
        synth.train_batches(0, 0, 0)
    with pytest.raises(DataError, match=r"start_batch=9 .*0\.\.8"):
        synth.train_batches(32, 0, 0, start_batch=9)
    with pytest.raises(DataError, match="'val'.*'train', 'test'"):
        synth.eval_batches("val")
    with pytest.raises(DataError, match="index 256"):
        synth.eval_batches("train", indices=[0, 256])
    with pytest.raises(DataError, match="pair sampler was built for 3"):
        list(synth.train_batches(8, 0, 0, batch_sampler=make_pair_batch_sampler(torch.tensor([0, 0, 1]))))


# --------------------------------------------------------------------------- CIFAR


@pytest.mark.parametrize("protocol", [2, 4])
def test_cifar10_loads(tmp_path, protocol):
    rng = np.random.default_rng(0)
    tr, ytr, te, yte = write_cifar10(tmp_path, rng, protocol=protocol)
    check_dataset_args("cifar10", data_root=str(tmp_path))
    data = load_dataset("cifar10", data_root=str(tmp_path))
    info = data.info
    assert (info.num_classes, info.in_channels, info.image_size) == (10, 3, 32)
    assert (info.num_train, info.num_test) == (20, 6)
    assert info.class_names == CIFAR10_NAMES and info.coarse_labels is None
    assert (info.default_padding, info.default_flip) == (4, True)
    assert torch.equal(data.train_labels, torch.from_numpy(ytr)) and data.train_labels.dtype == torch.long
    assert torch.equal(data.test_labels, torch.from_numpy(yte))
    x_u8 = data.uint8_tensor("train")
    assert x_u8.dtype == torch.uint8 and x_u8.shape == (20, 3, 32, 32)
    # row layout: 1024 red, 1024 green, 1024 blue values, each plane row-major
    img = data.images_uint8("train", [7])[0]
    assert img.shape == (32, 32, 3)
    for ch in range(3):
        assert np.array_equal(img[:, :, ch], tr[7, ch * 1024:(ch + 1) * 1024].reshape(32, 32))
    x, y = data.tensors("test")
    assert x.dtype == torch.float32 and x.shape == (6, 3, 32, 32) and torch.equal(y, torch.from_numpy(yte))
    mean = torch.tensor(data.mean).view(3, 1, 1)
    std = torch.tensor(data.std).view(3, 1, 1)
    assert torch.allclose(x * std + mean, torch.from_numpy(te).view(6, 3, 32, 32).float() / 255, atol=1e-5)
    # data_root may also point straight at the batches folder
    direct = load_dataset("cifar10", data_root=str(tmp_path / "cifar-10-batches-py"))
    assert torch.equal(direct.uint8_tensor("train"), x_u8)


def test_cifar10_legacy_numpy_core_names(tmp_path):
    """Files written with numpy < 2 reference numpy.core.multiarray._reconstruct."""
    rng = np.random.default_rng(1)
    tr, _, _, _ = write_cifar10(tmp_path, rng)
    p = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    raw = p.read_bytes()
    assert b"numpy._core.multiarray\n_reconstruct" in raw  # protocol-2 GLOBAL opcode, text form
    p.write_bytes(raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    data = load_dataset("cifar10", data_root=str(tmp_path))
    assert np.array_equal(data.uint8_tensor("train")[:4].reshape(4, -1).numpy(), tr[:4])


def test_cifar100_loads_with_coarse_mapping(tmp_path):
    out = write_cifar100(tmp_path, np.random.default_rng(2))
    data = load_dataset("cifar100", data_root=str(tmp_path))
    info = data.info
    assert (info.num_classes, info.num_train, info.num_test) == (100, 200, 100)
    assert info.class_names[:2] == ["fine0", "fine1"] and len(info.class_names) == 100
    assert info.coarse_names == [f"coarse{i}" for i in range(20)]
    assert info.coarse_labels == [f // 5 for f in range(100)]
    assert torch.equal(data.train_labels, torch.from_numpy(out["train"][1]).long())
    assert np.array_equal(data.uint8_tensor("test").reshape(100, -1).numpy(), out["test"][0])


def test_cifar100_inconsistent_coarse_is_refused(tmp_path):
    rng = np.random.default_rng(3)
    calls = {"n": 0}

    def flaky(f):  # fine class 7 is put in superclass 1 once and 2 otherwise
        if f == 7:
            calls["n"] += 1
            return 1 if calls["n"] == 1 else 2
        return f // 5

    write_cifar100(tmp_path, rng, coarse_of=flaky)
    with pytest.raises(DataError, match="fine class 7"):
        load_dataset("cifar100", data_root=str(tmp_path))


def _rewrite(path, mutate):
    with open(path, "rb") as f:
        obj = pickle.load(f, encoding="bytes")
    mutate(obj)
    _dump(path, obj)


@pytest.mark.parametrize("file, mutate, match", [
    ("data_batch_2", lambda o: o.__setitem__(b"data", o[b"data"][:, :3000]), r"\(n, 3072\)"),
    ("data_batch_4", lambda o: o.__setitem__(b"data", o[b"data"].astype(np.float32)), "uint8"),
    ("test_batch", lambda o: o[b"labels"].__setitem__(0, 10), r"contains 10.*0\.\.9"),
    ("data_batch_5", lambda o: o[b"labels"].pop(), "4 images in data but 3"),
    ("data_batch_1", lambda o: o.pop(b"labels"), "lacks key"),
    ("batches.meta", lambda o: o[b"label_names"].pop(), "list of 10 names"),
])
def test_cifar_bad_structure_names_file(tmp_path, file, mutate, match):
    write_cifar10(tmp_path, np.random.default_rng(4))
    _rewrite(tmp_path / "cifar-10-batches-py" / file, mutate)
    with pytest.raises(DataError, match=match) as ei:
        load_dataset("cifar10", data_root=str(tmp_path))
    assert file in str(ei.value)


def test_cifar_truncated_pickle_names_file(tmp_path):
    write_cifar10(tmp_path, np.random.default_rng(5))
    p = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(DataError, match="data_batch_3"):
        load_dataset("cifar10", data_root=str(tmp_path))


class _Evil:
    """Unpickling this calls ``func(arg)``: the classic pickle code-execution trick."""

    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return (self.func, (self.arg,))


class _Plain:
    """An ordinary class: loading it would import and instantiate arbitrary code."""


@pytest.mark.parametrize("kind", ["os.system", "builtins.exec", "test_class"])
def test_malicious_pickle_is_refused(tmp_path, kind):
    write_cifar10(tmp_path, np.random.default_rng(6))
    marker = tmp_path / "pwned"
    payload = {
        "os.system": _Evil(os.system, f"touch {marker}"),
        "builtins.exec": _Evil(exec, f"open({str(marker)!r}, 'w').write('x')"),
        "test_class": {"obj": _Plain()},  # an arbitrary (importable) class is refused too
    }[kind]
    _dump(tmp_path / "cifar-10-batches-py" / "data_batch_1",
          {b"data": payload, b"labels": [0], b"batch_label": b"evil"}, protocol=2)
    with pytest.raises(DataError, match="refusing to load") as ei:
        load_dataset("cifar10", data_root=str(tmp_path))
    assert "data_batch_1" in str(ei.value)
    assert not marker.exists()


# --------------------------------------------------------------------------- Fashion-MNIST


def test_fashion_mnist_gz_and_plain(tmp_path, no_default_dirs):
    rng = np.random.default_rng(7)
    root_gz = tmp_path / "gz"
    arrays = write_fashion(root_gz / "FashionMNIST" / "raw", rng, gz=True)
    data = load_dataset("fashion_mnist", data_root=str(root_gz))
    info = data.info
    assert (info.num_classes, info.in_channels, info.image_size, info.num_train, info.num_test) == (10, 1, 28, 12, 6)
    assert info.class_names[0] == "T-shirt/top" and info.class_names[9] == "Ankle boot"
    assert (info.default_padding, info.default_flip) == (2, True)
    x = data.uint8_tensor("train")
    assert x.shape == (12, 1, 28, 28) and x.dtype == torch.uint8
    assert np.array_equal(x[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(data.test_labels.numpy(), arrays["t10k-labels-idx1-ubyte"])

    root_plain = tmp_path / "plain"
    arrays = write_fashion(root_plain, rng, gz=False, n_train=10, n_test=4)
    data = load_dataset("fashion_mnist", data_root=str(root_plain))
    assert data.info.num_train == 10
    assert np.array_equal(data.uint8_tensor("test")[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"])


def test_fashion_mnist_corrupt_files(tmp_path, no_default_dirs):
    rng = np.random.default_rng(8)
    d = tmp_path / "fm"
    write_fashion(d, rng, gz=False)
    p = d / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(DataError, match="train-images-idx3-ubyte' is truncated"):
        load_dataset("fashion_mnist", data_root=str(d))

    d2 = tmp_path / "fm2"
    write_fashion(d2, rng, gz=True)
    p = d2 / "t10k-labels-idx1-ubyte.gz"
    p.write_bytes(p.read_bytes()[:-12])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        load_dataset("fashion_mnist", data_root=str(d2))

    bad = tmp_path / "bad-magic"
    bad.write_bytes(idx_bytes(np.zeros((2, 3), np.uint8)))
    with pytest.raises(DataError, match="magic number 0x00000802, expected 0x00000803"):
        read_idx(bad, 3)


# --------------------------------------------------------------------------- digits & synthetic


def test_digits_split_is_stratified_and_fixed():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_dataset("digits")
    info = data.info
    assert (info.num_train, info.num_test, info.num_classes, info.image_size) == (1437, 360, 10, 8)
    assert info.class_names == [str(i) for i in range(10)]
    assert (info.default_padding, info.default_flip) == (1, False)
    digits = load_digits()
    y = digits.target
    _, x_te, _, y_te = train_test_split(digits.images, y, test_size=0.2, stratify=y, random_state=0)
    assert np.array_equal(data.test_labels.numpy(), y_te)
    assert np.array_equal(data.uint8_tensor("test")[:, 0].numpy(), np.rint(x_te * 255 / 16).astype(np.uint8))
    total = np.bincount(y, minlength=10)
    test_counts = np.bincount(y_te, minlength=10)
    assert np.all(np.abs(test_counts - 0.2 * total) <= 1)
    assert int(data.uint8_tensor("train").max()) == 255


def test_synthetic_deterministic(synth):
    again = load_dataset("synthetic", seed=0)
    other = load_dataset("synthetic", seed=1)
    assert torch.equal(again.uint8_tensor("train"), synth.uint8_tensor("train"))
    assert not torch.equal(other.uint8_tensor("train"), synth.uint8_tensor("train"))
    info = synth.info
    assert (info.num_classes, info.in_channels, info.image_size, info.num_train, info.num_test) == (4, 1, 8, 256, 128)
    assert torch.equal(torch.bincount(synth.train_labels), torch.full((4,), 64))
    # learnable: nearest class mean on train classifies most test images correctly
    xtr, ytr = synth.tensors("train")
    xte, yte = synth.tensors("test")
    means = torch.stack([xtr[ytr == c].mean(0) for c in range(4)]).flatten(1)
    pred = torch.cdist(xte.flatten(1), means).argmin(1)
    assert (pred == yte).float().mean() > 0.9


def test_normalization_uses_train_stats(synth):
    x, _ = synth.tensors("train")
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std(unbiased=False)) - 1) < 1e-4


def test_train_limit_stratified_and_nested():
    data = load_dataset("synthetic", train_limit=40, test_limit=20)
    assert data.info.num_train == 40 and data.info.num_test == 20
    assert torch.equal(torch.bincount(data.train_labels), torch.full((4,), 10))
    labels = torch.arange(10).repeat_interleave(torch.arange(10, 20))  # unbalanced, 145 samples
    small, big = stratified_subset(labels, 30), stratified_subset(labels, 60)
    assert set(small.tolist()) <= set(big.tolist())
    assert torch.equal(stratified_subset(labels, 60), big)
    counts = torch.bincount(labels[big], minlength=10).float()
    assert torch.all((counts - 60 * torch.bincount(labels).float() / 145).abs() <= 1.0)


# --------------------------------------------------------------------------- augmentation


def _windows(img: torch.Tensor, p: int):
    """All (2p+1)^2 crops of the zero-padded image, unflipped and flipped."""
    c, h, w = img.shape
    padded = F.pad(img, (p, p, p, p))
    for oy in range(2 * p + 1):
        for ox in range(2 * p + 1):
            win = padded[:, oy:oy + h, ox:ox + w]
            yield win
            yield win.flip(-1)


def test_crop_flip_is_shifted_flipped_copy():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (400, 2, 5, 7), dtype=torch.uint8, generator=g)  # nonzero, non-square
    p = 2
    out, prm = crop_flip_uint8(x, p, True, torch.Generator().manual_seed(1), return_params=True)
    assert out.shape == x.shape and out.dtype == torch.uint8
    for i in range(x.shape[0]):
        dy, dx, fl = int(prm["dy"][i]), int(prm["dx"][i]), bool(prm["flip"][i])
        win = F.pad(x[i], (p, p, p, p))[:, dy + p:dy + p + 5, dx + p:dx + p + 7]
        assert torch.equal(out[i], win.flip(-1) if fl else win)
    for i in range(20):  # independent of the reported parameters
        assert any(torch.equal(out[i], w) for w in _windows(x[i], p))
    seen = set(zip(prm["dy"].tolist(), prm["dx"].tolist()))
    assert seen == {(a, b) for a in range(-p, p + 1) for b in range(-p, p + 1)}
    assert 0 < int(prm["flip"].sum()) < 400
    # same generator seed -> same output; no crop/no flip -> unchanged
    assert torch.equal(out, crop_flip_uint8(x, p, True, torch.Generator().manual_seed(1)))
    assert torch.equal(crop_flip_uint8(x, 0, False, torch.Generator()), x)
    flipped, prm = crop_flip_uint8(x, 0, True, torch.Generator().manual_seed(2), return_params=True)
    assert torch.equal(flipped[prm["flip"]], x[prm["flip"]].flip(-1))
    assert torch.equal(flipped[~prm["flip"]], x[~prm["flip"]])
    cropped, prm = crop_flip_uint8(x, 1, False, torch.Generator().manual_seed(3), return_params=True)
    assert not prm["flip"].any()


def test_train_batches_are_augmented_windows_of_indexed_images(synth):
    mean, std = synth.mean[0], synth.std[0]
    raw = synth.uint8_tensor("train")
    x, y, idx = next(iter(synth.train_batches(32, epoch=0, seed=5, augment="crop_flip")))
    assert x.dtype == torch.float32 and x.shape == (32, 1, 8, 8)
    assert y.dtype == torch.long and idx.dtype == torch.long
    assert torch.equal(y, synth.train_labels[idx])
    back = torch.round((x * std + mean) * 255).to(torch.uint8)
    for i in range(32):
        assert any(torch.equal(back[i], w) for w in _windows(raw[idx[i]], synth.info.default_padding))
    x_none, _, idx_none = next(iter(synth.train_batches(32, epoch=0, seed=5, augment="none")))
    assert torch.equal(idx_none, idx)
    assert torch.allclose(x_none, synth.normalize(raw[idx]))


def _collect(it):
    return [tuple(t.clone() for t in b) for b in it]


def _same(a, b):
    return len(a) == len(b) and all(all(torch.equal(u, v) for u, v in zip(p, q)) for p, q in zip(a, b))


def test_seeding_and_resume(synth):
    full = _collect(synth.train_batches(40, epoch=3, seed=7))
    assert len(full) == synth.num_batches(40) == 7
    assert _same(full, _collect(synth.train_batches(40, epoch=3, seed=7)))
    assert _same(full[4:], _collect(synth.train_batches(40, epoch=3, seed=7, start_batch=4)))
    assert _collect(synth.train_batches(40, epoch=3, seed=7, start_batch=7)) == []
    order = torch.cat([b[2] for b in full])
    assert torch.equal(torch.sort(order).values, torch.arange(256))
    other_epoch = torch.cat([b[2] for b in _collect(synth.train_batches(40, epoch=4, seed=7))])
    other_seed = torch.cat([b[2] for b in _collect(synth.train_batches(40, epoch=3, seed=8))])
    assert not torch.equal(order, other_epoch) and not torch.equal(order, other_seed)
    dropped = _collect(synth.train_batches(40, epoch=3, seed=7, drop_last=True))
    assert len(dropped) == synth.num_batches(40, drop_last=True) == 6 and _same(dropped, full[:6])


def test_eval_batches_in_order(synth):
    batches = list(synth.eval_batches("test", batch_size=50))
    assert [b[0].shape[0] for b in batches] == [50, 50, 28]
    x, y = synth.tensors("test")
    assert torch.equal(torch.cat([b[0] for b in batches]), x)
    assert torch.equal(torch.cat([b[1] for b in batches]), y)
    assert torch.equal(torch.cat([b[2] for b in batches]), torch.arange(128))
    sub = torch.tensor([5, 3, 99])
    (xs, ys, ids), = list(synth.eval_batches("test", indices=sub))
    assert torch.equal(ids, sub) and torch.equal(xs, x[sub]) and torch.equal(ys, y[sub])
    assert synth.images_uint8("test", sub).shape == (3, 8, 8, 1)
    assert synth.to("cpu") is synth


# --------------------------------------------------------------------------- CS-KD pair sampler


def test_pair_sampler_invariants(synth):
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0] * 5 + [1] + [2] * 3 + [3] * 7)[perm]
    sampler = make_pair_batch_sampler(labels)
    batches = sampler(16, 5, torch.Generator().manual_seed(1))
    assert [len(b) for b in batches] == [10, 10, 10, 2]
    assert sampler.num_batches(16, 5) == 4 and sampler.num_batches(16, 5, drop_last=True) == 3
    originals = torch.cat([b[: len(b) // 2] for b in batches])
    assert torch.equal(torch.sort(originals).values, torch.arange(16))
    partners_seen = {}
    for epoch in range(30):
        for b in sampler(16, 5, torch.Generator().manual_seed(epoch)):
            k = len(b) // 2
            orig, part = b[:k], b[k:]
            assert torch.equal(labels[orig], labels[part])
            singleton = labels[orig] == 1
            assert torch.all((orig != part) | singleton) and torch.all(part[singleton] == orig[singleton])
            for o, q in zip(orig.tolist(), part.tolist()):
                partners_seen.setdefault(o, set()).add(q)
    big = int((labels == 3).nonzero()[0])
    assert len(partners_seen[big]) >= 5  # partners vary over the other 6 members of its class
    again = sampler(16, 5, torch.Generator().manual_seed(1))
    assert all(torch.equal(a, b) for a, b in zip(batches, again))

    # through train_batches: deterministic, resumable, labels pair up
    pair = make_pair_batch_sampler(synth.train_labels)
    full = _collect(synth.train_batches(50, 1, 2, batch_sampler=pair))
    assert len(full) == synth.num_batches(50, batch_sampler=pair) == 6
    x, y, idx = full[0]
    assert x.shape[0] == 100 and torch.equal(y[:50], y[50:])
    assert _same(full[2:], _collect(synth.train_batches(50, 1, 2, batch_sampler=pair, start_batch=2)))
    assert synth.num_batches(50, batch_sampler=pair, drop_last=True) == 5
    plain = lambda n, bs, g: list(torch.randperm(n, generator=g).split(bs))  # noqa: E731
    assert synth.num_batches(50, batch_sampler=plain) == 6


# --------------------------------------------------------------------------- ImageFolder


def test_imagefolder_loads_and_batches(tmp_path):
    write_folder(tmp_path)
    data = load_dataset("imagefolder", data_root=str(tmp_path), image_size=32, num_workers=0)
    info = data.info
    assert info.class_names == ["cat", "dog"] and (info.num_train, info.num_test) == (6, 4)  # notes.txt skipped
    assert (info.in_channels, info.image_size) == (3, 32)
    assert data.train_labels.tolist() == [0, 0, 0, 1, 1, 1]
    full = _collect(data.train_batches(4, epoch=0, seed=1))
    assert [b[0].shape for b in full] == [(4, 3, 32, 32), (2, 3, 32, 32)]
    assert all(b[0].dtype == torch.float32 for b in full)
    assert torch.equal(torch.sort(torch.cat([b[2] for b in full])).values, torch.arange(6))
    assert _same(full, _collect(data.train_batches(4, epoch=0, seed=1)))
    assert _same(full[1:], _collect(data.train_batches(4, epoch=0, seed=1, start_batch=1)))
    data.num_workers = 1  # augmentation depends only on (seed, epoch, batch), not on workers
    assert _same(full, _collect(data.train_batches(4, epoch=0, seed=1)))
    data.num_workers = 0
    x, y = data.tensors("test")
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [0, 0, 1, 1]
    ev = list(data.eval_batches("test", batch_size=3))
    assert torch.equal(torch.cat([b[0] for b in ev]), x)
    imgs = data.images_uint8("train", [0, 5])
    assert imgs.shape == (2, 32, 32, 3) and imgs.dtype == np.uint8


def test_imagefolder_errors(tmp_path):
    a = tmp_path / "a"
    write_folder(a)
    (a / "train" / "bird").mkdir()
    with pytest.raises(DataError, match=r"\['bird'\].*missing in"):
        load_dataset("imagefolder", data_root=str(a), image_size=32, num_workers=0)
    (a / "val" / "bird").mkdir()
    with pytest.raises(DataError, match="bird.*no image files"):
        load_dataset("imagefolder", data_root=str(a), image_size=32, num_workers=0)

    b = tmp_path / "b"
    write_folder(b)
    (b / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    data = load_dataset("imagefolder", data_root=str(b), image_size=32, num_workers=0)
    with pytest.raises(DataError, match="broken.png"):
        list(data.train_batches(8, 0, 0))
