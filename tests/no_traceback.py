"""Pytest plugin: no case of docs/RELIABILITY.md's tables shows the user a Python traceback (issue 15).

Every table row of docs/RELIABILITY.md names the tests that hold it (`tests/FILE.py::test_name` or
`tests/FILE.py::test_name[param]`). For those tests, and only those, this plugin collects everything the user
would have seen and fails the test if any of it holds ``Traceback (most recent call last)``:

- pytest's captured stdout, stderr and log of the test's setup, call and teardown (``report.sections``);
- what the test read with ``capsys`` / ``capfd`` (``readouterr()`` empties the buffer, so the report never has it);
- the stdout and stderr of every process a file in the test's folder starts (``subprocess.run``,
  ``check_output``, ``Popen.communicate``); output it sends to ``DEVNULL`` goes to a temporary file that is
  searched instead, and a process whose piped output it reads some other way than ``communicate()`` fails the
  check, since the check cannot see that output (processes that a library or colam_core starts show the user
  only what their parent prints, which is searched);
- every stream and error output of a notebook run with ``papermill.execute_notebook`` (a cell's error output is
  what Jupyter shows: IPython's traceback unless the exception renders itself in one line);
- exceptions that end a thread (``threading.excepthook``) or are ignored in ``__del__`` (``sys.unraisablehook``).

A test that must show a traceback (torchrun's own report of a worker killed on purpose) is listed in EXPECTED with
the reason and a pattern; only tracebacks whose exception matches it and that have no frame in colam_core/ or
workbench/ are allowed there; any other fails as usual.

``pytest --reliability-cases`` runs only the tables' tests (and refuses a table entry that no collected test
matches); ``--reliability-doc PATH`` reads another document (the plugin's own tests use it).
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "RELIABILITY.md"
MARK = "Traceback (most recent call last)"
REF = re.compile(r"`tests/(test_\w+\.py)::(test_\w+)(?:\[([^\]]+)\])?`")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

#: "FILE::FUNC" (every parameter) or "FILE::FUNC[PARAM]" -> (why a traceback is expected there, a regex its last
#: line, the exception, must match). Keep this the only place where a table case may show a traceback; an allowed
#: one must also have no frame in colam_core/ or workbench/ (see `_allowed`).
EXPECTED: dict[str, tuple[str, str]] = {
    "test_ddp.py::test_torchrun_cli_trains_like_one_process_and_resumes_after_a_kill": (
        "the test SIGKILLs a worker on purpose (COLAM_FAULT=batch:19); torchrun, PyTorch's launcher, stops the other "
        "rank and reports the dead child with a traceback of its own (the table: torchrun stops the others)",
        r"^torch\.distributed\.elastic\.multiprocessing\.errors\.ChildFailedError: ?$"),
    "test_ddp.py::test_ctrl_c_under_torchrun_stops_every_rank_cleanly_and_resumes": (
        "after both ranks stop cleanly and rank 0 prints the resume command, torchrun itself reports the SIGINT "
        "it got with a traceback of its own (the table: torchrun itself then reports the signal)",
        r"^torch\.distributed\.elastic\.multiprocessing\.api\.SignalException: Process \d+ got signal: 2$"),
}
PROJECT_FRAME = re.compile(r'File "[^"]*/(colam_core|workbench)/')


@dataclass(frozen=True)
class Case:
    file: str
    func: str
    param: str | None
    row: str  # "Bad input row 14" / "Faults: disk full (ENOSPC) ..."


def table_cases(doc: Path) -> list[Case]:
    """Every test reference in a table row of `doc` (a row: a line starting with '|')."""
    cases, section = [], ""
    for line in doc.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        first = cells[0] if cells else ""
        row = f"{section} row {first}" if first.isdigit() else f"{section}: {first[:70]}"
        for file, func, param in REF.findall(line):
            cases.append(Case(file, func, param or None, row))
    return cases


def _node_key(item) -> tuple[str, str, str | None]:
    func = getattr(item, "originalname", None) or item.name.split("[", 1)[0]
    callspec = getattr(item, "callspec", None)
    return item.path.name, func, (callspec.id if callspec is not None else None)


def _matches(case: Case, key: tuple[str, str, str | None]) -> bool:
    return (case.file, case.func) == key[:2] and (case.param is None or case.param == key[2])


def tracebacks(text: str) -> list[str]:
    """The tracebacks in `text` (ANSI colours removed): each from its header line to the exception line."""
    lines = ANSI.sub("", text).splitlines()
    found = []
    for i, line in enumerate(lines):
        if MARK not in line:
            continue
        block = [line]
        for nxt in lines[i + 1:i + 200]:
            block.append(nxt)
            # the exception line ends a Python traceback; IPython's frames ("Cell In[3], line 4", "File ~/x.py:9")
            # start in column 0, its exception line too, so for those the block runs on to the first "Name: text"
            if nxt and not nxt[0].isspace() and re.match(r"[A-Za-z_][\w.]*(: |$)", nxt) and not nxt.startswith(
                    ("File ", "Cell ")):
                break
        found.append("\n".join(block))
    return found


def _text(data) -> str:
    if data is None:
        return ""
    if isinstance(data, (bytes, bytearray)):
        return bytes(data).decode("utf-8", "replace")
    return str(data)


def _command(args) -> str:
    cmd = args[0] if args else "?"
    cmd = " ".join(map(str, cmd)) if isinstance(cmd, (list, tuple)) else str(cmd)
    return cmd if len(cmd) <= 160 else cmd[:157] + "..."


@dataclass
class Watch:
    """What one table case showed: (where, text) pairs, and the processes it started."""
    root: Path
    texts: list[tuple[str, str]] = field(default_factory=list)
    devnull: list[tuple[str, object]] = field(default_factory=list)  # (where, temporary file)
    piped: list[tuple[str, object]] = field(default_factory=list)  # (command, Popen) with PIPE output
    reported: set = field(default_factory=set)

    def add(self, where: str, data) -> None:
        text = _text(data)
        if MARK in ANSI.sub("", text):
            self.texts.append((where, text))

    def by_test_code(self) -> bool:
        """Whether the process being started comes from a file of the tests, not from a library or the code under
        test (what those show the user passes through their own output, which is searched)."""
        f = sys._getframe(2)
        while f is not None and f.f_code.co_filename in (subprocess.__file__, __file__):
            f = f.f_back
        name = f.f_code.co_filename if f is not None else ""
        try:
            return Path(name).resolve().is_relative_to(self.root)
        except (OSError, ValueError):
            return False

    def read_devnull(self) -> None:
        for where, f in self.devnull:
            try:
                f.seek(0)
                self.add(where, f.read())
            except (OSError, ValueError):
                pass


_WATCH = pytest.StashKey[Watch]()
_CASES = pytest.StashKey[list]()


def pytest_addoption(parser):
    group = parser.getgroup("no-traceback", "docs/RELIABILITY.md's cases show no Python traceback")
    group.addoption("--reliability-cases", action="store_true",
                    help="run only the tests named in docs/RELIABILITY.md's tables")
    group.addoption("--reliability-doc", default=str(DOC), help="the document whose tables name the cases")


def pytest_configure(config):
    config.stash[_CASES] = table_cases(Path(config.getoption("reliability_doc")))
    if config.getoption("capture", None) == "no":
        config.issue_config_time_warning(pytest.PytestConfigWarning(
            "-s / --capture=no: the no-traceback check of docs/RELIABILITY.md's cases cannot see what they print "
            "outside capsys/capfd, processes and notebooks"), stacklevel=2)


def cases_of(item) -> list[Case]:
    key = _node_key(item)
    return [c for c in item.config.stash.get(_CASES, []) if _matches(c, key)]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session, config, items):
    if not config.getoption("reliability_cases"):
        return
    keys = [_node_key(i) for i in items]
    narrowed = {Path(str(a).split("::", 1)[0]).name for a in config.args if "::" in str(a)}  # FILE::TEST given
    files = {k[0] for k in keys} - narrowed
    missing = [c for c in config.stash[_CASES] if c.file in files and not any(_matches(c, k) for k in keys)]
    if missing:
        names = ", ".join(sorted({f"{c.file}::{c.func}" + (f"[{c.param}]" if c.param else "") for c in missing}))
        raise pytest.UsageError(f"{config.getoption('reliability_doc')} names tests that were not collected: {names}")
    keep = [i for i in items if cases_of(i)]
    dropped = [i for i in items if not cases_of(i)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = keep


@pytest.fixture(autouse=True)
def _no_traceback_watch(request):
    """For a table case: record the output of capsys/capfd reads, processes, notebooks and dying threads."""
    item = request.node
    if not cases_of(item):
        yield
        return
    watch = Watch(root=Path(str(item.path)).resolve().parent)
    item.stash[_WATCH] = watch
    mp = pytest.MonkeyPatch()

    read = pytest.CaptureFixture.readouterr

    def readouterr(self):
        res = read(self)
        watch.add("the output the test read with capsys/capfd (stdout)", res.out)
        watch.add("the output the test read with capsys/capfd (stderr)", res.err)
        return res
    mp.setattr(pytest.CaptureFixture, "readouterr", readouterr)

    init, communicate = subprocess.Popen.__init__, subprocess.Popen.communicate

    def popen_init(self, *args, **kwargs):
        mine = watch.by_test_code()
        if mine:
            for stream in ("stdout", "stderr"):
                if kwargs.get(stream) == subprocess.DEVNULL:
                    kwargs[stream] = tempfile.TemporaryFile()
                    watch.devnull.append((f"the {stream} (sent to DEVNULL) of `{_command(args)}`", kwargs[stream]))
        init(self, *args, **kwargs)
        if mine and subprocess.PIPE in (kwargs.get("stdout"), kwargs.get("stderr")):
            watch.piped.append((_command(args), self))

    def popen_communicate(self, *args, **kwargs):
        self._no_traceback_read = True
        cmd = _command([self.args])
        try:
            out, err = communicate(self, *args, **kwargs)
        except subprocess.TimeoutExpired as e:
            watch.add(f"the stdout of `{cmd}`", e.stdout)
            watch.add(f"the stderr of `{cmd}`", e.stderr)
            raise
        watch.add(f"the stdout of `{cmd}`", out)
        watch.add(f"the stderr of `{cmd}`", err)
        return out, err
    mp.setattr(subprocess.Popen, "__init__", popen_init)
    mp.setattr(subprocess.Popen, "communicate", popen_communicate)

    papermill = sys.modules.get("papermill")
    if papermill is not None and hasattr(papermill, "execute_notebook"):
        execute = papermill.execute_notebook

        def execute_notebook(input_path, output_path, *args, **kwargs):
            try:
                return execute(input_path, output_path, *args, **kwargs)
            finally:
                for where, text in notebook_outputs(output_path):
                    watch.add(f"{where} of notebook {Path(str(input_path)).name}", text)
        mp.setattr(papermill, "execute_notebook", execute_notebook)

    hook = threading.excepthook

    def excepthook(args):
        import traceback
        watch.add(f"an exception that ended thread {getattr(args.thread, 'name', '?')}",
                  "".join(traceback.format_exception(args.exc_type, args.exc_value, args.exc_traceback)))
        hook(args)
    mp.setattr(threading, "excepthook", excepthook)

    unraisable = sys.unraisablehook

    def unraisablehook(u):
        import traceback
        if u.exc_type is not None:
            watch.add("an exception ignored in " + repr(u.object),
                      "".join(traceback.format_exception(u.exc_type, u.exc_value, u.exc_traceback)))
        unraisable(u)
    mp.setattr(sys, "unraisablehook", unraisablehook)
    try:
        yield
    finally:
        mp.undo()
        watch.read_devnull()
        for _, f in watch.devnull:
            f.close()
        watch.devnull.clear()


def notebook_outputs(path) -> list[tuple[str, str]]:
    """(where, text) of every stream and error output of an executed notebook file; [] if there is none."""
    import json
    try:
        nb = json.loads(Path(str(path)).read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return []
    found = []
    for i, cell in enumerate(nb.get("cells", [])):
        n = cell.get("execution_count")
        name = f"cell In [{n}]" if n else f"cell {i}"
        for out in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            if out.get("output_type") == "stream":
                found.append((f"the {out.get('name', 'stream')} of {name}", _join(out.get("text"))))
            elif out.get("output_type") == "error":
                found.append((f"the error output of {name}", _join(out.get("traceback"))))
    return found


def _join(text) -> str:
    return "\n".join(text) if isinstance(text, list) else _text(text)


def _expected(item) -> list[tuple[str, str]]:
    file, func, param = _node_key(item)
    names = {f"{file}::{func}", f"{file}::{func}[{param}]"}
    return [v for k, v in EXPECTED.items() if k in names]


def _allowed(tb: str, expected: list[tuple[str, str]]) -> bool:
    """An expected traceback: its exception line matches a pattern, and none of its frames is the project's."""
    last = tb.rstrip().splitlines()[-1].strip()
    return not PROJECT_FRAME.search(tb) and any(re.search(pattern, last) for _, pattern in expected)


