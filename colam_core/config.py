"""Validated run configuration.

`Config` holds every option of a run. `Config.validate()` (called by the
trainer, the CLI and every notebook before any data is loaded) raises a
`ConfigError` naming the option, the bad value and what is allowed.
`validate_params(dict)` does the same for notebook (papermill) parameters,
which arrive as Python values or strings (`-p T 1.5`, `-r peer_samples all`).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from . import data as _data
from . import models as _models
from .errors import ConfigError, DataError
from .methods import PEER_FILTERS, available_methods
from .runs import FINGERPRINT_EXCLUDED, load_soft_label_matrix

SCHEDULES = ("multistep", "cosine", "constant")
AVERAGES = ("logits", "probs")
UPDATES = ("eval", "online")
DEVICES = ("auto", "cpu", "cuda", "mps")
AMP_MODES = ("auto", "off", "bf16", "fp16")
PRESETS = ("paper",)

# Default number of stages per method: COLAM updates its labels at stage ends,
# Label Refinery trains two generations, every other method is one stage.
DEFAULT_STAGES = {"colam": 4, "lr": 2}


@dataclass
class Config:
    """Every option of a run. Defaults are the embedded quick demo (digits)."""

    # data
    dataset: str = "digits"
    data_root: str | None = None
    download: bool = False
    train_limit: int | None = None   # class-stratified subset of the training set (quick runs)
    test_limit: int | None = None
    image_size: int | None = None    # imagefolder only (default 224)
    num_workers: int = 2             # imagefolder only
    augment: str = "auto"
    # model
    model: str = "small_cnn"
    # method
    method: str = "colam"
    epochs: int = 12
    stages: int | None = None        # None: the method's default (colam 4, lr 2, others 1)
    T: float = 1.5                   # COLAM temperature (paper Sec. 5.3: 1 to 2)
    peer_samples: int | str = "all"  # "all" or k random peers per class (paper Fig. 4a)
    average: str = "logits"          # average logits (Eq. 6) or probabilities
    update: str = "eval"             # eval pass at stage end (faithful) or online accumulation
    hard_weight: float = 0.0         # extension, not in the paper: mix one-hot into the soft label
    peer_filter: str = "all"         # extension: "correct" averages only correctly classified peers (no erasure)
    own_floor: float = 0.0           # extension: mix in one-hot only as far as needed for own-class mass >= floor
    stage1_T: float | None = None    # extension: temperature of stage 1's hard-label loss (None: T, as Eq. 4)
    ls_eps: float = 0.1              # label smoothing (Szegedy et al. 2016)
    cp_beta: float = 0.1             # confidence penalty (Pereyra et al. 2017)
    dl_alpha: float = 0.1            # DisturbLabel noise rate (Xie et al. 2016)
    ols_alpha: float = 0.5           # OLS: weight of hard CE (Zhang et al. 2021)
    cskd_T: float = 4.0              # CS-KD temperature (Yun et al. 2020)
    cskd_lambda: float = 1.0         # CS-KD weight
    fixed_targets: str | None = None  # method=fixed: "RUN_DIR:stage_K" or an .npz/.npy file (C x C)
    # optimisation
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    batch_size: int = 64
    schedule: str = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of the epochs of one training (multistep)
    gamma: float = 0.1
    warmup_epochs: int = 0
    # system
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"                # auto: bf16 on CUDA with bf16 support, fp16 + scaler on other CUDA, off on CPU/MPS
    channels_last: bool | None = None  # None: on for CUDA and CPU, off on MPS (a resumed run keeps its layout)
    compile: bool = False
    eval_batch_size: int = 512
    checkpoint_every_epoch: bool = True
    name: str | None = None
    preset: str | None = None
    extra: dict = field(default_factory=dict)

    # ------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return self.stages if self.stages is not None else DEFAULT_STAGES.get(self.method, 1)

    @property
    def generations(self) -> int:
        """Full trainings this run costs (Label Refinery: 2)."""
        return 2 if self.method == "lr" else 1

    @property
    def total_epochs(self) -> int:
        return self.epochs * self.generations

    @property
    def stage_epochs(self) -> int:
        """Epochs per stage (t in the paper); Label Refinery: one generation."""
        return self.epochs if self.method == "lr" else self.epochs // self.num_stages

    # ------------------------------------------------------------------
    def validate(self) -> "Config":
        """Check every option; raise ConfigError on the first bad one. Cheap: loads nothing."""
        def choice(opt, allowed):
            v = getattr(self, opt)
            if v not in allowed:
                raise ConfigError(opt, v, ", ".join(map(str, allowed)))

        def integer(opt, lo, optional=False):
            v = getattr(self, opt)
            if optional and v is None:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(opt, v, f"an integer >= {lo}" + (" or None" if optional else ""))

        def number(opt, lo=None, hi=None, lo_open=False, hi_open=False):
            v = getattr(self, opt)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if ok and lo is not None:
                ok = v > lo if lo_open else v >= lo
            if ok and hi is not None:
                ok = v < hi if hi_open else v <= hi
            if not ok:
                lo_s = "" if lo is None else (f"> {lo}" if lo_open else f">= {lo}")
                hi_s = "" if hi is None else (f"< {hi}" if hi_open else f"<= {hi}")
                raise ConfigError(opt, v, "a finite number " + " and ".join(s for s in (lo_s, hi_s) if s))

        def boolean(opt):
            if not isinstance(getattr(self, opt), bool):
                raise ConfigError(opt, getattr(self, opt), "true or false")

        choice("dataset", _data.DATASETS)
        choice("model", _models.available_models())
        choice("method", available_methods())
        choice("schedule", SCHEDULES)
        choice("augment", _data.AUGMENTS)
        choice("average", AVERAGES)
        choice("update", UPDATES)
        choice("peer_filter", PEER_FILTERS)
        choice("device", DEVICES)
        choice("amp", AMP_MODES)
        choice("optimizer", ("sgd",))
        if self.preset is not None:
            choice("preset", PRESETS)
        boolean("download")
        boolean("nesterov")
        boolean("compile")
        boolean("checkpoint_every_epoch")
        if self.channels_last is not None:
            boolean("channels_last")
        integer("epochs", 1)
        integer("stages", 1, optional=True)
        integer("batch_size", 2 if self.method == "cskd" else 1)
        integer("eval_batch_size", 1)
        integer("seed", 0)
        integer("warmup_epochs", 0)
        integer("num_workers", 0)
        integer("train_limit", 2, optional=True)
        integer("test_limit", 1, optional=True)
        integer("image_size", 8, optional=True)
        number("T", 0, lo_open=True)
        number("lr", 0, lo_open=True)
        number("momentum", 0, 1, hi_open=True)
        number("weight_decay", 0)
        number("gamma", 0, 1, lo_open=True)
        number("hard_weight", 0, 1)
        number("own_floor", 0, 1, hi_open=True)
        if self.stage1_T is not None:
            number("stage1_T", 0, lo_open=True)
        for opt, off in (("peer_filter", "all"), ("own_floor", 0.0), ("stage1_T", None)):
            if self.method != "colam" and getattr(self, opt) != off:
                raise ConfigError(opt, getattr(self, opt), f"{off!r} unless method is colam (a COLAM extension)")
        number("ls_eps", 0, 1)
        number("cp_beta", 0)
        number("dl_alpha", 0, 1)
        number("ols_alpha", 0, 1)
        number("cskd_T", 0, lo_open=True)
        number("cskd_lambda", 0)
        ps = self.peer_samples
        if not (ps == "all" or (isinstance(ps, int) and not isinstance(ps, bool) and ps >= 1)):
            raise ConfigError("peer_samples", ps, "'all' or an integer >= 1 (k random peers per class)")
        m = self.num_stages
        if self.method == "lr" and m != 2:
            raise ConfigError("stages", self.stages, "2 for method lr (Label Refinery trains two generations)")
        if self.method != "lr" and self.epochs % m != 0:
            raise ConfigError("epochs", self.epochs,
                              f"a multiple of stages={m} (m stages of t epochs: epochs = m * t)")
        if self.warmup_epochs >= self.epochs:
            raise ConfigError("warmup_epochs", self.warmup_epochs, f"fewer than epochs={self.epochs}")
        ms = self.milestones
        if (not isinstance(ms, (list, tuple)) or not all(isinstance(v, (int, float)) and 0 < v < 1 for v in ms)
                or list(ms) != sorted(ms)):
            raise ConfigError("milestones", ms, "increasing fractions of the training, each in (0, 1), e.g. 0.5,0.75")
        if self.method == "fixed" and not self.fixed_targets:
            raise ConfigError("fixed_targets", self.fixed_targets,
                              "'RUN_DIR:stage_K' or a path to an .npy/.npz C x C matrix (required by method fixed)")
        if self.device == "cuda":
            import torch
            if not torch.cuda.is_available():
                raise ConfigError("device", "cuda", "auto, cpu" + (", mps" if _mps_available() else "")
                                  + " (no CUDA device is available)")
        if self.device == "mps" and not _mps_available():
            raise ConfigError("device", "mps", "auto, cpu (no MPS device is available)")
        native = _data.native_size(self.dataset)
        if native is not None and self.image_size is not None and self.image_size != native:
            raise ConfigError("image_size", self.image_size, f"none or {native} for {self.dataset} (its images are "
                              f"{native}x{native}; image_size applies to imagefolder)")
        if not isinstance(self.extra, dict):
            raise ConfigError("extra", self.extra, "a dict of free-form notes")
        if self.name is not None and (not isinstance(self.name, str) or not self.name.strip()
                                      or "/" in self.name or self.name in (".", "..")):
            raise ConfigError("name", self.name, "a non-empty folder name without '/'")
        if self.data_root is not None and not isinstance(self.data_root, str):
            raise ConfigError("data_root", self.data_root, "a path (string) or None")
        if self.fixed_targets is not None and not isinstance(self.fixed_targets, str):
            raise ConfigError("fixed_targets", self.fixed_targets, "'RUN_DIR:stage_K' or a path to an .npy/.npz file")
        if self.method == "fixed":
            load_soft_label_matrix(self.fixed_targets)  # exists, numeric, square: else ConfigError
        _data.check_dataset_args(self.dataset, self.data_root, self.download)
        return self

    # ------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(unknown[0], d[unknown[0]], "known options: " + ", ".join(sorted(names)))
        d = dict(d)
        if "milestones" in d and isinstance(d["milestones"], list):
            d["milestones"] = tuple(d["milestones"])
        cfg = cls(**d)
        if cfg.preset:
            cfg = cfg.apply_preset(cfg.preset, keep=set(d))
        return cfg

    def apply_preset(self, preset: str, keep: set[str] = frozenset()) -> "Config":
        """Return a copy with the preset's values, except options named in `keep`."""
        if preset not in PRESETS:
            raise ConfigError("preset", preset, ", ".join(PRESETS))
        values = paper_recipe(self.model)
        values = {k: v for k, v in values.items() if k not in keep}
        return dataclasses.replace(self, preset=preset, **values)

    def replace(self, **kw) -> "Config":
        return dataclasses.replace(self, **kw)

    def fingerprint(self) -> dict:
        """The options that define what a run computes (a resumed run must match them)."""
        d = self.to_dict()
        for k in FINGERPRINT_EXCLUDED:
            d.pop(k, None)
        return json.loads(json.dumps(d))


