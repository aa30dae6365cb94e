"""Tests of colam_core.analysis: hand-computed values on tiny arrays and a fake run."""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from colam_core import analysis as A


# ---------------------------------------------------------------------------
# a minimal fake run: tiny model with features/classifier, in-memory data
# ---------------------------------------------------------------------------

class TinyNet(nn.Module):
    def __init__(self, in_dim=6, dim=4, num_classes=4, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Linear(in_dim, dim), nn.Tanh())
        self.classifier = nn.Linear(dim, num_classes)

    def features(self, x):
        return self.body(x.flatten(1))

    def forward(self, x):
        return self.classifier(self.features(x))


class FakeRun:
    def __init__(self, path=None, n_per_class=30, num_classes=4, seed=0):
        self.path = path
        self.class_names = [f"c{i}" for i in range(num_classes)]
        self.output_temperature = 1.0
        g = torch.Generator().manual_seed(seed)
        y = torch.arange(num_classes).repeat_interleave(n_per_class)
        perm = torch.randperm(len(y), generator=g)
        self._y = y[perm]
        self._x = torch.randn(len(y), 6, generator=g) + self._y[:, None].float()
        self._model = TinyNet(num_classes=num_classes, seed=seed)
        self._model.eval()
        self.model_calls = []

    def model(self, stage=None):
        self.model_calls.append(stage)
        return self._model

    def data(self, split):
        return self._x, self._y


# ---------------------------------------------------------------------------
# template plane
# ---------------------------------------------------------------------------

def _random_plane_inputs(seed=0, C=5, D=7, N=11):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(C, D)), rng.normal(size=C), rng.normal(size=(N, D))


def test_template_plane_geometry():
    w, b, h = _random_plane_inputs()
    classes = (3, 0, 2)
    out = A.template_plane(w, b, h, classes)
    Q, T, P = out["basis"], out["templates"], out["points"]
    assert Q.shape == (w.shape[1] + 1, 2) and T.shape == (3, 2) and P.shape == (len(h), 2)
    # orthonormal basis
    np.testing.assert_allclose(Q.T @ Q, np.eye(2), atol=1e-12)
    # the templates are exactly the triangle vertices: distances preserved
    w_aug = np.concatenate([w, b[:, None]], axis=1)[list(classes)]
    for i in range(3):
        for j in range(3):
            np.testing.assert_allclose(np.linalg.norm(T[i] - T[j]), np.linalg.norm(w_aug[i] - w_aug[j]), atol=1e-12)
    # the centroid of the augmented templates is the origin
    np.testing.assert_allclose(T.mean(axis=0), [0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(out["centroid"], w_aug.mean(axis=0), atol=1e-12)
    # orientation: b along +x from a, c above
    assert T[1, 0] > T[0, 0] and abs(T[1, 1] - T[0, 1]) < 1e-12
    assert T[2, 1] > T[0, 1]
    # points are orthogonal projections: [h,1] - centroid = P @ Q^T + residual orthogonal to the plane
    h_aug = np.concatenate([h, np.ones((len(h), 1))], axis=1) - out["centroid"]
    resid = h_aug - P @ Q.T
    np.testing.assert_allclose(resid @ Q, 0.0, atol=1e-12)


def test_template_plane_sample_equal_to_template_projects_onto_it():
    w, _, _ = _random_plane_inputs(seed=1, C=4, D=5)
    b = np.array([1.0, 1.0, 1.0, 1.0])          # bias 1, so [w_i, 1] is the augmented template
    h = np.stack([w[1], w[2], w[0]])              # samples equal to templates 1, 2, 0
    out = A.template_plane(w, b, h, classes=(0, 1, 2))
    np.testing.assert_allclose(out["points"][0], out["templates"][1], atol=1e-12)
    np.testing.assert_allclose(out["points"][1], out["templates"][2], atol=1e-12)
    np.testing.assert_allclose(out["points"][2], out["templates"][0], atol=1e-12)
    # the centroid itself maps to (0, 0)
    c = out["centroid"]
    np.testing.assert_allclose(A.template_plane(w, b, c[None, :-1], (0, 1, 2))["points"], [[0.0, 0.0]], atol=1e-12)


def test_template_plane_hand_values_and_errors():
    # 2-D templates, zero bias: a=(0,0), b=(2,0), c=(0,2); augmented with 0
    w = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    out = A.template_plane(w, None, np.array([[1.0, 1.0]]), (0, 1, 2))
    # centroid (2/3, 2/3, 0); basis x = (1,0,0), y = (0,1,0); the activation gets a 1 appended
    np.testing.assert_allclose(out["templates"], [[-2 / 3, -2 / 3], [4 / 3, -2 / 3], [-2 / 3, 4 / 3]], atol=1e-12)
    np.testing.assert_allclose(out["points"], [[1 / 3, 1 / 3]], atol=1e-12)
    with pytest.raises(ValueError, match="collinear"):
        A.template_plane(np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]]), None, np.zeros((1, 2)), (0, 1, 2))
    with pytest.raises(ValueError, match="three distinct"):
        A.template_plane(w, None, np.zeros((1, 2)), (0, 1, 1))


