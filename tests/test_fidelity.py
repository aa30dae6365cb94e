"""Baselines as their authors ran them, the transfer-learning setting, calibration both ways, the ratchet warning."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from colam_core import Config, Trainer, load_run
from colam_core.cli import main
from colam_core.errors import ConfigError
from colam_core.methods import StepContext, build_method
from colam_core.metrics import expected_calibration_error
from colam_core.models import build_model

QUICK = dict(dataset="synthetic", model="small_cnn", batch_size=32, lr=0.05, device="cpu", amp="off")


# ----------------------------------------------------------------------------- Label Refinery, per crop
@pytest.fixture(scope="module")
def lr_run(tmp_path_factory):
    """Label Refinery on synthetic data with random crops; every teacher call of generation 2 recorded."""
    out = tmp_path_factory.mktemp("lr") / "r"
    calls = []
    with Trainer(Config(method="lr", epochs=2, augment="crop", **QUICK), out=out) as t:
        t.run_stage()  # generation 1
        teacher, loss = t.method.teacher, t.method.loss

        def spy_loss(logits, y, idx, ctx):
            calls.append({"epoch": ctx.epoch, "idx": idx.clone(), "x": ctx.x.clone()})
            return loss(logits, y, idx, ctx)

        def spy_teacher(x):
            out_ = teacher(x)
            calls[-1]["teacher"] = out_.clone()
            return out_

        t.method.loss, t.method.teacher = spy_loss, spy_teacher
        t.run_stage()  # generation 2
        frozen = {k: v.clone() for k, v in t.method.teacher_model.state_dict().items()}
        mode = (t.method.teacher_model.training, any(p.requires_grad for p in t.method.teacher_model.parameters()))
    return load_run(out), calls, frozen, mode


def test_lr_targets_are_the_frozen_models_output_on_each_crop(lr_run):
    run, calls, frozen, (training, grads) = lr_run
    gen1 = run.model(1)  # eval mode, from checkpoints/stage_1.pt, independently of the trainer
    assert not training and not grads
    assert all(torch.equal(frozen[k], v) for k, v in gen1.state_dict().items())  # never trained in generation 2
    assert calls and all("teacher" in c for c in calls) and {c["epoch"] for c in calls} == {3, 4}
    with torch.no_grad():
        for c in calls:
            torch.testing.assert_close(F.softmax(c["teacher"], 1), F.softmax(gen1(c["x"]), 1), atol=1e-6, rtol=1e-5)


def test_lr_targets_differ_between_two_crops_of_one_image(lr_run):
    _, calls, _, _ = lr_run
    rows = {}
    for c in calls:
        for i, k in enumerate(c["idx"].tolist()):
            rows.setdefault(k, []).append((c["x"][i], F.softmax(c["teacher"][i], 0)))
    pairs = [r for r in rows.values() if len(r) == 2 and not torch.equal(r[0][0], r[1][0])]
    assert len(pairs) > len(rows) // 2  # two epochs: most images were cropped differently
    assert all(not torch.allclose(a[1], b[1], atol=1e-7) for a, b in pairs)


def test_lr_records_its_extra_forwards_and_two_trainings(lr_run):
    run, _, _, _ = lr_run
    s = run.summary
    assert s["trainings"] == 2 and s["extra_forward_images"] == 2 * run.info.num_train  # generation 2: 2 epochs
    assert run.soft_label_keys() == ["stage_1"]  # the teacher's class means, for display


def test_lr_resumed_inside_generation_2_is_bitwise_equal(tmp_path):
    cfg = Config(method="lr", epochs=2, **QUICK)
    with Trainer(cfg, out=tmp_path / "full") as t:
        t.run()
        full = t.model.state_dict()
    with Trainer(cfg, out=tmp_path / "cut") as t:
        t.subscribe(lambda ev: ev.kind == "batch" and (ev.epoch, ev.batch) == (3, 3) and t.request_stop())
        assert t.run() is None
    with Trainer(cfg, out=tmp_path / "cut") as t:  # a new process would do the same: teacher from last.pt
        assert (t.epoch, t.batch) == (2, 3) and t.method.teacher is not None
        t.run()
        cut = t.model.state_dict()
    assert all(torch.equal(full[k], cut[k]) for k in full)


def test_lr_static_is_the_named_static_variant(tmp_path):
    with Trainer(Config(method="lr_static", epochs=2, **QUICK), out=tmp_path / "r") as t:
        s = t.run()
        assert t.method.targets.shape == (t.info.num_train, 4)
    assert s["trainings"] == 2 and s["extra_forward_images"] == 0


# ----------------------------------------------------------------------------- CS-KD
def test_cskd_forwards_the_partners_separately_without_gradients():
    labels = torch.tensor([0, 1, 0, 1])
    m = build_method(Config(method="cskd"), 2, labels, "cpu")
    calls = []
    lin = torch.nn.Linear(3, 2)

    def forward(x):
        calls.append((len(x), torch.is_grad_enabled()))
        return lin(x)

    x = torch.randn(6, 3)
    z = m.forward(forward, x, StepContext(1, 1, 0, 0, 1, False))
    assert calls == [(3, True), (3, False)]
    torch.testing.assert_close(z, lin(x))
    assert m.forwards_per_sample(1) == 2


def test_cskd_records_the_partner_forwards(tmp_path):
    with Trainer(Config(method="cskd", epochs=1, **QUICK), out=tmp_path / "r") as t:
        s = t.run()
    assert s["extra_forward_images"] == t.info.num_train


# ----------------------------------------------------------------------------- pretrained weights
@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    import torchvision
    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    files = {}
    for arch in ("resnet50", "resnet101"):
        state = getattr(torchvision.models, arch)(weights=None).state_dict()
        files[arch] = (d / f"{arch}.pth", state)
        torch.save(state, files[arch][0])
    return files


@pytest.mark.parametrize("arch", ["resnet50", "resnet101"])
def test_a_weights_file_round_trips_with_a_new_head(weights, arch):
    path, ref = weights[arch]
    model = build_model(arch, 7, image_size=64, pretrained=str(path))
    own = model.state_dict()
    for k, v in ref.items():
        if not k.startswith("fc."):
            assert torch.equal(own[k], v), k
    assert model.classifier.weight.shape == (7, 2048) and model.classifier.out_features == 7


def test_the_trainer_starts_from_the_weights_file(weights, tmp_path):
    path, ref = weights["resnet50"]
    cfg = Config(model="resnet50", pretrained=str(path), method="hl", epochs=1,
                 **{k: v for k, v in QUICK.items() if k != "model"})
    with Trainer(cfg, out=tmp_path / "r") as t:
        m = t.model
        assert torch.equal(m.layer3[1].conv2.weight.contiguous(), ref["layer3.1.conv2.weight"])
        # synthetic images are grayscale: the stem is the sum of the RGB kernels
        torch.testing.assert_close(m.conv1.weight.contiguous(), ref["conv1.weight"].sum(1, keepdim=True))
        assert m.classifier.out_features == 4


def test_a_mismatched_weights_file_fails_with_one_clear_line(weights, tmp_path, capsys):
    path, _ = weights["resnet50"]
    code = main(["train", "--dataset", "synthetic", "--model", "resnet101", "--pretrained", str(path), "--method", "hl",
                 "--epochs", "1", "--device", "cpu", "--quiet", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("error: --pretrained") and "resnet101" in err[0] and "missing" in err[0]


@pytest.mark.parametrize("kw, why", [(dict(model="small_cnn", pretrained=True), "resnet50"),
                                     (dict(model="resnet50", pretrained="/no/such/file.pth"), "existing"),
                                     (dict(model="resnet50", pretrained=3), "path")])
def test_bad_pretrained_values_name_what_is_allowed(kw, why):
    with pytest.raises(ConfigError, match=f"pretrained.*{why}"):
        Config(**kw).validate()


def test_the_transfer_preset_is_table_4():
    cfg = Config.from_dict({"preset": "transfer", "data_root": "/x", "method": "colam"})
    assert (cfg.dataset, cfg.model, cfg.pretrained, cfg.epochs, cfg.lr, cfg.batch_size, cfg.momentum,
            cfg.weight_decay) == ("imagefolder", "resnet101", True, 40, 0.01, 64, 0.9, 1e-4)
    assert Config.from_dict({"preset": "transfer", "pretrained": "w.pth"}).pretrained == "w.pth"


# ----------------------------------------------------------------------------- calibration both ways
def test_the_summary_reports_ece_at_T_and_at_1(tiny_runs):
    run = tiny_runs["colam"]  # T = 1.5
    x, y = run.data("test")
    with torch.no_grad():
        z = run.model()(x).double()
    for key, T in (("test_ece", 1.5), ("test_ece_T1", 1.0)):
        want = expected_calibration_error(F.softmax(z / T, 1).numpy(), y.numpy())
        assert run.summary[key] == pytest.approx(want, abs=1e-6), key
    assert run.summary["test_ece"] != run.summary["test_ece_T1"]


# ----------------------------------------------------------------------------- the softening ratchet
def test_the_ratchet_warning_fires_on_a_run_built_to_collapse(tmp_path):
    """4 stages of 1 epoch: every update comes before the model fits its targets, the labels stay near uniform."""
    warnings = []
    with Trainer(Config(method="colam", epochs=4, stages=4, **QUICK), out=tmp_path / "r") as t:
        t.subscribe(lambda ev: ev.kind == "warning" and warnings.append(ev))
        s = t.run()
    assert warnings and all(w.low_own_mass and w.own_mass_mean < 0.4 for w in warnings)
    assert "close to uniform" in warnings[0].message and "warn_own_mass" in warnings[0].message
    assert len(s["soft_label_warnings"]) == len(warnings) == 3
    assert all(h["own_mass_mean"] < 0.4 for h in s["soft_label_health"].values())  # 4 classes: 1/C + 0.2 (1 - 1/C)
    np.testing.assert_allclose(sorted(w.own_mass_mean for w in warnings),
                               sorted(h["own_mass_mean"] for h in s["soft_label_health"].values()), rtol=1e-6)
