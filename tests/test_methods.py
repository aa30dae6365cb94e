"""Each method's loss against a value computed by hand (numpy) on a tiny batch; COLAM's label update."""
import math

import numpy as np
import pytest
import torch

from colam_core.config import Config, ConfigError
from colam_core.methods import StepContext, build_method, load_soft_label_matrix

C = 3
LOGITS = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-0.5, 1.5, 0.0], [1.0, 1.0, 3.0]])
Y = torch.tensor([0, 2, 1, 2])
IDX = torch.arange(4)
TRAIN_LABELS = torch.tensor([0, 2, 1, 2, 0, 1])


def ctx(stage=1, epoch=1, batch=0, last=False, num_stages=2):
    return StepContext(stage=stage, epoch=epoch, batch=batch, seed=0, num_stages=num_stages, last_epoch_of_stage=last)


def log_softmax_np(z):
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def method(name, **kw):
    return build_method(Config(method=name, **kw), C, TRAIN_LABELS, "cpu")


def hand_ce(q, z, T=1.0):
    return float(np.mean(-(q * log_softmax_np(np.asarray(z) / T)).sum(1)))


def onehot(y):
    return np.eye(C)[y.numpy()]


def test_hl():
    loss, z, y = method("hl").loss(LOGITS, Y, IDX, ctx())
    assert loss.item() == pytest.approx(hand_ce(onehot(Y), LOGITS), rel=1e-6)


def test_ls():
    eps = 0.2
    loss, _, _ = method("ls", ls_eps=eps).loss(LOGITS, Y, IDX, ctx())
    q = onehot(Y) * (1 - eps) + eps / C
    assert loss.item() == pytest.approx(hand_ce(q, LOGITS), rel=1e-6)


def test_cp():
    beta = 0.3
    loss, _, _ = method("cp", cp_beta=beta).loss(LOGITS, Y, IDX, ctx())
    lp = log_softmax_np(LOGITS)
    ent = float(np.mean(-(np.exp(lp) * lp).sum(1)))
    assert loss.item() == pytest.approx(hand_ce(onehot(Y), LOGITS) - beta * ent, rel=1e-6)


def test_dl_alpha_zero_is_hl_and_alpha_one_is_uniform_noise():
    m0 = method("dl", dl_alpha=0.0)
    assert m0.loss(LOGITS, Y, IDX, ctx())[0].item() == pytest.approx(hand_ce(onehot(Y), LOGITS), rel=1e-6)
    m1 = method("dl", dl_alpha=1.0)
    c = ctx(epoch=3, batch=5)
    g = c.generator(salt=11)
    torch.rand(4, generator=g)
    noisy = torch.randint(0, C, (4,), generator=g)
    assert m1.loss(LOGITS, Y, IDX, c)[0].item() == pytest.approx(hand_ce(onehot(noisy), LOGITS), rel=1e-6)
    # the disturbance is a function of (seed, epoch, batch): reproducible
    assert m1.loss(LOGITS, Y, IDX, c)[0].item() == m1.loss(LOGITS, Y, IDX, ctx(epoch=3, batch=5))[0].item()


def test_colam_stage1_is_hard_labels_at_temperature_T():
    T = 2.0
    loss, _, _ = method("colam", T=T).loss(LOGITS, Y, IDX, ctx())
    assert loss.item() == pytest.approx(hand_ce(onehot(Y), LOGITS, T), rel=1e-6)


def test_colam_soft_targets_and_hard_weight():
    T, w = 1.5, 0.25
    m = method("colam", T=T, hard_weight=w)
    soft = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    m.soft = soft
    q = (1 - w) * soft.numpy()[Y.numpy()] + w * onehot(Y)
    assert m.loss(LOGITS, Y, IDX, ctx(stage=2))[0].item() == pytest.approx(hand_ce(q, LOGITS, T), rel=1e-6)


def test_ols_loss_and_epoch_update():
    """As the authors' CIFAR script: the soft labels start at zero (epoch 1 is alpha * CE alone), then each class's
    label is the mean probability vector of its correctly classified samples of the epoch before."""
    m = method("ols", ols_alpha=0.5)
    loss = m.loss(LOGITS, Y, IDX, ctx())[0].item()
    assert loss == pytest.approx(0.5 * hand_ce(onehot(Y), LOGITS), rel=1e-6)
    m.on_epoch_end(ctx())
    p = np.exp(log_softmax_np(LOGITS))
    correct = p.argmax(1) == Y.numpy()  # samples 0 (class 0), 2 (class 1), 3 (class 2) are correct; 1 is not
    new = m.soft_labels
    for c in range(C):
        rows = correct & (Y.numpy() == c)
        np.testing.assert_allclose(new[c], p[rows].mean(0), rtol=1e-5)
    loss = m.loss(LOGITS, Y, IDX, ctx(epoch=2))[0].item()
    assert loss == pytest.approx(0.5 * hand_ce(onehot(Y), LOGITS) + 0.5 * hand_ce(new[Y.numpy()], LOGITS), rel=1e-5)


