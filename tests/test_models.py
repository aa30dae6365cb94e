"""Tests for colam_core.models: registry, feature/classifier contract, FLOPs."""

from __future__ import annotations

import ast
import functools
import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from colam_core import models
from colam_core.models import (
    MODELS,
    ClassifierModel,
    available_models,
    build_model,
    count_flops,
    register_model,
)
from colam_core.models import registry

# name -> penultimate dimension D, in registration order
EXPECTED_DIMS = {
    "small_cnn": 128,
    "resnet20": 64,
    "resnet56": 64,
    "preact_resnet18": 512,
    "preact_resnet34": 512,
    "wrn40_4": 256,
    "densenet_bc_100": 342,
    "resnext29_8x64d": 1024,
    "resnet50": 2048,
    "resnet101": 2048,
}

HEAVY = {"wrn40_4", "densenet_bc_100", "resnext29_8x64d", "resnet50", "resnet101"}
IMAGENET = {"resnet50", "resnet101"}


def _model_params():
    for name in available_models():
        marks = [pytest.mark.slow] if name in HEAVY else []
        yield pytest.param(name, id=name, marks=marks)


def _input_spec(name: str) -> tuple[int, int]:
    """(batch, image_size) used for a model: ImageNet ResNets at 64x64, batch 1."""
    return (1, 64) if name in IMAGENET else (2, 32)


def test_registry_names():
    assert available_models() == list(EXPECTED_DIMS)  # registration order
    assert list(MODELS) == list(EXPECTED_DIMS)
    assert all(callable(b) for b in MODELS.values())
    assert available_models(pretrained=True) == sorted(IMAGENET, reverse=True) == ["resnet50", "resnet101"]


@pytest.mark.parametrize("name", list(_model_params()))
def test_model_contract(name):
    torch.manual_seed(0)
    num_classes = 7
    batch, size = _input_spec(name)
    model = build_model(name, num_classes=num_classes, in_channels=3, image_size=size)
    d = EXPECTED_DIMS[name]

    assert isinstance(model, ClassifierModel)
    assert isinstance(model.classifier, nn.Linear)
    assert model.num_features == d == model.classifier.in_features
    assert model.num_classes == num_classes
    assert tuple(model.classifier.weight.shape) == (num_classes, d)
    # `features` must stay a method, never a submodule.
    assert "features" not in dict(model.named_children())
    assert callable(model.features)

    x = torch.randn(batch, 3, size, size)
    model.eval()
    with torch.no_grad():
        logits = model(x)
        feats = model.features(x)
        ff = model.forward_features(x)
        head = model.forward_head(feats)  # an already pooled (B, D) input passes through
        pre = model.forward_head(feats, pre_logits=True)
        logits2 = model(x)
    assert logits.shape == (batch, num_classes)
    assert feats.shape == (batch, d)
    assert ff.dim() == 4 and ff.shape[:2] == (batch, d)
    assert pre.shape == (batch, d)
    assert torch.equal(pre, feats)
    assert torch.allclose(logits, model.classifier(feats), atol=1e-5, rtol=1e-5)
    assert torch.allclose(logits, head, atol=1e-5, rtol=1e-5)
    assert torch.equal(logits, logits2)  # eval mode is deterministic
    assert torch.isfinite(logits).all()

    # One training step's forward/backward works and reaches the templates,
    # without consuming the global RNG (no dropout by default).
    model.train()
    rng_before = torch.get_rng_state()
    out = model(x)
    assert torch.equal(rng_before, torch.get_rng_state())
    out.logsumexp(dim=1).mean().backward()
    assert model.classifier.weight.grad is not None
    assert model.classifier.weight.grad.shape == (num_classes, d)


@pytest.mark.parametrize(
    "in_channels,image_size",
    [(1, 8), (1, 28), (1, 32), (3, 8), (3, 28), (3, 32)],
)
def test_small_cnn_input_sizes(in_channels, image_size):
    model = build_model("small_cnn", 10, in_channels=in_channels, image_size=image_size).eval()
    x = torch.randn(2, in_channels, image_size, image_size)
    with torch.no_grad():
        assert model(x).shape == (2, 10)
        assert model.features(x).shape == (2, 128)