# ----------------------------------------------------------------------------- values from text
def field_kinds() -> dict[str, str]:
    """Option name -> its annotation as text ("int | None", "float", ...)."""
    return {f.name: str(f.type) for f in fields(Config)}


def parse_value(name: str, raw: str, kind: str | None = None):
    """Turn a command-line / notebook string into option `name`'s type; errors name the option."""
    kind = kind if kind is not None else field_kinds()[name]
    low = raw.strip().lower()
    if name == "peer_samples":
        if low == "all":
            return "all"
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(name, raw, "'all' or an integer >= 1") from None
    if name == "milestones":
        try:
            return tuple(float(v) for v in raw.split(",") if v.strip())
        except ValueError:
            raise ConfigError(name, raw, "comma-separated fractions, e.g. 0.5,0.75") from None
    optional = kind.startswith("Optional") or "None" in kind
    if optional and low in ("none", "null", "auto", ""):
        return None
    if "bool" in kind:
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(name, raw, "true or false" + (" or auto" if optional else ""))
    if "int" in kind and "float" not in kind:
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(name, raw, "an integer" + (" or none" if optional else "")) from None
    if "float" in kind:
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(name, raw, "a number") from None
    return raw


def _coerce_param(name: str, value: Any, kind: str) -> Any:
    """A notebook parameter's value as the option's type (strings parsed like the CLI; 12.0 -> 12)."""
    if isinstance(value, str) and name not in ("extra",):
        if kind.replace(" ", "") in ("str", "str|None"):
            return None if "None" in kind and value.strip().lower() in ("none", "null") else value
        return parse_value(name, value, kind)
    if name == "milestones" and isinstance(value, list):
        return tuple(value)
    intish = ("int" in kind and "float" not in kind) or name == "peer_samples"
    if intish and isinstance(value, float) and not isinstance(value, bool):
        if value.is_integer():
            return int(value)
        raise ConfigError(name, value, "an integer" + (" or 'all'" if name == "peer_samples" else ""))
    if "float" in kind and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