def test_ols_gives_a_class_with_no_correct_sample_the_uniform_label():
    m = method("ols")
    z = torch.tensor([[0.0, 5.0, 0.0], [0.0, 5.0, 0.0]])  # predicts 1 for both: class 0 wrong, class 1 right
    m.loss(z, torch.tensor([0, 1]), torch.tensor([0, 2]), ctx())
    m.on_epoch_end(ctx())
    np.testing.assert_allclose(m.soft_labels[0], np.full(C, 1 / C), rtol=1e-6)   # no correct sample of class 0
    np.testing.assert_allclose(m.soft_labels[2], np.full(C, 1 / C), rtol=1e-6)   # no sample of class 2 at all
    np.testing.assert_allclose(m.soft_labels[1], np.exp(log_softmax_np(z[1:]))[0], rtol=1e-5)


def test_cskd_loss():
    T, lam = 4.0, 1.0
    m = method("cskd", cskd_T=T, cskd_lambda=lam)
    z = LOGITS  # first two rows: samples, last two: their partners
    y = torch.tensor([0, 2, 0, 2])
    loss, zz, yy = m.loss(z, y, IDX, ctx())
    ce = hand_ce(onehot(y[:2]), z[:2])
    p_t = np.exp(log_softmax_np(z[2:] / T))
    kl = float(np.sum(p_t * (np.log(p_t) - log_softmax_np(z[:2] / T))) / 2) * T * T
    assert loss.item() == pytest.approx(ce + lam * kl, rel=1e-5)
    assert zz.shape[0] == 2 and yy.tolist() == [0, 2]


def test_lr_generation2_trains_each_crop_on_the_teachers_output_on_that_crop():
    m = method("lr")
    assert m.loss(LOGITS, Y, IDX, ctx())[0].item() == pytest.approx(hand_ce(onehot(Y), LOGITS), rel=1e-6)
    teacher = torch.nn.Linear(5, C)
    m.set_teacher(teacher, lambda x: teacher(x).float())
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
    c = ctx(stage=2)
    c.x = x
    with torch.no_grad():
        q = torch.softmax(teacher(x), 1).numpy()
    assert m.loss(LOGITS, Y, IDX, c)[0].item() == pytest.approx(hand_ce(q, LOGITS), rel=1e-6)
    assert m.forwards_per_sample(1) == 1 and m.forwards_per_sample(2) == 2


def test_lr_static_generation2_uses_per_sample_targets():
    m = method("lr_static")
    targets = torch.softmax(torch.randn(6, C, generator=torch.Generator().manual_seed(0)), 1)
    m.targets = targets
    idx = torch.tensor([5, 0, 3, 1])
    want = hand_ce(targets[idx].numpy(), LOGITS)
    assert m.loss(LOGITS, Y, idx, ctx(stage=2))[0].item() == pytest.approx(want, rel=1e-6)


def test_fixed_targets_from_a_file(tmp_path):
    mat = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]], dtype=np.float32)
    np.savez(tmp_path / "soft_labels.npz", stage_1=mat)
    m = method("fixed", fixed_targets=f"{tmp_path}:stage_1", T=1.0)
    assert m.loss(LOGITS, Y, IDX, ctx())[0].item() == pytest.approx(hand_ce(mat[Y.numpy()], LOGITS), rel=1e-6)
    with pytest.raises(ConfigError, match="stage_9"):
        load_soft_label_matrix(f"{tmp_path}:stage_9")


