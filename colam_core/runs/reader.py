"""Run: a run directory opened for reading (load_run, load_runs)."""
from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd


from ..data import DatasetInfo, load_dataset
from ..errors import RunError
from ..models import build_model
from .layout import CHECKPOINT_DIR, CONFIG_FILE, HISTORY_COLUMNS, HISTORY_FILE, SOFT_LABELS_FILE, SUMMARY_FILE, _REQUIRED_OPTIONS, dataset_kwargs, is_stage_key, regular_file, stage_key, stage_number, stage_numbers
from .files import check_format, load_checkpoint, read_json


# ----------------------------------------------------------------------------- read side
class Run:
    """A finished (or partial) run directory opened for reading. See docs/ARCHITECTURE.md."""

    def __init__(self, path):
        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise RunError(f"{self.path} is not a run directory (no config.json); "
                           "pass the --out folder of a training run")
        self.resolved = read_json(self.path / "config.json", "config.json")
        self.format = check_format(self.resolved, self.path / "config.json")
        missing = [k for k in ("config", "dataset") if not isinstance(self.resolved.get(k), dict)]
        missing += [k for k in ("num_stages", "device") if k not in self.resolved]
        missing += [f"config.{k}" for k in _REQUIRED_OPTIONS if k not in (self.resolved.get("config") or {})]
        if missing:
            raise RunError(f"{self.path / 'config.json'} lacks {', '.join(missing)}; it was not written by training "
                           "(the run directory is damaged)")
        self.config = self.resolved["config"]
        self._models: dict = {}
        self._last_stamp = None

    def __repr__(self):
        return f"Run({str(self.path)!r}, method={self.config['method']!r}, epochs={len(self.history)})"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def history(self) -> pd.DataFrame:
        """history.csv (empty with its columns when training has not finished an epoch); a file that is not the
        table training writes is a RunError naming it."""
        p = self.path / HISTORY_FILE
        if not regular_file(p):
            return pd.DataFrame(columns=HISTORY_COLUMNS)
        try:
            df = pd.read_csv(p, encoding="utf-8", encoding_errors="strict")
        except (OSError, ValueError, pd.errors.ParserError) as e:  # EmptyDataError and UnicodeDecodeError too
            raise RunError(f"cannot read {p}: {type(e).__name__}: {str(e).strip()[:160]}; it is not the table "
                           "training writes (the run directory is damaged)") from None
        bad = [c for c in ("epoch", "stage", "test_acc") if c not in df or not pd.api.types.is_numeric_dtype(df[c])]
        if bad:
            raise RunError(f"{p} has no numeric column {bad[0]!r} (columns: {', '.join(map(str, df.columns))}); it "
                           "is not the table training writes (the run directory is damaged)")
        return df

    @property
    def summary(self) -> dict | None:
        p = self.path / SUMMARY_FILE
        if not os.path.lexists(p):
            return None
        summary = read_json(p, SUMMARY_FILE)
        check_format(summary, p)
        return summary

    @property
    def finished(self) -> bool:
        return self.summary is not None

    @cached_property
    def info(self):
        """The data set's description; keys another version added are left out, a missing one is a RunError."""
        import dataclasses
        names = {f.name for f in dataclasses.fields(DatasetInfo)}
        d = {k: v for k, v in self.resolved["dataset"].items() if k in names}
        try:
            return DatasetInfo(**d)
        except TypeError as e:
            raise RunError(f"{self.path / CONFIG_FILE}: its dataset description is incomplete ({e}); the run "
                           "directory is damaged") from None

    @property
    def class_names(self) -> list[str]:
        return list(self.info.class_names)

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def output_temperature(self) -> float:
        return float(self.resolved.get("output_temperature", 1.0))

    def soft_label_keys(self) -> list[str]:
        return list(self.all_soft_labels())

    def all_soft_labels(self) -> dict[str, np.ndarray]:
        """Every soft-label matrix, read without pickle: an object array or a damaged file is refused."""
        p = self.path / SOFT_LABELS_FILE
        if not regular_file(p):
            return {}
        try:
            with np.load(p, allow_pickle=False) as z:
                keys = list(z.files)
                if not all(map(is_stage_key, keys)):
                    raise ValueError(f"unexpected entries {[k for k in keys if not is_stage_key(k)]}")
                mats = {k: z[k] for k in sorted(keys, key=stage_number)}
        except Exception as e:  # noqa: BLE001 - zipfile / numpy raise many types for damaged files
            raise RunError(f"cannot read {p}: {type(e).__name__}: {str(e)[:200]}; it must hold only numeric "
                           "C x C arrays named stage_K (pickled objects are refused)") from None
        C = self.num_classes
        for k, m in mats.items():
            if m.dtype.kind not in "fiu" or m.shape != (C, C) or not np.all(np.isfinite(m)):
                what = "with values that are not finite" if m.shape == (C, C) and m.dtype.kind in "fiu" else ""
                raise RunError(f"{p}: {k} is a {m.dtype} array of shape {m.shape}{' ' + what if what else ''}; "
                               f"expected a finite numeric {C} x {C} matrix")
        return mats

    def soft_labels(self, stage) -> np.ndarray:
        key = stage_key(stage)
        mats = self.all_soft_labels()
        if key not in mats:
            raise KeyError(f"{self.path} has no soft labels {key!r}; available: {', '.join(mats) or 'none'}")
        return mats[key]

    def stage_checkpoints(self) -> list[int]:
        return stage_numbers(self.path / CHECKPOINT_DIR)

    def model(self, stage: int | None = None):
        """Eval-mode model on CPU at the end of `stage` (None: the latest state in last.pt, reloaded when
        a run that is still training has written a newer one)."""
        key = stage if stage is None else int(stage)
        if key is None:
            last = self.path / "checkpoints" / "last.pt"
            stamp = last.stat().st_mtime_ns if last.exists() else None
            if self._last_stamp != stamp:
                self._models.pop(None, None)
                self._last_stamp = stamp
        if key not in self._models:
            if key is None:
                src = self.path / "checkpoints" / "last.pt"
                if not src.exists():
                    raise RunError(f"{self.path} has no checkpoints/last.pt (training never finished an epoch); "
                                   f"stage checkpoints: {self.stage_checkpoints() or 'none'}")
            else:
                src = self.path / "checkpoints" / f"stage_{key}.pt"
                if not src.exists():
                    raise KeyError(f"{self.path} has no checkpoint for stage {key}; "
                                   f"available: {self.stage_checkpoints()}")
            state = load_checkpoint(src)
            if not isinstance(state.get("model"), dict):
                raise RunError(f"checkpoint {src} holds no model weights; the run directory is damaged")
            info = self.info
            model = build_model(self.config["model"], info.num_classes, info.in_channels, info.image_size)
            try:
                model.load_state_dict(state["model"])
            except RuntimeError as e:
                raise RunError(f"checkpoint {src} does not fit model {self.config['model']!r} of this run "
                               f"({str(e).strip().splitlines()[0][:160]}...); it was written for another model "
                               "or another dataset") from None
            self._models[key] = model.eval()
        return self._models[key]

    @cached_property
    def _dataset(self):
        kw = dataset_kwargs(self.config)
        kw.update(download=False, num_workers=0)  # reading a run never fetches data
        return load_dataset(self.config["dataset"], **kw)

    def dataset(self):
        return self._dataset

    def data(self, split: str):
        return self._dataset.tensors(split)


def load_run(path) -> Run:
    return Run(path)


def is_run_dir(path) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def load_runs(root) -> dict[str, Run]:
    """Every run directory directly under ``root``, by folder name, in name order."""
    root = Path(root)
    return {p.name: Run(p) for p in sorted(root.iterdir()) if is_run_dir(p)} if root.is_dir() else {}
