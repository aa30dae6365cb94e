"""``colam sweep ...``: plan a sweep spec, run or submit its entries, follow them, print the paper's tables.

    colam sweep list                                   # the shipped specs (--preset NAME)
    colam sweep plan SPEC.yaml --out ROOT              # validate every entry, write ROOT/sweep.json, print the cost
    colam sweep plan --preset table2_cifar100 --out runs/t2 --set data_root=/data
    colam sweep run ROOT --index I                     # train (or resume) entry I
    colam sweep run ROOT --worker                      # drain the sweep; N workers share it, each run done once
    colam sweep submit ROOT --executor slurm --partition gpu --gpus-per-task 1 --time 720
    colam sweep status ROOT                            # done / running / pending / failed (with the error line)
    colam sweep results ROOT --csv t.csv --markdown t.md

Registered by ``colam_core.cli`` (``add_parser``); ``main(args)`` runs one subcommand. Exit status: 0 done,
1 an entry failed, 2 bad input (one line naming the spec entry and the option), 75 nothing to do now (the entry is
held by another worker or waits for its parent), 130 stopped (resumable).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from ..errors import ConfigError
from .campaign import Campaign
from .frontend import duration_text, estimate_config, sweep_results
from .spec import TABLES, expand, load_spec, preset_summary, presets, write_plan
from .submit import EXECUTORS, describe, queued_jobs, submit, submitted_jobs, wait_until_settled

EXIT_LATER = 75


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``sweep`` and its subcommands to the top-level parser's ``subparsers``."""
    p = subparsers.add_parser("sweep", help="plan, run, submit (Slurm / local via submitit) and report sweeps",
                              description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="sweep_command", required=True, parser_class=type(p))
    sub.add_parser("list", help="the shipped sweep specs (use one with plan --preset NAME)")

    pl = sub.add_parser("plan", help="validate a spec and write ROOT/sweep.json")
    pl.add_argument("spec", nargs="?", help="a YAML spec (base, grid, runs, expected, table, paper)")
    pl.add_argument("--preset", metavar="NAME", help="a shipped spec instead of a file (see `colam sweep list`)")
    pl.add_argument("--out", required=True, metavar="ROOT", help="the sweep's folder (one run folder per entry)")
    pl.add_argument("--set", dest="overrides", action="append", default=[], metavar="OPTION=VALUE",
                    help="an option for every entry, over the spec's base, grid and runs (e.g. data_root=/data, "
                         "device=cuda; model=resnet20 makes a model axis that one value); a spec value written "
                         "{data_root}/x is filled with it")
    pl.add_argument("--replace", action="store_true", help="plan anew over a different plan in ROOT")
    pl.add_argument("--estimate", action="store_true",
                    help="also time a few batches of each distinct dataset/model on this machine")

    r = sub.add_parser("run", help="train entries of a planned sweep in this process")
    r.add_argument("root", metavar="ROOT")
    which = r.add_mutually_exclusive_group(required=True)
    which.add_argument("--index", type=int, metavar="I", help="train (or resume) entry I")
    which.add_argument("--worker", action="store_true",
                       help="take entries that are neither finished nor held by another live worker until none is left")
    r.add_argument("--retry-failed", action="store_true", help="--worker: try failed entries again (once each)")
    r.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="--index: how long an entry waits for its parent's soft labels (default 0: do not wait)")
    r.add_argument("--poll", type=float, default=5.0, metavar="SECONDS", help="how often waiting entries look again")
    r.add_argument("--quiet", action="store_true", help="no progress bars")

    s = sub.add_parser("submit", help="submit the pending entries with submitit (Slurm job arrays, or local)")
    s.add_argument("root", metavar="ROOT")
    s.add_argument("--executor", required=True, choices=EXECUTORS)
    s.add_argument("--partition", metavar="P")
    s.add_argument("--gpus-per-task", type=int, metavar="G")
    s.add_argument("--cpus-per-task", type=int, metavar="C", help="also sets OMP_NUM_THREADS in the task")
    s.add_argument("--max-parallel", type=int, metavar="N",
                   help="slurm: array tasks running at once; local: workers (default 1)")
    s.add_argument("--time", type=int, default=1440, metavar="MINUTES",
                   help="time limit of each task (default 1440); near it the run checkpoints and is requeued")
    s.add_argument("--setup", action="append", default=[], metavar="CMD",
                   help="a shell line run before each task (e.g. 'module load cuda'); repeatable")
    s.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. account=abc or qos=high; repeatable")
    s.add_argument("--max-requeues", type=int, default=10, metavar="N", help="time-limit requeues per task")
    s.add_argument("--wait", action="store_true", help="block until every submitted entry has ended")

    st = sub.add_parser("status", help="done / running / pending / failed, with each failed run's last error")
    st.add_argument("root", metavar="ROOT")

    res = sub.add_parser("results", help="the sweep's table (mean ± std over seeds, grid, temperature, expected)")
    res.add_argument("root", metavar="ROOT")
    res.add_argument("--table", choices=TABLES, help="another table than the spec's (e.g. expected)")
    res.add_argument("--csv", metavar="FILE", help="write the table, one row per cell")
    res.add_argument("--markdown", metavar="FILE", help="write the table as printed, in Markdown")
    return p