class FakeData:
    """eval_batches over a fixed tensor of 'images' whose logits are given by a fixed map."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def eval_batches(self, split, batch_size=512, indices=None):
        idx = torch.arange(len(self.y)) if indices is None else indices
        for i in range(0, len(idx), 2):  # tiny batches on purpose
            j = idx[i:i + 2]
            yield self.x[j], self.y[j], j


def _setup_colam(**kw):
    g = torch.Generator().manual_seed(1)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 1])
    logits = torch.randn(len(labels), C, generator=g) * 3
    cfg = Config(method="colam", **kw)
    m = build_method(cfg, C, labels, "cpu")
    infer = lambda x: x  # noqa: E731  the 'images' are the logits themselves
    return m, FakeData(logits, labels), infer, labels, logits


@pytest.mark.parametrize("T", [0.5, 1.5, 4.0])
def test_colam_all_peers_equals_softmax_of_class_mean_logits(T):
    m, data, infer, labels, logits = _setup_colam(T=T)
    soft = m.stage_end(infer, data, ctx(stage=1, num_stages=2))
    for c in range(C):
        mean = logits[labels == c].double().mean(0)
        np.testing.assert_allclose(soft[c], torch.softmax(mean / T, 0).numpy(), rtol=1e-5, atol=1e-7)


def test_colam_k_peers_uses_k_random_samples_per_class():
    m, data, infer, labels, logits = _setup_colam(T=1.5, peer_samples=2)
    peers = m.peer_indices(1)
    assert sorted(labels[peers].tolist()) == [0, 0, 1, 1, 2, 2]
    assert torch.equal(peers, m.peer_indices(1))  # seeded by stage: reproducible
    soft = m.stage_end(infer, data, ctx(stage=1, num_stages=2))
    for c in range(C):
        sel = peers[labels[peers] == c]
        mean = logits[sel].double().mean(0)
        np.testing.assert_allclose(soft[c], torch.softmax(mean / 1.5, 0).numpy(), rtol=1e-5, atol=1e-7)


def test_colam_probability_averaging():
    m, data, infer, labels, logits = _setup_colam(T=2.0, average="probs")
    soft = m.stage_end(infer, data, ctx(stage=1, num_stages=2))
    for c in range(C):
        want = torch.softmax(logits[labels == c].double() / 2.0, 1).mean(0)
        np.testing.assert_allclose(soft[c], want.numpy(), rtol=1e-5)


def test_colam_no_update_after_last_stage():
    m, data, infer, *_ = _setup_colam()
    assert m.stage_end(infer, data, ctx(stage=2, num_stages=2)) is None
    assert m.soft_labels is None


def test_colam_online_accumulates_during_last_epoch_of_stage():
    m, data, infer, labels, logits = _setup_colam(T=1.0, update="online")
    c = ctx(stage=1, last=True, num_stages=2)
    m.on_epoch_start(c)
    m.loss(logits[:6], labels[:6], torch.arange(6), c)
    m.loss(logits[6:], labels[6:], torch.arange(6, 10), c)
    soft = m.stage_end(infer, None, c)
    for k in range(C):
        np.testing.assert_allclose(soft[k], torch.softmax(logits[labels == k].double().mean(0), 0).numpy(),
                                   rtol=1e-5)


def test_epochs_must_divide_into_stages():
    with pytest.raises(ConfigError, match="epochs"):
        Config(method="colam", epochs=10, stages=4).validate()
    Config(method="colam", epochs=12, stages=4).validate()


@pytest.mark.parametrize("bad, option", [
    (dict(T=0), "T"), (dict(T=-1.0), "T"), (dict(T=float("nan")), "T"), (dict(peer_samples=0), "peer_samples"),
    (dict(peer_samples="some"), "peer_samples"), (dict(method="foo"), "method"), (dict(dataset="mnist"), "dataset"),
    (dict(model="vgg"), "model"), (dict(average="median"), "average"), (dict(update="never"), "update"),
    (dict(hard_weight=1.5), "hard_weight"), (dict(ls_eps=-0.1), "ls_eps"), (dict(batch_size=0), "batch_size"),
    (dict(lr=0), "lr"), (dict(schedule="step"), "schedule"), (dict(milestones=(0.8, 0.2)), "milestones"),
    (dict(method="lr", stages=3), "stages"), (dict(method="fixed"), "fixed_targets"), (dict(epochs=0), "epochs"),
])
def test_bad_config_names_the_option(bad, option):
    with pytest.raises(ConfigError) as e:
        Config(**bad).validate()
    assert e.value.option == option
    assert "allowed" in str(e.value)


def test_paper_preset():
    cfg = Config.from_dict({"preset": "paper", "model": "densenet_bc_100", "method": "colam"})
    assert (cfg.lr, cfg.batch_size, cfg.weight_decay, cfg.momentum, cfg.schedule) == (0.1, 64, 1e-4, 0.9, "multistep")
    assert cfg.epochs == 240 and cfg.num_stages == 4 and cfg.stage_epochs == 60
    cfg = Config.from_dict({"preset": "paper", "model": "preact_resnet34", "epochs": 80})
    assert cfg.epochs == 80  # an explicit option beats the preset
    assert math.isclose(cfg.milestones[0], 0.5)


def test_fixed_applies_hard_weight_like_colam(tmp_path):
    mat = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]], dtype=np.float32)
    np.save(tmp_path / "m.npy", mat)
    w = 0.3
    m = method("fixed", fixed_targets=str(tmp_path / "m.npy"), T=2.0, hard_weight=w)
    q = (1 - w) * mat[Y.numpy()] + w * onehot(Y)
    assert m.loss(LOGITS, Y, IDX, ctx())[0].item() == pytest.approx(hand_ce(q, LOGITS, 2.0), rel=1e-6)