def test_template_plane_for_run_matches_pure_function():
    run = FakeRun()
    pts, tmpl = A.template_plane_for_run(run, stage=2, classes=(1, 3, 0), per_class=10, seed=5)
    assert run.model_calls == [2]
    assert list(pts.columns) == ["x", "y", "label", "class_name", "index"]
    assert list(tmpl.columns) == ["x", "y", "label", "class_name"]
    assert pts["label"].tolist() == [1] * 10 + [3] * 10 + [0] * 10
    assert (run._y.numpy()[pts["index"].to_numpy()] == pts["label"].to_numpy()).all()
    assert tmpl["class_name"].tolist() == ["c1", "c3", "c0"]
    # same numbers as the pure function on the same samples
    model = run._model
    with torch.no_grad():
        feats = model.features(run._x[pts["index"].tolist()]).numpy()
    ref = A.template_plane(model.classifier.weight.detach().numpy(), model.classifier.bias.detach().numpy(),
                           feats, (1, 3, 0))
    np.testing.assert_allclose(pts[["x", "y"]].to_numpy(), ref["points"], atol=1e-5)
    np.testing.assert_allclose(tmpl[["x", "y"]].to_numpy(), ref["templates"], atol=1e-5)
    # seeded: same call, same samples; a class's sample does not depend on the other classes chosen
    pts2, _ = A.template_plane_for_run(run, classes=(1, 2, 0), per_class=10, seed=5)
    assert pts2[pts2.label == 1]["index"].tolist() == pts[pts.label == 1]["index"].tolist()


# ---------------------------------------------------------------------------
# features and sampling
# ---------------------------------------------------------------------------

def test_penultimate_features_and_logits_batched():
    run = FakeRun()
    model = run._model
    model.train()
    f = A.penultimate_features(model, run._x, batch_size=7)
    z = A.logits(model, run._x, batch_size=7)
    assert model.training  # mode restored
    with torch.no_grad():
        np.testing.assert_allclose(f, model.features(run._x).numpy(), atol=1e-6)
        np.testing.assert_allclose(z, model(run._x).numpy(), atol=1e-6)
    assert f.dtype == np.float32 and f.shape == (120, 4) and z.shape == (120, 4)


def test_sample_indices():
    y = np.array([0, 1, 0, 1, 2, 0, 2])
    idx = A.sample_indices(y, classes=(2, 0), per_class=2, seed=0)
    assert y[idx].tolist() == [2, 2, 0, 0]
    assert np.array_equal(idx, A.sample_indices(y, classes=(2, 0), per_class=2, seed=0))
    assert A.sample_indices(y, per_class=None).tolist() == [0, 2, 5, 1, 3, 4, 6]


# ---------------------------------------------------------------------------
# embeddings and their cache
# ---------------------------------------------------------------------------