def _cost_line(plan) -> str:
    c = plan.cost()
    models = ", ".join(f"{k} {v}" for k, v in c["by_model"].items())
    dep = f", {c['dependent']} of them after their parents" if c["dependent"] else ""
    return f"{c['runs']} runs{dep}; {c['epochs']} epochs in all ({models} epochs)"


def _measure(plan) -> list[str]:
    """Seconds for the plan, timed on this machine: a few batches of one entry per distinct dataset/model."""
    seen: dict[tuple, list[str]] = {}
    for name, cfg in plan.configs.items():
        key = (cfg.dataset, cfg.model, cfg.batch_size, cfg.train_limit, cfg.data_root, cfg.device,
               cfg.method == "fixed")
        seen.setdefault(key, []).append(name)
    total, lines = 0.0, []
    for names in seen.values():
        cfg = plan.configs[names[0]]
        try:
            est = estimate_config(cfg)
        except Exception as e:  # noqa: BLE001 - an estimate that cannot be made is reported, not fatal
            lines.append(f"  {cfg.dataset}/{cfg.model}: not timed here ({' '.join(str(e).split())[:160]})")
            continue
        seconds = sum(est["epoch_seconds"] * plan.configs[n].total_epochs for n in names)
        total += seconds
        lines.append(f"  {cfg.dataset}/{cfg.model} on {est['device']}: {est['epoch_seconds']:.1f} s per epoch, "
                     f"{len(names)} runs, about {duration_text(seconds)}")
    lines.append(f"  in all about {duration_text(total)} on one such device (divide by the tasks running at once)")
    return lines


def cmd_list(args) -> int:
    found = presets()
    width = max(map(len, found), default=0)
    for name, path in found.items():
        print(f"{name:<{width}}  {preset_summary(path)}")
    return 0


def cmd_plan(args) -> int:
    spec, where = load_spec(args.spec, args.preset)
    sets = {}
    for o in args.overrides:
        key, sep, value = o.partition("=")
        if not sep:
            raise ConfigError("set", o, "OPTION=VALUE")
        sets[key.strip()] = value
    plan = expand(spec, args.out, source=where, overrides=sets)
    path = write_plan(plan, args.out, replace=args.replace)
    print(f"planned {path}: {_cost_line(plan)}")
    if args.estimate:
        print("\n".join(_measure(plan)))
    print(f"next: colam sweep submit {args.out} --executor slurm|local, or colam sweep run {args.out} --worker")
    return 0


