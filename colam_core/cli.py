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

`colam --version` prints the version; `colam notebooks DIR` copies the notebooks shipped in the package into DIR.
Every message names the program as the user started it (`colam ...` or `python -m colam_core ...`). The help of each
option (its meaning, what it allows, its default) comes from colam_core/options.py, as the README's table does.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap
import typing
from pathlib import Path

from . import __version__
from .config import CHOICES, Config, check_out, field_kinds, parse_value, read_options_file
from .data import DATASETS
from .distributed import env_world_size, launched_rank
from .errors import ConfigError, DataError, DistributedError, RunError, TrainingError
from .methods import available_methods
from .metrics import ece_text, erasures, soft_label_health
from .models import available_models
from .options import BY_NAME, NO_FLAG, SECTIONS, help_text
from .runs import CONFIG_FILE, SUMMARY_FILE, load_run, program_name, read_json, resume_command
from .sweeps import cli as sweep_cli
from .training import Trainer


class _Parser(argparse.ArgumentParser):
    commands: dict = {}  # the root parser's subcommand parsers (build_parser)

    def error(self, message):  # one line, no usage dump
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")

    def parse_args(self, args=None, namespace=None):
        args, extras = self.parse_known_args(args, namespace)
        if extras:  # name the subcommand's help, whose options the user was after
            self.commands.get(getattr(args, "command", None), self).error(f"unrecognized arguments: {' '.join(extras)}")
        return args


class _BoolFlag(argparse.Action):
    """``--flag`` / ``--no-flag``; ``--flag VALUE`` also works (true / false, and auto for an optional flag)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs="?", **kwargs)

    def __call__(self, parser, namespace, value, option_string=None):
        if option_string.startswith("--no-"):
            if value is not None:
                parser.error(f"{option_string} takes no value (it means {self.option_strings[0]} false)")
            value = "false"
        setattr(namespace, self.dest, "true" if value is None else value)


class _HelpFormatter(argparse.HelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=30, width=min(shutil.get_terminal_size().columns, 120))

    def _split_lines(self, text, width):  # never split a flag or a name at its hyphen
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _format_action_invocation(self, action):
        if isinstance(action, _BoolFlag):
            return f"{action.option_strings[0]} [{action.metavar}], {action.option_strings[1]}"
        return super()._format_action_invocation(action)


def _metavar(name: str, kind: str) -> str:
    if name in CHOICES:
        return "NAME"
    if "bool" in kind:
        return "BOOL"
    named = {"peer_samples": "K|all", "milestones": "F,F", "data_root": "DIR", "fixed_targets": "SPEC",
             "log": "NAMES", "tracking_uri": "URI"}
    return named.get(name) or ("X" if "float" in kind else "N" if "int" in kind else "TEXT")


def notebooks_source() -> Path:
    """The notebooks: shipped in the installed package (colam_core/notebooks), or a source checkout's notebooks/."""
    here = Path(__file__).resolve().parent
    for d in (here / "notebooks", here.parent / "notebooks"):
        if any(d.glob("*.ipynb")):
            return d
    raise RunError(f"no notebooks found in {here / 'notebooks'}: this installation of colam-workbench lacks them "
                   "(reinstall it from a wheel or a source checkout)")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _convert(name: str, raw: str, kind):
    """Turn a command-line string into the field's type; errors name the option."""
    return parse_value(name, raw, kind)


