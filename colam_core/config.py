"""Validated run configuration.

`Config` holds every option of a run. `Config.validate()` (called by the
trainer, the CLI and every notebook before any data is loaded) raises a
`ConfigError` naming the option, the bad value and what is allowed.
`validate_params(dict)` does the same for notebook (papermill) parameters,
which arrive as Python values or strings (`-p T 1.5`, `-r peer_samples all`).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from . import data as _data
from . import models as _models
from .errors import ConfigError, DataError
from .methods import METHOD_CLASSES, PEER_FILTERS, available_methods
from .runs import FINGERPRINT_EXCLUDED, load_json, load_soft_label_matrix

SCHEDULES = ("multistep", "cosine", "constant")
AVERAGES = ("logits", "probs")
UPDATES = ("eval", "online")
DEVICES = ("auto", "cpu", "cuda", "mps")
AMP_MODES = ("auto", "off", "bf16", "fp16")
PRESETS = ("paper", "transfer")
TRACKERS = ("tensorboard", "mlflow")  # --log (colam_core/tracking.py); each is the name of its module and its extra

MAX_SEED = 2**32 - 1        # numpy's and most tools' seed range; derived seeds (generations, batches) stay in 64 bits
MAX_IMAGE_SIZE = 4096       # imagefolder crops: 4096 x 4096 x 3 float32 is 200 MB per image already

#: the options whose value is one of a list, and where the list comes from (the registries, never a second list):
#: validate() checks them, the command line's help and the README's table show them
CHOICES = {
    "dataset": lambda: tuple(_data.DATASETS), "model": lambda: tuple(_models.available_models()),
    "method": lambda: tuple(available_methods()), "schedule": lambda: SCHEDULES,
    "augment": lambda: tuple(_data.AUGMENTS), "average": lambda: AVERAGES, "update": lambda: UPDATES,
    "peer_filter": lambda: tuple(PEER_FILTERS), "device": lambda: DEVICES, "amp": lambda: AMP_MODES,
    "optimizer": lambda: ("sgd",), "preset": lambda: PRESETS,
}

# Default number of stages per method: COLAM updates its labels at stage ends (4: our choice, docs/DEFAULTS.md),
# Label Refinery trains two generations, every other method is one stage.
DEFAULT_STAGES = {"colam": 4, "lr": 2, "lr_static": 2}


def _restarts(method: str) -> bool:
    """Label Refinery (either variant): a fresh model per stage, one stage being one full training."""
    cls = METHOD_CLASSES.get(method)
    return bool(cls is not None and cls.restart_after_stage)


@dataclass
class Config:
    """Every option of a run. Defaults are the embedded quick demo (digits); where each default comes from (the
    paper, a method's own paper, or our choice, and why): docs/DEFAULTS.md, checked by tests/test_defaults.py."""

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
    pretrained: bool | str = False   # resnet50/101: True = torchvision's ImageNet weights, or a weights file path
    # method
    method: str = "colam"
    epochs: int = 12
    stages: int | None = None        # None: the method's default (colam 4, lr 2, others 1)
    T: float = 1.5                   # COLAM temperature: our choice inside the paper's 1 to 2 (Sec. 5.3)
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
    ols_alpha: float = 0.5           # OLS: weight of hard CE (Zhang et al. 2021, their CIFAR script)
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
    amp: str = "auto"                # auto: bf16 on CUDA (fp16 + scaler without bf16), bf16 on CPUs with AMX, else off
    channels_last: bool | None = None  # None: on for CUDA and CPU, off on MPS (a resumed run keeps its layout)
    compile: bool | None = None      # None (auto): torch.compile past the device's break-even in training images
    deterministic: bool = False      # GPUs: deterministic algorithms (slower); the CPU is deterministic without it
    eval_batch_size: int = 512
    checkpoint_every_epoch: bool = True
    warn_own_mass: float = 0.2       # warn when an update's mean own-class mass is under 1/C + this * (1 - 1/C)
    name: str | None = None
    preset: str | None = None
    # tracking (mirrors of the run directory, outside the fingerprint)
    log: str | None = None           # "tensorboard", "mlflow" or both, comma-separated
    tracking_uri: str | None = None  # MLflow: a tracking URI (default: MLFLOW_TRACKING_URI, else a local SQLite store)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        for opt in ("compile", "channels_last"):  # "auto" is spelled None (as the command line parses it)
            if isinstance(getattr(self, opt), str) and getattr(self, opt).strip().lower() == "auto":
                setattr(self, opt, None)

    # ------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return self.stages if self.stages is not None else DEFAULT_STAGES.get(self.method, 1)

    @property
    def generations(self) -> int:
        """Full trainings this run costs (Label Refinery: 2)."""
        return 2 if _restarts(self.method) else 1

    @property
    def total_epochs(self) -> int:
        return self.epochs * self.generations

    @property
    def trackers(self) -> tuple[str, ...]:
        """The trackers `log` names, in order ("tensorboard,mlflow" -> ("tensorboard", "mlflow"))."""
        if not isinstance(self.log, str):
            return ()
        return tuple(t.strip().lower() for t in self.log.split(",") if t.strip() and t.strip().lower() != "none")

    @property
    def stage_epochs(self) -> int:
        """Epochs per stage (t in the paper); Label Refinery: one generation."""
        return self.epochs if _restarts(self.method) else self.epochs // self.num_stages

    # ------------------------------------------------------------------
    def validate(self) -> "Config":
        """Check every option; raise ConfigError on the first bad one. Cheap: loads nothing."""
        def choice(opt, allowed):
            v = getattr(self, opt)
            if v not in allowed:
                raise ConfigError(opt, v, ", ".join(map(str, allowed)))

        def integer(opt, lo, optional=False, hi=None):
            v = getattr(self, opt)
            if optional and v is None:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
                rng = f">= {lo}" if hi is None else f"from {lo} to {hi}"
                raise ConfigError(opt, v, f"an integer {rng}" + (" or None" if optional else ""))

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

        def boolean(opt, auto=False):
            if not isinstance(getattr(self, opt), bool):
                raise ConfigError(opt, getattr(self, opt), "true, false or auto" if auto else "true or false")

        for opt, allowed in CHOICES.items():
            if not (opt == "preset" and self.preset is None):
                choice(opt, allowed())
        boolean("download")
        boolean("nesterov")
        boolean("checkpoint_every_epoch")
        boolean("deterministic")
        for opt in ("compile", "channels_last"):
            if getattr(self, opt) is not None:
                boolean(opt, auto=True)
        integer("epochs", 1)
        integer("stages", 1, optional=True)
        integer("batch_size", 2 if self.method == "cskd" else 1)
        integer("eval_batch_size", 1)
        integer("seed", 0, hi=MAX_SEED)
        integer("warmup_epochs", 0)
        integer("num_workers", 0, hi=256)
        integer("train_limit", 2, optional=True)
        integer("test_limit", 1, optional=True)
        integer("image_size", 8, optional=True, hi=MAX_IMAGE_SIZE)
        number("T", 0, lo_open=True)
        number("lr", 0, lo_open=True)
        number("momentum", 0, 1, hi_open=True)
        number("weight_decay", 0, 1)
        number("gamma", 0, 1, lo_open=True)
        number("hard_weight", 0, 1)
        number("own_floor", 0, 1, hi_open=True)
        number("warn_own_mass", 0, 1)
        self._check_pretrained()
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
        if _restarts(self.method) and m != 2:
            raise ConfigError("stages", self.stages, f"2 for method {self.method} (Label Refinery trains two "
                              "generations)")
        if not _restarts(self.method) and self.epochs % m != 0:
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
        if self.amp == "fp16" and self._device_type() != "cuda":
            raise ConfigError("amp", self.amp, f"auto, off or bf16 on device {self.device!r} (fp16 mixed precision "
                              "with its loss scaler needs CUDA)")
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
        self._validate_tracking()
        _data.check_dataset_args(self.dataset, self.data_root, self.download)
        return self

    def _validate_tracking(self) -> None:
        names = self.trackers
        if (self.log is not None and not isinstance(self.log, str)) or len(set(names)) != len(names) or any(
                t not in TRACKERS for t in names):
            raise ConfigError("log", self.log, "none, or tracker names separated by commas: " + ", ".join(TRACKERS))
        for t in names:
            if importlib.util.find_spec(t) is None:
                raise ConfigError("log", self.log, f"a tracker whose package is installed ({t}: "
                                  f"`pip install 'colam-workbench[{t}]'`)")
        if self.tracking_uri is not None and (not isinstance(self.tracking_uri, str) or "mlflow" not in names):
            raise ConfigError("tracking_uri", self.tracking_uri, "none, or an MLflow tracking URI together with "
                              "--log mlflow")

    def _check_pretrained(self) -> None:
        v = self.pretrained
        if v is False:
            return
        if not (v is True or (isinstance(v, str) and v.strip())):
            raise ConfigError("pretrained", v, "false, true (torchvision's ImageNet weights) or a weights file path")
        supported = _models.available_models(pretrained=True)
        if self.model not in supported:
            raise ConfigError("pretrained", v, f"false for model {self.model!r} (ImageNet weights exist for "
                              f"{', '.join(supported)})")
        if isinstance(v, str):
            import os
            if not os.path.isfile(v):
                raise ConfigError("pretrained", v, "true or the path of an existing weights file (a state dict "
                                  "saved with torch.save)")

    def _device_type(self) -> str:
        if self.device != "auto":
            return self.device
        import torch
        return "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"

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
        values = paper_recipe(self.model) if preset == "paper" else transfer_recipe()
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


# ----------------------------------------------------------------------------- where options come from
OPTIONS_FILE_LIMIT = 1 << 20  # a JSON file of options is a few hundred bytes


def read_options_file(path) -> dict:
    """The options in a JSON file (`--config`): a regular file of at most 1 MiB holding one object."""
    try:
        loaded = load_json(path, OPTIONS_FILE_LIMIT)
    except (OSError, ValueError) as e:
        raise ConfigError("config", path, f"a readable JSON file of options of at most {OPTIONS_FILE_LIMIT} bytes "
                          f"({type(e).__name__}: {str(e)[:160]})") from None
    if not isinstance(loaded, dict):
        raise ConfigError("config", path, "a JSON object of options, e.g. {\"T\": 1.5}")
    return loaded


def check_out(out: str | None, resume: str | None = None) -> Path | None:
    """The run directory `--out` names: not empty (that would fall back to the default folder), and with
    `--resume` nothing else than the resumed folder (a run stays in its folder)."""
    if out is None:
        return Path(resume) if resume else None
    if not isinstance(out, (str, Path)) or not str(out).strip():
        raise ConfigError("out", out, "a folder path (an empty one is never replaced by the default folder)")
    if resume and os.path.abspath(out) != os.path.abspath(resume):
        raise ConfigError("out", out, f"nothing, or {resume}: --resume continues a run in its own folder (copy the "
                          "folder first to continue it elsewhere)")
    return Path(out)


# ----------------------------------------------------------------------------- values from text
def field_kinds() -> dict[str, str]:
    """Option name -> its annotation as text ("int | None", "float", ...)."""
    return {f.name: str(f.type) for f in fields(Config)}


# numbers as written in ASCII: Python's int() and float() would also read "1_5" as 15 and Arabic-Indic digits
_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_FLOAT_TEXT = re.compile(r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)", re.I)


def parse_int(raw: str) -> int:
    """An integer written with the ASCII digits 0-9 (a sign allowed); anything else is a ValueError."""
    if not _INT_TEXT.fullmatch(raw.strip()):
        raise ValueError(raw)
    return int(raw)


def parse_float(raw: str) -> float:
    """A number written with the ASCII digits 0-9, '.', an exponent, inf or nan; anything else is a ValueError."""
    if not _FLOAT_TEXT.fullmatch(raw.strip()):
        raise ValueError(raw)
    return float(raw)


def parse_value(name: str, raw: str, kind: str | None = None):
    """Turn a command-line / notebook string into option `name`'s type; errors name the option."""
    kind = kind if kind is not None else field_kinds()[name]
    low = raw.strip().lower()
    if name == "peer_samples":
        if low == "all":
            return "all"
        try:
            return parse_int(raw)
        except ValueError:
            raise ConfigError(name, raw, "'all' or an integer >= 1") from None
    if name == "pretrained":  # true / false, or the path of a weights file
        return {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False,
                "off": False, "none": False}.get(low, raw)
    if name == "milestones":
        try:
            return tuple(parse_float(v) for v in raw.split(",") if v.strip())
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
            return parse_int(raw)
        except ValueError:
            raise ConfigError(name, raw, "an integer (digits 0-9)" + (" or none" if optional else "")) from None
    if "float" in kind:
        try:
            return parse_float(raw)
        except ValueError:
            raise ConfigError(name, raw, "a number (digits 0-9, e.g. 1.5 or 1e-4)") from None
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
        if option == "data_root":  # the files are missing: say what is allowed before where it looked
            msg = f"a folder holding the {cfg.dataset} files, or download=True. {msg}"
        raise ConfigError(option, getattr(cfg, option), msg) from None


def paper_recipe(model: str = "preact_resnet34") -> dict:
    """Preset `paper`: the CIFAR training recipe. The paper states (Sec. 4.2) SGD with momentum 0.9, weight decay
    1e-4, lr 0.1, batch 64 and 160 epochs (240 for DenseNet), with random crop + flip. It does not state the decay
    schedule: dividing the lr by 10 at 50% and 75% of the epochs is our choice (the common CIFAR schedule, the one
    the CS-KD and OLS reference scripts use). Provenance of every value: docs/DEFAULTS.md."""
    return dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=64,
                epochs=240 if model.startswith("densenet") else 160, schedule="multistep",
                milestones=(0.5, 0.75), gamma=0.1, augment="crop_flip")


def transfer_recipe() -> dict:
    """Preset `transfer`: the paper's transfer-learning setting (Table 4). The paper states ResNet-101 started from
    ImageNet weights and fine-tuned for 40 epochs at lr 0.01, batch 64, momentum 0.9, weight decay 1e-4. Our
    choices where it is silent: an `imagefolder` data set (`data_root` with `train/` and `val/`), 224-pixel random
    resized crops + flip for training (resize + center crop for evaluation), the same step schedule as `paper`."""
    return dict(dataset="imagefolder", model="resnet101", pretrained=True, optimizer="sgd", lr=0.01, momentum=0.9,
                weight_decay=1e-4, batch_size=64, epochs=40, schedule="multistep", milestones=(0.5, 0.75), gamma=0.1,
                augment="crop_flip")


def _mps_available() -> bool:
    import torch
    return bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