def test_pca_embedding_deterministic_and_correct():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 6)) * np.array([10.0, 3.0, 0.1, 0.1, 0.1, 0.1])
    Z1 = A.embed(X, method="pca", seed=0)
    Z2 = A.embed(X, method="pca", seed=1)
    assert Z1.shape == (50, 2)
    np.testing.assert_array_equal(Z1, Z2)
    # same as projecting the centred data on the top-2 principal axes (up to sign)
    Xc = X - X.mean(axis=0)
    _, _, Vt = np.linalg.svd(Xc, full_matrices=False)
    ref = Xc @ Vt[:2].T
    np.testing.assert_allclose(np.abs(Z1), np.abs(ref), atol=1e-8)
    with pytest.raises(ValueError, match="umap' or 'pca"):
        A.embed(X, method="tsne")


def test_embedding_cache_memory_and_disk(tmp_path, monkeypatch):
    calls = []
    real_embed = A.embed

    def counting_embed(features, **kw):
        calls.append(kw["method"])
        return real_embed(features, **kw)

    monkeypatch.setattr(A.embedding, "embed", counting_embed)  # where EmbeddingCache looks it up
    run = FakeRun(path=tmp_path)
    cache = A.EmbeddingCache()
    df1 = cache.get(run, 1, "train", (0, 2), "pca", per_class=8, seed=0)
    df2 = cache.get(run, "stage_1", "train", [0, 2], "pca", per_class=8, seed=0)
    assert len(calls) == 1
    pd.testing.assert_frame_equal(df1, df2)
    assert list(df1.columns) == ["x", "y", "label", "class_name", "index"]
    assert df1["label"].tolist() == [0] * 8 + [2] * 8
    assert set(df1["class_name"]) == {"c0", "c2"}
    files = list((tmp_path / "cache").glob("emb_*.npz"))
    assert len(files) == 1
    # a fresh cache reads the file instead of recomputing
    df3 = A.EmbeddingCache().get(run, 1, "train", (0, 2), "pca", per_class=8, seed=0)
    assert len(calls) == 1
    pd.testing.assert_frame_equal(df1, df3)
    # a different key recomputes
    cache.get(run, 1, "train", (0, 2), "pca", per_class=8, seed=1)
    assert len(calls) == 2
    # a rewritten checkpoint invalidates the cached embedding of that stage
    ckpt = tmp_path / "checkpoints" / "stage_1.pt"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"x")
    cache.get(run, 1, "train", (0, 2), "pca", per_class=8, seed=0)
    assert len(calls) == 3
    # caches without disk, or runs without a path, stay in memory
    mem = A.EmbeddingCache(disk=False)
    mem.get(FakeRun(path=None), None, "train", None, "pca", per_class=5)
    mem.get(FakeRun(path=None), None, "train", None, "pca", per_class=5)
    assert len(calls) == 4 and len(mem) == 1


@pytest.mark.slow
def test_umap_embedding_and_cache(tmp_path):
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(30, 5)), rng.normal(size=(30, 5)) + 8.0])
    Z1 = A.embed(X, method="umap", seed=0, n_neighbors=10)
    Z2 = A.embed(X, method="umap", seed=0, n_neighbors=10)
    assert Z1.shape == (60, 2) and np.isfinite(Z1).all()
    np.testing.assert_allclose(Z1, Z2)
    # the two blobs stay apart
    c0, c1 = Z1[:30].mean(axis=0), Z1[30:].mean(axis=0)
    spread = max(Z1[:30].std(axis=0).max(), Z1[30:].std(axis=0).max())
    assert np.linalg.norm(c0 - c1) > 2 * spread
    df = A.EmbeddingCache().get(FakeRun(path=tmp_path), None, "train", (0, 1, 2), "umap", per_class=20)
    assert len(df) == 60 and np.isfinite(df[["x", "y"]].to_numpy()).all()


# ---------------------------------------------------------------------------
# distances
# ---------------------------------------------------------------------------