def cmd_run(args) -> int:
    camp = Campaign(args.root)
    if args.worker:
        def report(name, outcome, detail):
            print(f"{name}: {outcome}" + (f" ({detail})" if detail else ""), file=sys.stderr, flush=True)
        counts = camp.work(progress=not args.quiet, poll=args.poll, retry_failed=args.retry_failed, report=report)
        print(f"worker done: {counts['trained']} trained, {counts['failed'] + counts['blocked']} failed")
        if counts["stopped"]:
            print(f"stopped; resume with: colam sweep run {args.root} --worker")
            return 130
        return 1 if counts["failed"] + counts["blocked"] else 0
    name = camp.name_of(args.index)
    outcome, detail = camp.run_entry(name, progress=not args.quiet, wait=args.wait or None, poll=args.poll)
    print(f"{name}: {outcome}" + (f" ({detail})" if detail else ""))
    if outcome == "stopped":
        print(f"stopped; resume with: colam sweep run {args.root} --index {args.index}")
        return 130
    return {"failed": 1, "blocked": 1, "held": EXIT_LATER, "waiting": EXIT_LATER}.get(outcome, 0)


def cmd_submit(args) -> int:
    record = submit(args.root, executor=args.executor, partition=args.partition, gpus_per_task=args.gpus_per_task,
                    cpus_per_task=args.cpus_per_task, max_parallel=args.max_parallel, time_min=args.time,
                    setup=args.setup, slurm_options=args.slurm_option, max_requeues=args.max_requeues)
    print(describe(record, args.root))
    if args.wait and record["arrays"]:
        counts = wait_until_settled(args.root)
        print(", ".join(f"{v} {k}" for k, v in counts.items()))
        return 1 if counts["failed"] else 0
    return 0


def status_text(camp: Campaign) -> str:
    df = camp.status()
    jobs = submitted_jobs(camp.root)
    queued = queued_jobs(list(jobs.values())) if shutil.which("squeue") else set()
    df["note"] = [f"queued as Slurm job {jobs[n]}" if st == "pending" and not note and jobs.get(n) in queued else note
                  for n, st, note in zip(df["name"], df["state"], df["note"])]
    counts = {s: int((df["state"] == s).sum()) for s in ("done", "running", "pending", "failed")}
    head = f"{camp.root}: {len(df)} entries: " + ", ".join(f"{v} {k}" for k, v in counts.items())
    df["note"] = [n if len(n) <= 100 else n[:97] + "..." for n in df["note"]]
    return head + "\n" + df.to_string(index=False)


def cmd_status(args) -> int:
    print(status_text(Campaign(args.root)))
    return 0


def cmd_results(args) -> int:
    res = sweep_results(Campaign(args.root), args.table)
    print(res.text)
    if args.csv:
        res.csv_table().to_csv(args.csv, index=False)
        print(f"wrote {args.csv}")
    if args.markdown:
        Path(args.markdown).write_text(res.markdown())
        print(f"wrote {args.markdown}")
    return 0


COMMANDS = {"list": cmd_list, "plan": cmd_plan, "run": cmd_run, "submit": cmd_submit, "status": cmd_status,
            "results": cmd_results}


def main(args) -> int:
    """Run ``colam sweep <sweep_command>``. A bad spec or option exits 2 with one line naming the entry and the
    option (``error: SPEC: entry 'x': option T = -1 is invalid; allowed: ...``); other errors reach the
    top-level handler of ``colam_core.cli``."""
    try:
        return COMMANDS[args.sweep_command](args)
    except ConfigError as e:
        where = getattr(args, "spec", None) or getattr(args, "preset", None) or getattr(args, "root", None)
        entry = f"entry {e.run!r}: " if getattr(e, "run", None) else ""
        allowed = getattr(e, "bare_allowed", e.allowed)
        print(f"error: {where + ': ' if where else ''}{entry}option {e.option} = {e.value!r} is invalid; "
              f"allowed: {' '.join(str(allowed).split())}", file=sys.stderr)
        return 2


__all__ = ["add_parser", "main", "status_text"]
