"""Command line: `python -m colam_core train ...` (also installed as `colam`).

    python -m colam_core train --dataset digits --model small_cnn --method colam \
        --epochs 12 --stages 4 --T 1.5 --out runs/demo
    python -m colam_core train --resume runs/demo
    python -m colam_core train --resume runs/demo --from-stage 2   # last.pt damaged: restart at a stage end
    python -m colam_core show runs/demo
    python -m colam_core list
    torchrun --nproc_per_node=2 -m colam_core train ...           # data-parallel (docs/RELIABILITY.md)

Every option of `Config` is a flag (`--peer-samples 10`, `--hard-weight 0.2`, ...). A bad value exits
with status 2 and one line naming the option, the value and what is allowed, before any data is loaded.
Exit status: 0 done, 1 training failed (non-finite loss, a checkpoint that cannot be written), 2 bad input,
130 stopped by Ctrl-C (resumable; the command to resume is printed).
"""
from __future__ import annotations

import argparse
import json
import sys
import typing
from pathlib import Path

from .config import Config, field_kinds, parse_value
from .data import DATASETS
from .distributed import env_world_size, launched_rank
from .errors import ConfigError, DataError, DistributedError, RunError, TrainingError
from .methods import available_methods
from .metrics import erasures, soft_label_health
from .models import available_models
from .runs import CONFIG_FILE, SUMMARY_FILE, load_run, read_json
from .sweeps import cli as sweep_cli
from .training import Trainer

NO_FLAG = {"extra"}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage dump
        cmd = " ".join(self.prog.split()[1:])
        self.exit(2, f"error: {message} (see `python -m colam_core {cmd + ' ' if cmd else ''}--help`)\n")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _convert(name: str, raw: str, kind):
    """Turn a command-line string into the field's type; errors name the option."""
    return parse_value(name, raw, kind)


