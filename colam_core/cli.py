"""Command line: `python -m colam_core train ...` (also installed as `colam`).

    python -m colam_core train --dataset digits --model small_cnn --method colam \
        --epochs 12 --stages 4 --T 1.5 --out runs/demo
    python -m colam_core train --resume runs/demo
    python -m colam_core show runs/demo
    python -m colam_core list

Every option of `Config` is a flag (`--peer-samples 10`, `--hard-weight 0.2`, ...). A bad value exits
with status 2 and one line naming the option, the value and what is allowed, before any data is loaded.
"""
from __future__ import annotations

import argparse
import json
import sys
import typing
from dataclasses import fields
from pathlib import Path

from .config import Config, ConfigError

NO_FLAG = {"extra"}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        cmd = " ".join(self.prog.split()[1:])
        self.exit(2, f"error: {message} (see `python -m colam_core {cmd + ' ' if cmd else ''}--help`)\n")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _convert(name: str, raw: str, kind):
    """Turn a command-line string into the field's type; errors name the option."""
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


def _field_kinds() -> dict[str, str]:
    return {f.name: str(f.type) for f in fields(Config) if f.name not in NO_FLAG}


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="colam_core", description="COLAM and label-softening baselines: train and inspect runs.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("train", help="train a run (or resume one)")
    t.add_argument("--out", help="run directory to write (default runs/<dataset>_<model>_<method>_s<seed>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR with its own configuration")
    t.add_argument("--config", metavar="JSON", help="read options from a JSON file (flags override it)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    defaults = Config()
    for name, kind in _field_kinds().items():
        t.add_argument(_flag(name), dest=name, default=None, metavar="VALUE",
                       help=f"default: {getattr(defaults, name)!r}")
    s = sub.add_parser("show", help="print a run directory's configuration, last epochs and summary")
    s.add_argument("run_dir")
    sub.add_parser("list", help="list datasets, models and methods")
    return p


def _config_from_args(args) -> tuple[Config, Path | None]:
    values: dict = {}
    out = Path(args.out) if args.out else None
    if args.resume:
        from .runs import RunError
        cfg_path = Path(args.resume) / "config.json"
        if not cfg_path.is_file():
            raise RunError(f"--resume {args.resume}: not a run directory (no config.json); "
                           "pass the --out folder of an earlier training run")
        values = json.loads(cfg_path.read_text())["config"]
        out = Path(args.resume)
    if args.config:
        try:
            values.update(json.loads(Path(args.config).read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError("config", args.config, f"a readable JSON file of options ({e})") from None
    kinds = _field_kinds()
    given = {}
    for name, kind in kinds.items():
        raw = getattr(args, name)
        if raw is not None:
            given[name] = _convert(name, raw, kind)
    if args.resume and given:
        from .runs import RunError
        raise RunError(f"--resume {args.resume} continues that run with its own configuration; do not pass "
                       f"options ({', '.join(_flag(k) for k in given)})")
    values.update(given)
    cfg = Config.from_dict(values)
    return cfg, out


def cmd_train(args) -> int:
    from .trainer import Trainer
    cfg, out = _config_from_args(args)
    cfg.validate()  # before any data is loaded
    with Trainer(cfg, out=out, progress=not args.quiet) as trainer:
        if trainer.done and trainer.summary is None and (trainer.out / "summary.json").exists():
            print(f"{trainer.out} is already finished")
        summary = trainer.run()
        if summary is None:
            print(f"stopped; resume with: python -m colam_core train --resume {trainer.out}")
            return 130
        print(f"done: {trainer.out}  test_acc={summary['test_acc']:.4f}  test_ece={summary['test_ece']:.4f}  "
              f"train {summary['train_seconds']:.1f} s")
    return 0


def cmd_show(args) -> int:
    from .runs import load_run
    run = load_run(args.run_dir)
    c = run.config
    print(f"{run.path}: {c['method']} on {c['dataset']} with {c['model']}, {c['epochs']} epochs, "
          f"{run.resolved['num_stages']} stages, device {run.resolved['device']}")
    h = run.history
    if len(h):
        print(h.tail(5).to_string(index=False))
    keys = run.soft_label_keys()
    if keys:
        print("soft labels:", ", ".join(keys))
    print(json.dumps(run.summary, indent=2) if run.summary else "not finished (resume with train --resume)")
    return 0


def cmd_list(args) -> int:
    from .config import METHODS
    from .data import DATASETS
    from .models import available_models
    print("datasets:", ", ".join(DATASETS))
    print("models:  ", ", ".join(available_models()))
    print("methods: ", ", ".join(METHODS))
    return 0


def main(argv: typing.Sequence[str] | None = None) -> int:
    from .data import DataError
    from .runs import RunError
    from .trainer import TrainingError
    args = build_parser().parse_args(argv)
    try:
        return {"train": cmd_train, "show": cmd_show, "list": cmd_list}[args.command](args)
    except ConfigError as e:
        print(f"error: {_flag(e.option)} {e.value!r} is invalid; allowed: {e.allowed}", file=sys.stderr)
        return 2
    except (DataError, RunError, KeyError) as e:
        msg = str(e.args[0] if e.args else e)
        print("error: " + "; ".join(line.strip() for line in msg.splitlines() if line.strip()), file=sys.stderr)
        return 2
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