def test_template_distances_hand_values():
    w = np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    d = A.template_distances(w)
    s2 = math.sqrt(2.0)
    expected = np.array([[0, s2, math.sqrt(2 - s2)], [s2, 0, math.sqrt(2 - s2)], [math.sqrt(2 - s2), math.sqrt(2 - s2), 0]])
    np.testing.assert_allclose(d.to_numpy(), expected, atol=1e-12)
    assert list(d.index) == [0, 1, 2]
    named = A.template_distances(w, classes=(2, 0), class_names=["a", "b", "c"])
    assert list(named.index) == ["c", "a"] and list(named.columns) == ["c", "a"]
    np.testing.assert_allclose(named.loc["c", "a"], math.sqrt(2 - s2))


def test_template_distances_for_run():
    run = FakeRun()
    d = A.template_distances_for_run(run, stage=1, classes=(0, 1))
    assert list(d.index) == ["c0", "c1"]
    w = run._model.classifier.weight.detach().numpy().astype(np.float64)
    w = w / np.linalg.norm(w, axis=1, keepdims=True)
    np.testing.assert_allclose(d.loc["c0", "c1"], np.linalg.norm(w[0] - w[1]), atol=1e-6)


def test_adt_adc_hand_values():
    feats = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]])
    labels = np.array([0, 0, 1, 1])
    w = np.array([[1.0, 1.0], [0.0, 2.0]])
    adt, adc = A.adt_adc(feats, labels, w, classes=(0, 1), normalize=False)
    # ADT: class 0 samples (1,0),(3,0); class 1 samples (0,2),(0,4)
    np.testing.assert_allclose(adt.loc[0, 0], (1.0 + math.sqrt(5)) / 2)           # to (1,1)
    np.testing.assert_allclose(adt.loc[0, 1], (math.sqrt(5) + math.sqrt(13)) / 2)  # to (0,2)
    np.testing.assert_allclose(adt.loc[1, 0], (math.sqrt(2) + math.sqrt(10)) / 2)
    np.testing.assert_allclose(adt.loc[1, 1], (0.0 + 2.0) / 2)
    # ADC: centroids (2,0) and (0,3)
    np.testing.assert_allclose(adc.loc[0, 0], 1.0)
    np.testing.assert_allclose(adc.loc[0, 1], (math.sqrt(10) + math.sqrt(18)) / 2)
    np.testing.assert_allclose(adc.loc[1, 0], (math.sqrt(8) + math.sqrt(20)) / 2)
    np.testing.assert_allclose(adc.loc[1, 1], 1.0)
    # normalized (the default, as the paper): class 0 features -> (1,0), class 1 -> (0,1); templates (1,1)/sqrt2, (0,1)
    adt_n, adc_n = A.adt_adc(feats, labels, w, classes=(0, 1), class_names=["a", "b"])
    np.testing.assert_allclose(adt_n.loc["a", "a"], math.sqrt(2 - math.sqrt(2)))
    np.testing.assert_allclose(adt_n.loc["a", "b"], math.sqrt(2))
    np.testing.assert_allclose(adt_n.loc["b", "a"], math.sqrt(2 - math.sqrt(2)))
    np.testing.assert_allclose(adt_n.loc["b", "b"], 0.0, atol=1e-12)
    np.testing.assert_allclose(adc_n.to_numpy(), [[0.0, math.sqrt(2)], [math.sqrt(2), 0.0]], atol=1e-12)


def test_adt_adc_for_run_uses_all_samples():
    run = FakeRun()
    adt, adc = A.adt_adc_for_run(run, classes=(0, 1), names=False)
    model = run._model
    with torch.no_grad():
        f = model.features(run._x).numpy()
    ref_adt, ref_adc = A.adt_adc(f, run._y.numpy(), model.classifier.weight.detach().numpy(), (0, 1))
    np.testing.assert_allclose(adt.to_numpy(), ref_adt.to_numpy(), atol=1e-5)
    np.testing.assert_allclose(adc.to_numpy(), ref_adc.to_numpy(), atol=1e-5)


# ---------------------------------------------------------------------------
# calibration
# ---------------------------------------------------------------------------