def _problems(item, report) -> list[str]:
    watch = item.stash.get(_WATCH, None)
    if watch is None:
        return []
    watch.read_devnull()
    sources = [*watch.texts, *((f"pytest's {name.lower()}", text) for name, text in report.sections)]
    allowed = _expected(item)
    problems = []
    for where, text in sources:
        for tb in tracebacks(text):
            if _allowed(tb, allowed) or (where, tb) in watch.reported:
                continue
            watch.reported.add((where, tb))
            lines = tb.splitlines()
            shown = lines if len(lines) <= 10 else [lines[0], "...", *lines[-8:]]
            problems.append(f"a Python traceback in {where}:\n" + "\n".join("    " + ln for ln in shown))
    if report.when == "call":
        for cmd, p in watch.piped:
            if not getattr(p, "_no_traceback_read", False):
                problems.append(f"`{cmd}` pipes its output, which the test does not read with communicate(), so "
                                "this check cannot see it; read it with communicate() (or subprocess.run)")
    return problems


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when in ("call", "teardown") and not report.skipped:
        problems = _problems(item, report)
        if problems:
            rows = "; ".join(sorted({c.row for c in cases_of(item)}))
            msg = (f"no-traceback check: {item.nodeid} holds a case of docs/RELIABILITY.md ({rows}), and the user "
                   "must never see a Python traceback there (list an expected one in tests/no_traceback.py's "
                   "EXPECTED, with the reason):\n\n" + "\n\n".join(problems))
            if report.failed:
                report.sections.append(("no-traceback check", msg))
            else:
                report.outcome, report.longrepr = "failed", msg
    return report