def _field_kinds() -> dict[str, str]:
    return {k: v for k, v in field_kinds().items() if k not in NO_FLAG}


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="colam_core", description="COLAM and label-softening baselines: train and inspect runs.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("train", help="train a run (or resume one)")
    t.add_argument("--out", help="run directory to write (default runs/<dataset>_<model>_<method>_s<seed>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR with its own configuration")
    t.add_argument("--from-stage", metavar="K", type=int, default=None,
                   help="with --resume: restart from the end of stage K (checkpoints/stage_K.pt), e.g. when "
                        "last.pt is damaged")
    t.add_argument("--config", metavar="JSON", help="read options from a JSON file (flags override it)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    defaults = Config()
    for name in _field_kinds():
        t.add_argument(_flag(name), dest=name, default=None, metavar="VALUE",
                       help=f"default: {getattr(defaults, name)!r}")
    s = sub.add_parser("show", help="print a run directory's configuration, last epochs and summary")
    s.add_argument("run_dir")
    sub.add_parser("list", help="list datasets, models and methods")
    sweep_cli.add_parser(sub)  # colam sweep plan | run | submit | status | results | list
    return p


def _config_from_args(args) -> tuple[Config, Path | None]:
    values: dict = {}
    out = Path(args.out) if args.out else None
    if args.from_stage is not None and not args.resume:
        raise ConfigError("from_stage", args.from_stage, "only together with --resume RUN_DIR")
    if args.from_stage is not None and args.from_stage < 1:
        raise ConfigError("from_stage", args.from_stage, "a stage number >= 1")
    if args.resume:
        cfg_path = Path(args.resume) / CONFIG_FILE
        if not cfg_path.is_file():
            raise RunError(f"--resume {args.resume}: not a run directory (no config.json); "
                           "pass the --out folder of an earlier training run")
        values = read_json(cfg_path, CONFIG_FILE).get("config")
        if not isinstance(values, dict):
            raise RunError(f"--resume {args.resume}: {cfg_path} has no 'config' object; it was not written by "
                           "training")
        out = Path(args.resume)
    if args.config:
        try:
            loaded = json.loads(Path(args.config).read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError("config", args.config, f"a readable JSON file of options ({e})") from None
        if not isinstance(loaded, dict):
            raise ConfigError("config", args.config, "a JSON object of options, e.g. {\"T\": 1.5}")
        values.update(loaded)
    kinds = _field_kinds()
    given = {}
    for name, kind in kinds.items():
        raw = getattr(args, name)
        if raw is not None:
            given[name] = _convert(name, raw, kind)
    if args.resume and given:
        raise RunError(f"--resume {args.resume} continues that run with its own configuration; do not pass "
                       f"options ({', '.join(_flag(k) for k in given)})")
    values.update(given)
    cfg = Config.from_dict(values)
    return cfg, out


def _say(*a, **kw) -> None:
    """Print on rank 0 only (every rank of a data-parallel run executes the CLI)."""
    if launched_rank() == 0:
        print(*a, **kw)


def _resume_command(out) -> str:
    launcher = ("python -m colam_core" if env_world_size() <= 1
                else f"torchrun --nproc_per_node={env_world_size()} -m colam_core")
    return f"{launcher} train --resume {out}"


def cmd_train(args) -> int:
    cfg, out = _config_from_args(args)
    cfg.validate()  # before any data is loaded
    trainer = Trainer(cfg, out=out, progress=not args.quiet, from_stage=args.from_stage)
    args._out = trainer.out
    if args.quiet:  # the progress listener prints warnings itself; quiet or not, an erased class is never silent
        trainer.subscribe(lambda ev: ev.kind == "warning" and _say(f"WARNING: {ev.message}", file=sys.stderr))
    with trainer:
        if trainer.done and trainer.summary is None and (trainer.out / SUMMARY_FILE).exists():
            _say(f"{trainer.out} is already finished")
        summary = trainer.run()
        if summary is None:
            _say(f"stopped; resume with: {_resume_command(trainer.out)}")
            return 130
        _say(f"done: {trainer.out}  test_acc={summary['test_acc']:.4f}  test_ece={summary['test_ece']:.4f}  "
             f"train {summary['train_seconds']:.1f} s")
    return 0


def cmd_show(args) -> int:
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
        names = run.class_names
        for k, soft in run.all_soft_labels().items():
            h = soft_label_health({k: soft})[k]
            lost = "; ".join(f"{names[e['class']]} -> {names[e['taken_by']]} ({e['taken_mass']:.2f} vs own "
                             f"{e['own_mass']:.2f})" for e in erasures(soft))
            print(f"  {k}: own-class mass mean {h['own_mass_mean']:.3f}, min {h['own_mass_min']:.3f}; "
                  + (f"ERASED {len(h['erased_classes'])}: {lost}" if lost else "no class erased"))
    print(json.dumps(run.summary, indent=2) if run.summary else "not finished (resume with train --resume)")
    return 0


def cmd_list(args) -> int:
    print("datasets:", ", ".join(DATASETS))
    print("models:  ", ", ".join(available_models()))
    print("methods: ", ", ".join(available_methods()))
    return 0


def _one_line(msg: str) -> str:
    lines = [line.strip() for line in str(msg).splitlines() if line.strip()]
    if any(line.startswith("Original Traceback") for line in lines):
        # re-raised from a DataLoader worker: keep the original message, not the worker's traceback
        last = lines[-1]
        head, sep, tail = last.partition(": ")
        lines = [tail if sep and "Error" in head and " " not in head else last]
    return "; ".join(lines)


def main(argv: typing.Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def err(msg):
        _say("error: " + _one_line(msg), file=sys.stderr)

    try:
        return {"train": cmd_train, "show": cmd_show, "list": cmd_list, "sweep": sweep_cli.main}[args.command](args)
    except ConfigError as e:
        err(f"{_flag(e.option)} {e.value!r} is invalid; allowed: {e.allowed}")
        return 2
    except (DataError, RunError, KeyError, DistributedError) as e:
        err(str(e.args[0] if e.args else e))
        return 2
    except TrainingError as e:
        err(str(e))
        return 1
    except KeyboardInterrupt:
        out = getattr(args, "_out", None)
        err("interrupted" + (f"; the last checkpoint is kept: resume with: {_resume_command(out)}" if out else ""))
        return 130
    except OSError as e:  # e.g. a permission or disk error outside the checkpoint writes
        err(f"{e.strerror or e}" + (f": {e.filename}" if e.filename else ""))
        return 1
    except RuntimeError as e:
        if env_world_size() > 1:  # a collective failed: another rank died or the rendezvous broke
            err(f"data-parallel training failed on this rank: {e}")
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