def test_ece_perfectly_calibrated_is_zero():
    # confidence 0.75 and 3 of 4 right; confidence 1.0 and all right
    probs = np.array([[0.75, 0.25]] * 4 + [[0.0, 1.0]] * 2)
    labels = np.array([0, 0, 0, 1, 1, 1])
    assert A.expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)


def test_ece_over_confident_hand_value():
    # bin of conf 0.9: 2 samples, both right (gap 0.1); bin of conf 0.6: 2 samples, both wrong (gap 0.6)
    probs = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]])
    labels = np.array([0, 1, 1, 0])
    assert A.expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.5 * 0.1 + 0.5 * 0.6)
    # all at confidence 0.9, half right: 0.4
    probs = np.array([[0.9, 0.1]] * 4)
    assert A.expected_calibration_error(probs, np.array([0, 0, 1, 1])) == pytest.approx(0.4)


def test_reliability_bins():
    probs = np.array([[0.9, 0.1], [0.1, 0.9], [0.6, 0.4], [0.4, 0.6]])
    bins = A.reliability_bins(probs, np.array([0, 1, 1, 0]), n_bins=10)
    assert list(bins.columns) == ["bin_lower", "bin_upper", "confidence", "accuracy", "count"]
    assert len(bins) == 10 and bins["count"].sum() == 4
    # 0.6 lies in (0.5, 0.6], 0.9 in (0.8, 0.9]
    assert bins.loc[5, "count"] == 2 and bins.loc[5, "accuracy"] == 0.0
    assert bins.loc[8, "count"] == 2 and bins.loc[8, "accuracy"] == 1.0
    np.testing.assert_allclose(bins.loc[8, "confidence"], 0.9)
    assert bins["confidence"].isna().sum() == 8


def test_calibration_for_run():
    run = FakeRun()
    out = A.calibration_for_run(run, n_bins=5)
    p, y = A.predict_probs(run)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert out["accuracy"] == pytest.approx(np.mean(p.argmax(1) == y))
    assert 0.0 <= out["ece"] <= 1.0 and out["nll"] > 0 and len(out["bins"]) == 5
    # a higher temperature gives flatter probabilities
    p_hot, _ = A.predict_probs(run, temperature=4.0)
    assert p_hot.max(axis=1).mean() < p.max(axis=1).mean()
    # calibration both ways: ece of softmax(z / T) at the run's T, ece_T1 of softmax(z)
    run.output_temperature = 4.0
    hot = A.calibration_for_run(run, n_bins=5)
    assert hot["temperature"] == 4.0 and out["temperature"] == 1.0 and out["ece_T1"] == out["ece"]
    assert hot["ece"] == pytest.approx(A.expected_calibration_error(p_hot, y, 5))
    assert hot["ece_T1"] == pytest.approx(A.expected_calibration_error(p, y, 5)) != hot["ece"]


# ---------------------------------------------------------------------------
# soft-label structure
# ---------------------------------------------------------------------------

SOFT = np.array([
    [0.6, 0.3, 0.1, 0.0],
    [0.2, 0.5, 0.2, 0.1],
    [0.1, 0.1, 0.7, 0.1],
    [0.0, 0.0, 0.5, 0.5],
])


def test_top_k_soft():
    t = A.top_k_soft(SOFT, k=2, class_names=list("abcd"))
    assert list(t.columns) == ["class", "class_name", "rank", "other", "other_name", "mass"]
    row0 = t[t["class"] == 0]
    assert row0["other"].tolist() == [1, 2] and row0["mass"].tolist() == [0.3, 0.1]
    # ties keep the lower id first: class 1 has 0.2 on both 0 and 2
    assert t[t["class"] == 1]["other"].tolist() == [0, 2]
    assert t[t["class"] == 1]["other_name"].tolist() == ["a", "c"]
    with_self = A.top_k_soft(SOFT, k=1, include_self=True)
    assert with_self["other"].tolist() == [0, 1, 2, 2]
    assert len(A.top_k_soft(SOFT, k=10)) == 4 * 3