@pytest.mark.parametrize("name", ["resnet20", "resnet56", "preact_resnet18"])
def test_cifar_models_grayscale_28(name):
    model = build_model(name, 10, in_channels=1, image_size=28).eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        logits = model(x)
        assert logits.shape == (2, 10)
        assert torch.allclose(logits, model.classifier(model.features(x)), atol=1e-5)
    assert model.features(x).shape == (2, EXPECTED_DIMS[name])


@pytest.mark.slow
def test_resnet50_grayscale():
    model = build_model("resnet50", 10, in_channels=1, image_size=64).eval()
    assert model.conv1.in_channels == 1
    with torch.no_grad():
        assert model(torch.randn(1, 1, 64, 64)).shape == (1, 10)


def test_same_seed_same_init():
    torch.manual_seed(123)
    a = build_model("resnet20", 10)
    torch.manual_seed(123)
    b = build_model("resnet20", 10)
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)


def test_standard_init():
    model = build_model("resnet20", 10)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)
    assert torch.all(model.classifier.bias == 0)


@pytest.mark.parametrize("name", list(_model_params()))
def test_forward_features_map_and_head(name):
    """timm's split: forward_features -> (B, D, H, W) map; forward_head pools, then classifies."""
    torch.manual_seed(0)
    batch, size = _input_spec(name)
    model = build_model(name, num_classes=5, in_channels=3, image_size=size).eval()
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        fmap = model.forward_features(x)
        pooled = model.forward_head(fmap, pre_logits=True)
        logits = model(x)
        assert fmap.dim() == 4 and fmap.shape[:2] == (batch, model.classifier.in_features)
        assert fmap.shape[2] > 1 and fmap.shape[3] > 1  # not pooled inside the backbone
        assert pooled.shape == (batch, model.classifier.in_features)
        assert torch.allclose(pooled, fmap.mean(dim=(2, 3)), atol=1e-6)  # global average pooling
        assert torch.equal(model.classifier(pooled), logits)
        assert torch.equal(model.forward_head(fmap), logits)
        assert torch.equal(model.features(x), pooled)


def test_forward_head_rejects_other_ranks():
    model = build_model("resnet20", 10).eval()
    with pytest.raises(ValueError, match="forward_head"):
        model.forward_head(torch.zeros(2, 64, 8))


# ------------------------------------------------------------------- registry


class _Tiny(ClassifierModel):
    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 4, 3, padding=1)
        self._set_head(4, num_classes)

    def forward_features(self, x):
        return self.conv(x)


@pytest.fixture
def scratch_registry():
    """Names registered inside a test are removed again afterwards."""
    before = list(MODELS)
    yield
    for name in [n for n in MODELS if n not in before]:
        del MODELS[name]
        registry._HAS_PRETRAINED.discard(name)
    assert list(MODELS) == before


def test_register_model_forms(scratch_registry):
    calls = []

    @register_model
    def _tiny_a(num_classes, in_channels=3, image_size=32):
        calls.append(("a", num_classes, in_channels, image_size))
        return _Tiny(num_classes, in_channels)

    @register_model("tiny-b")
    def _unused_name(num_classes, in_channels=3, image_size=32):
        calls.append(("b", num_classes, in_channels, image_size))
        return _Tiny(num_classes, in_channels)

    @register_model(pretrained=True)
    def _tiny_c(num_classes, in_channels=3, image_size=32, pretrained=False):
        calls.append(("c", pretrained))
        return _Tiny(num_classes, in_channels)

    assert callable(_tiny_a) and _tiny_a.__name__ == "_tiny_a"  # returned unchanged
    assert available_models()[-3:] == ["_tiny_a", "tiny-b", "_tiny_c"]
    assert "_unused_name" not in MODELS
    assert available_models(pretrained=True) == ["resnet50", "resnet101", "_tiny_c"]

    # build_model passes `pretrained` only to builders registered with pretrained=True
    assert isinstance(build_model("_tiny_a", 3, in_channels=1, image_size=9), _Tiny)
    build_model("tiny-b", 4)
    build_model("_tiny_c", 5, pretrained=True)
    build_model("_tiny_c", 5)
    assert calls == [("a", 3, 1, 9), ("b", 4, 3, 32), ("c", True), ("c", False)]
    model = build_model("tiny-b", 4).eval()
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(model(x), model.classifier(model.forward_head(model.forward_features(x), pre_logits=True)))