# names people reach for -> the option (used only to suggest the right name in an error)
_SYNONYMS = {"temperature": "T", "temp": "T", "k": "peer_samples", "peers": "peer_samples", "m": "stages",
             "learning_rate": "lr", "wd": "weight_decay", "bs": "batch_size", "epsilon": "ls_eps", "eps": "ls_eps"}


def coerce_params(params: Mapping[str, Any]) -> dict:
    """Option values as their options' types: notebook (papermill) parameters and sweep-spec (YAML) values.

    Values may be Python values or strings (`"1.5"`, `"all"`, `"none"`, `"0.5,0.75"`, YAML's `1e-4`).
    Raises ConfigError on the first unknown name (suggesting the closest option) or unparsable value.
    """
    import difflib
    if not isinstance(params, Mapping):
        raise ConfigError("params", params, "a dict of option name -> value")
    kinds = field_kinds()
    values = {}
    for name, value in params.items():
        if name not in kinds:
            pool = {**{k.lower(): k for k in kinds}, **_SYNONYMS}
            close = difflib.get_close_matches(str(name).lower(), pool, n=1, cutoff=0.75)
            hint = f"did you mean {pool[close[0]]!r}? " if close else ""
            raise ConfigError(str(name), value, f"{hint}a configuration option: {', '.join(sorted(kinds))}")
        values[name] = _coerce_param(name, value, kinds[name])
    return values


def validate_params(params: Mapping[str, Any]) -> Config:
    """Build and validate a Config from notebook (papermill) parameters, named like Config's options.

    Values are coerced by `coerce_params`. Raises ConfigError naming the first bad parameter, its value and
    what is allowed (an unknown name suggests the closest option), before any data is loaded.
    """
    cfg = Config.from_dict(coerce_params(params))
    try:
        return cfg.validate()
    except DataError as e:
        option = "dataset" if cfg.dataset not in _data.DATASETS else "data_root"
        msg = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        raise ConfigError(option, getattr(cfg, option), msg) from None


def paper_recipe(model: str = "preact_resnet34") -> dict:
    """The paper's CIFAR training recipe (Li et al. 2022, Sec. 5): SGD momentum 0.9, weight decay 1e-4,
    lr 0.1, batch 64, 160 epochs (240 for DenseNet), multistep decay at 50% and 75%, crop+flip."""
    return dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=64,
                epochs=240 if model.startswith("densenet") else 160, schedule="multistep",
                milestones=(0.5, 0.75), gamma=0.1, augment="crop_flip")


def _mps_available() -> bool:
    import torch
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