def test_superclass_share_constructed():
    t = A.superclass_share(SOFT, coarse_labels=[0, 0, 1, 1])
    np.testing.assert_allclose(t["share"], [0.3 / 0.4, 0.2 / 0.5, 0.1 / 0.3, 0.5 / 0.5])
    np.testing.assert_allclose(t["chance_share"], [1 / 3] * 4)
    np.testing.assert_allclose(t["lift"], t["share"] * 3)
    np.testing.assert_allclose(t["off_diagonal_mass"], [0.4, 0.5, 0.3, 0.5])
    s = A.superclass_share_summary(t)
    mean = (0.75 + 0.4 + 1 / 3 + 1.0) / 4
    assert s["mean_share"] == pytest.approx(mean)
    assert s["mean_chance_share"] == pytest.approx(1 / 3)
    assert s["ratio"] == pytest.approx(mean * 3)
    # a one-hot row has no off-diagonal mass: NaN share
    assert np.isnan(A.superclass_share(np.eye(3), [0, 0, 1])["share"]).all()


def test_sharpness_flags():
    stage_1 = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1], [0.05, 0.05, 0.9]])
    stage_2 = np.array([[0.9, 0.05, 0.05], [0.28, 0.32, 0.40], [0.3, 0.25, 0.45]])
    t = A.sharpness({"stage_1": stage_1, "stage_2": stage_2}, class_names=["cat", "dog", "fox"])
    assert list(t.columns) == ["stage", "class", "class_name", "own_mass", "entropy", "max_other_mass",
                               "max_other_class", "max_other_name", "flag", "flag_reason"]
    assert not t[t.stage == "stage_1"]["flag"].any()
    dog = t[(t.stage == "stage_2") & (t["class"] == 1)].iloc[0]
    assert dog.flag and dog.own_mass == pytest.approx(0.32)
    assert dog.max_other_class == 2 and dog.max_other_mass == pytest.approx(0.40)
    assert "below fox (0.40)" in dog.flag_reason and "< 0.50" in dog.flag_reason
    fox = t[(t.stage == "stage_2") & (t["class"] == 2)].iloc[0]
    assert fox.flag and "below" not in fox.flag_reason and "0.45 < 0.50" in fox.flag_reason
    cat = t[(t.stage == "stage_2") & (t["class"] == 0)].iloc[0]
    assert not cat.flag and cat.flag_reason == ""
    expected_entropy = -(0.9 * math.log(0.9) + 2 * 0.05 * math.log(0.05))
    assert cat.entropy == pytest.approx(expected_entropy)
    # one-hot rows: zero entropy, no NaN
    assert A.sharpness({"s": np.eye(2)})["entropy"].tolist() == [0.0, 0.0]


def test_drift_tv_by_hand():
    s1 = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    s2 = np.array([[0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.0, 0.5, 0.5]])
    d = A.drift({"stage_1": s1, "stage_2": s2})
    assert list(d.columns) == ["from_stage", "to_stage", "class", "class_name", "tv"]
    np.testing.assert_allclose(d["tv"], [0.2, 0.0, 0.4])
    assert d["from_stage"].unique().tolist() == ["stage_1"] and d["to_stage"].unique().tolist() == ["stage_2"]
    dh = A.drift({"stage_1": s1, "stage_2": s2}, include_hard=True)
    assert dh["from_stage"].unique().tolist() == ["hard", "stage_1"]
    np.testing.assert_allclose(dh["tv"][:3], [0.2, 0.2, 0.2])


def test_own_mass_table():
    s1 = np.diag([0.9, 0.8]) + np.array([[0, 0.1], [0.2, 0]])
    s2 = np.diag([0.7, 0.6]) + np.array([[0, 0.3], [0.4, 0]])
    t = A.own_mass_table({"stage_1": s1, "stage_2": s2}, class_names=["a", "b"])
    assert list(t.columns) == ["stage_1", "stage_2"] and list(t.index) == ["a", "b"]
    np.testing.assert_allclose(t.to_numpy(), [[0.9, 0.7], [0.8, 0.6]])