def test_register_duplicate_name_raises(scratch_registry):
    builder = MODELS["resnet20"]

    def resnet20(num_classes, in_channels=3, image_size=32):  # pragma: no cover - never registered
        return _Tiny(num_classes, in_channels)

    with pytest.raises(ValueError, match="'resnet20' is already registered"):
        register_model(resnet20)
    with pytest.raises(ValueError, match="already registered"):
        register_model("small_cnn", pretrained=True)(resnet20)
    assert MODELS["resnet20"] is builder
    assert "small_cnn" not in available_models(pretrained=True)

    register_model("_tiny_dup")(resnet20)
    with pytest.raises(ValueError, match="'_tiny_dup' is already registered"):
        register_model("_tiny_dup")(resnet20)


def test_register_model_bad_name(scratch_registry):
    with pytest.raises(ValueError, match="non-empty string"):
        register_model("")(lambda *a: None)
    with pytest.raises(ValueError, match="non-empty string"):
        register_model(functools.partial(_Tiny, 3))  # no __name__ and no name given
    with pytest.raises(TypeError, match="callable"):
        register_model("_tiny_not_callable")(42)
    assert "_tiny_not_callable" not in MODELS


def test_unknown_model_message():
    with pytest.raises(ValueError) as info:
        build_model("foo", 10)
    msg = str(info.value)
    assert "'foo'" in msg
    assert "resnet20" in msg and "densenet_bc_100" in msg


@pytest.mark.parametrize("num_classes", [1, 0, -3])
def test_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match=f"num_classes.*{num_classes}"):
        build_model("small_cnn", num_classes)


@pytest.mark.parametrize("in_channels", [2, 4, 0])
def test_bad_in_channels(in_channels):
    with pytest.raises(ValueError, match=f"in_channels.*{in_channels}"):
        build_model("small_cnn", 10, in_channels=in_channels)


def test_numpy_integer_arguments():
    np = pytest.importorskip("numpy")
    model = build_model("small_cnn", np.int64(10), in_channels=np.int64(1), image_size=np.int32(8))
    assert model.classifier.out_features == 10 and type(model.num_classes) is int
    with pytest.raises(ValueError, match="in_channels"):
        build_model("small_cnn", 10, in_channels=True)


def test_bad_image_size():
    with pytest.raises(ValueError, match="image_size.*4"):
        build_model("small_cnn", 10, image_size=4)


def test_pretrained_unsupported_for_cifar_models():
    with pytest.raises(ValueError, match="resnet20"):
        build_model("resnet20", 10, pretrained=True)


@pytest.mark.parametrize("name", [n for n in EXPECTED_DIMS if n not in IMAGENET])
def test_pretrained_rejected_without_weights(name, monkeypatch):
    """One check in build_model, before the builder runs or the network is touched."""
    def fail(*args, **kwargs):  # pragma: no cover - must not be reached
        raise AssertionError("builder or network reached")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fail)
    monkeypatch.setitem(MODELS, name, fail)
    expected = (
        f"no pretrained weights are available for '{name}'; pretrained=True is only supported for: resnet50, resnet101"
    )
    with pytest.raises(ValueError) as info:
        build_model(name, 10, pretrained=True)
    assert str(info.value) == expected
    assert name not in available_models(pretrained=True)


def test_models_package_imports():
    """The models package imports only the standard library, torch, torchvision and colam_core.errors."""
    allowed = set(sys.stdlib_module_names) | {"torch", "torchvision"}
    pkg = Path(models.__file__).parent
    files = sorted(pkg.glob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "registry.py", "base.py"}
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert max(len(line) for line in text.splitlines()) <= 120, path.name
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1, f"{path.name}: import from outside the package"
            elif isinstance(node, ast.ImportFrom):
                assert node.module.split(".")[0] in allowed or node.module == "colam_core.errors", path.name
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] in allowed or alias.name == "colam_core.errors", path.name