def _field_kinds() -> dict[str, str]:
    return {k: v for k, v in field_kinds().items() if k not in NO_FLAG}


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    prog = prog or program_name()
    p = _Parser(prog=prog, description="COLAM and label-softening baselines: train and inspect runs.",
                formatter_class=_HelpFormatter)
    p.add_argument("--version", action="version", version=f"{prog} {__version__} (colam-workbench)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    t = sub.add_parser("train", help="train a run (or resume one)", formatter_class=_HelpFormatter,
                       usage="%(prog)s [--out DIR | --resume RUN_DIR [--from-stage K]] [--config JSON] [--quiet] "
                             "[--OPTION VALUE ...]",
                       description="Train a run, or resume one. Every option of the configuration is a flag; "
                                   "a bad value exits 2 naming the option and what it allows.")
    t.add_argument("--out", help="run directory to write (default runs/<dataset>_<model>_<method>_s<seed>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR with its own configuration")
    t.add_argument("--from-stage", metavar="K", type=int, default=None,
                   help="with --resume: restart from the end of stage K (checkpoints/stage_K.pt), e.g. when "
                        "last.pt is damaged")
    t.add_argument("--force", action="store_true",
                   help="with --from-stage: replace a finished run's results (a copy of them is kept)")
    t.add_argument("--config", metavar="JSON", help="read options from a JSON file (flags override it)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    kinds = _field_kinds()
    groups = {s: t.add_argument_group(f"{s} options") for s in SECTIONS}
    for name, kind in kinds.items():
        option = BY_NAME[name]
        flags = [_flag(name)] + ([f"--no-{_flag(name)[2:]}"] if "bool" in kind else [])
        groups[option.section].add_argument(*flags, dest=name, default=None, metavar=_metavar(name, kind),
                                            action=_BoolFlag if "bool" in kind else "store",
                                            help=help_text(option).replace("%", "%%"))
    s = sub.add_parser("show", help="print a run directory's configuration, last epochs and summary")
    s.add_argument("run_dir")
    sub.add_parser("list", help="list datasets, models and methods")
    n = sub.add_parser("notebooks", help="copy the notebooks shipped with the package into a folder")
    n.add_argument("dir", metavar="DIR", help="the folder to copy them into (created if missing)")
    n.add_argument("--force", action="store_true", help="overwrite notebooks that are already there")
    sweep_cli.add_parser(sub)  # colam sweep plan | run | submit | status | results | list
    p.commands = sub.choices
    return p


def _config_from_args(args) -> tuple[Config, Path | None]:
    values: dict = {}
    if args.from_stage is not None and not args.resume:
        raise ConfigError("from_stage", args.from_stage, "only together with --resume RUN_DIR")
    if args.from_stage is not None and args.from_stage < 0:
        raise ConfigError("from_stage", args.from_stage, "a stage number K >= 0 (0: the start)")
    if args.force and args.from_stage is None:
        raise ConfigError("force", True, "only together with --resume RUN_DIR --from-stage K")
    out = check_out(args.out, args.resume)
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
    if args.config is not None:
        values.update(read_options_file(args.config))
    kinds = _field_kinds()
    given = {}
    for name, kind in kinds.items():
        raw = getattr(args, name)
        if raw is not None:
            given[name] = _convert(name, raw, kind)
    if args.resume and (given or args.config is not None):
        raise RunError(f"--resume {args.resume} continues that run with its own configuration; do not pass "
                       f"options ({', '.join([_flag(k) for k in given] + ['--config'] * (args.config is not None))})")
    values.update(given)
    cfg = Config.from_dict(values)
    return cfg, out


def _say(*a, **kw) -> None:
    """Print on rank 0 only (every rank of a data-parallel run executes the CLI)."""
    if launched_rank() == 0:
        print(*a, **kw)


def _resume_command(out) -> str:
    return resume_command(out)


def cmd_train(args) -> int:
    cfg, out = _config_from_args(args)
    cfg.validate()  # before any data is loaded
    trainer = Trainer(cfg, out=out, progress=not args.quiet, from_stage=args.from_stage, force=args.force)
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
        _say(f"done: {trainer.out}  test_acc={summary['test_acc']:.4f}  {ece_text(summary)}  "
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
    if run.summary:
        acc = run.summary.get("test_acc")
        acc = f"{acc:.4f}" if isinstance(acc, (int, float)) else "n/a"
        print(f"test accuracy {acc}; {ece_text(run.summary)} (T = {run.output_temperature:g})")
    print(json.dumps(run.summary, indent=2) if run.summary else "not finished (resume with train --resume)")
    return 0


def cmd_notebooks(args) -> int:
    src, dest = notebooks_source(), Path(args.dir)
    if dest.exists() and not dest.is_dir():
        raise RunError(f"{dest} is a file; give a folder to copy the notebooks into")
    dest.mkdir(parents=True, exist_ok=True)
    for nb in sorted(src.glob("*.ipynb")):
        target = dest / nb.name
        if target.exists() and not args.force:
            print(f"kept {target} (it exists; --force overwrites it)")
            continue
        shutil.copyfile(nb, target)
        print(target)
    print(f"open them with: jupyter lab {dest}")
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
        return {"train": cmd_train, "show": cmd_show, "list": cmd_list, "notebooks": cmd_notebooks,
                "sweep": sweep_cli.main}[args.command](args)
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