def test_soft_labels_by_stage():
    class R:
        def soft_label_keys(self):
            return ["stage_1", "stage_2"]

        def soft_labels(self, k):
            return np.eye(2) * (1 if k == "stage_1" else 0.5)

    d = A.soft_labels_by_stage(R())
    assert list(d) == ["stage_1", "stage_2"] and d["stage_2"][0, 0] == 0.5


# ---------------------------------------------------------------------------
# learning curves and results tables
# ---------------------------------------------------------------------------

def test_learning_curves():
    h = pd.DataFrame({
        "epoch": [1, 2, 3, 4, 5], "stage": [1, 1, 2, 2, 3],
        "lr": [0.1] * 5, "train_loss": [2.0, 1.5, 1.2, 1.0, 0.9], "train_acc": [0.3, 0.5, 0.6, 0.7, 0.75],
        "test_loss": [2.1, 1.6, np.nan, 1.1, 1.0], "test_acc": [0.3, 0.5, np.nan, 0.7, 0.72],
        "seconds": [1.0] * 5, "images_per_s": [100.0] * 5,
    })
    curves, bounds = A.learning_curves(h)
    assert bounds == [2, 4]
    assert list(curves.columns) == ["epoch", "stage", "metric", "value"]
    assert len(curves) == 5 * 7 - 2  # NaN test values dropped
    assert curves["metric"].unique().tolist() == ["lr", "train_loss", "train_acc", "test_loss", "test_acc",
                                                  "seconds", "images_per_s"]
    ta = curves[curves.metric == "train_acc"]
    assert ta["value"].tolist() == [0.3, 0.5, 0.6, 0.7, 0.75] and ta["stage"].tolist() == [1, 1, 2, 2, 3]
    only, _ = A.learning_curves(h, metrics=["test_acc"])
    assert only["metric"].unique().tolist() == ["test_acc"]
    with pytest.raises(KeyError):
        A.learning_curves(h, metrics=["nope"])


def test_results_table():
    rows = [
        dict(method="hl", seed=0, dataset="c10", test_acc=0.70),
        dict(method="hl", seed=1, dataset="c10", test_acc=0.72),
        dict(method="colam", seed=0, dataset="c10", test_acc=0.75),
        dict(method="colam", seed=0, dataset="c100", test_acc=0.50),
        dict(method="colam", seed=1, dataset="c100", test_acc=0.54),
    ]
    t = A.results_table(rows, scale=100, decimals=2)
    assert t["method"].tolist() == ["hl", "colam"]  # order of first appearance
    hl = t.iloc[0]
    assert hl["mean"] == pytest.approx(71.0) and hl["std"] == pytest.approx(math.sqrt(2.0)) and hl["n"] == 2
    assert hl["mean ± std"] == "71.00 ± 1.41"
    t2 = A.results_table(pd.DataFrame(rows), by=["dataset", "method"])
    assert list(zip(t2.dataset, t2.method)) == [("c10", "hl"), ("c10", "colam"), ("c100", "colam")]
    one = t2.iloc[1]
    assert one["n"] == 1 and np.isnan(one["std"]) and one["mean ± std"] == "0.7500"
    assert t2.iloc[2]["mean ± std"] == "0.5200 ± 0.0283"
    with pytest.raises(KeyError):
        A.results_table(rows, metric="ece")


def test_analysis_does_not_import_front_end():
    import sys
    import subprocess

    code = ("import sys, colam_core.analysis; "
            "bad=[m for m in ('plotly','ipywidgets','workbench','umap') if m in sys.modules]; "
            "assert not bad, bad")
    env = dict(os.environ)
    subprocess.run([sys.executable, "-c", code], check=True, env=env,
                   cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_analysis_never_trains():
    """analysis sits below training (the layers in pyproject.toml): no expected_accuracy re-export, no trainer."""
    import subprocess
    code = ("import sys, colam_core.analysis as A; assert not hasattr(A, 'expected_accuracy'); "
            "bad=[m for m in sys.modules if m.startswith(('colam_core.training', 'colam_core.sweeps'))]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True,
                   cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