def test_not_pretrained_never_downloads(monkeypatch):
    def fail(*args, **kwargs):  # pragma: no cover - must not be reached
        raise AssertionError("network access with pretrained=False")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fail)
    model = build_model("resnet50", 10, image_size=64)
    assert model.classifier.out_features == 10


def test_pretrained_offline_raises_runtime_error(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="pretrained weights.*resnet50"):
        build_model("resnet50", 10, pretrained=True)


@pytest.mark.slow
def test_pretrained_loading_path(monkeypatch):
    """With a (fake) cached ImageNet state dict, weights are loaded and adapted."""
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.resnet50(weights=None).state_dict()
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: reference)

    same = build_model("resnet50", 1000, pretrained=True)
    assert torch.equal(same.classifier.weight, reference["fc.weight"])
    assert torch.equal(same.layer4[0].conv1.weight, reference["layer4.0.conv1.weight"])

    gray = build_model("resnet50", 10, in_channels=1, pretrained=True)
    assert gray.classifier.weight.shape == (10, 2048)
    assert torch.allclose(gray.conv1.weight, reference["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(gray.layer1[0].conv2.weight, reference["layer1.0.conv2.weight"])


# ---------------------------------------------------------------------- FLOPs


def test_count_flops_linear():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    assert count_flops(model, (3, 2, 2)) == 2 * 12 * 5


def test_count_flops_conv_hand_checked():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),  # 5x5 out: 4*25*(3*9) = 2700 MACs
        nn.Conv2d(4, 8, 3, padding=1, groups=2),  # 8*25*(2*9) = 3600 MACs
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),  # 16 MACs
    )
    assert count_flops(model, (3, 5, 5)) == 2 * (2700 + 3600 + 16)


def test_count_flops_resnet20_matches_paper():
    model = build_model("resnet20", 10)
    model.train()
    macs = count_flops(model, (3, 32, 32)) / 2
    assert abs(macs - 41e6) / 41e6 < 0.10  # ~40.8 M MACs (He et al., 2016)
    assert model.training  # mode restored


def _hooked_flops(model, shape) -> int:
    """An independent count: forward hooks on every Conv2d / Linear (the counter count_flops replaced)."""
    macs = []

    def hook(m, inputs, out):
        per_out = m.in_features if isinstance(m, nn.Linear) else (m.in_channels // m.groups) * math.prod(m.kernel_size)
        macs.append(out.numel() * per_out)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    return 2 * sum(macs)


@pytest.mark.parametrize("name", ["resnet20", "preact_resnet34", "densenet_bc_100"])
def test_flop_counter_mode_equals_the_module_count(name):
    model = build_model(name, 100)
    assert count_flops(model, (3, 32, 32)) == _hooked_flops(model, (3, 32, 32))


@pytest.mark.parametrize("arch", ["resnet50", "resnet101"])
def test_torchvision_resnets_load_strictly_into_torchvision(arch):
    import torchvision
    torch.manual_seed(0)
    ours = build_model(arch, 10, image_size=64)
    theirs = getattr(torchvision.models, arch)(num_classes=10)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert ours.classifier is ours.fc
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours.eval()(x), theirs.eval()(x), atol=1e-5)


def test_torchvision_resnet_still_loads_format_1_head_names():
    model = build_model("resnet50", 10, image_size=64)
    old = {(k.replace("fc.", "classifier.", 1) if k.startswith("fc.") else k): v.clone()
           for k, v in model.state_dict().items()}
    old["classifier.bias"] += 1.0
    model.load_state_dict(old, strict=True)
    assert torch.equal(model.fc.bias, old["classifier.bias"])


def test_count_flops_bad_shape():
    with pytest.raises(ValueError, match="input_shape"):
        count_flops(nn.Linear(2, 2), (2, 2))


def test_module_docstring_cites_papers():
    doc = models.__doc__ or ""
    for ref in ("He", "Zagoruyko", "Huang", "Xie", "Müller"):
        assert ref in doc
