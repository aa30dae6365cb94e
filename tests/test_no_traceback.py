"""The no-traceback check (tests/no_traceback.py) fails a table case that shows a traceback, wherever it shows it,
and leaves every other test alone. Each test runs a small pytest session (pytester) in a temporary folder."""
import json
import textwrap

import pytest

import no_traceback

pytest_plugins = ["pytester"]

TB = "Traceback (most recent call last):\\n  File 'x.py', line 1, in <module>\\nValueError: boom"
CRASH = "[sys.executable, '-c', \"raise ValueError('boom')\"]"

TESTS = f"""
import subprocess, sys, threading, traceback
import pytest

def test_prints():
    print("{TB}")

def test_via_subprocess():
    r = subprocess.run({CRASH}, capture_output=True, text=True)
    assert r.returncode == 1 and "ValueError: boom" in r.stderr  # the test alone passes

def test_subprocess_to_devnull():
    assert subprocess.run({CRASH}, stderr=subprocess.DEVNULL).returncode == 1

def test_check_output():
    with pytest.raises(subprocess.CalledProcessError):
        subprocess.check_output({CRASH}, stderr=subprocess.STDOUT)

def test_read_with_capsys(capsys):
    try:
        1 / 0
    except ZeroDivisionError:
        traceback.print_exc()
    assert "ZeroDivisionError" in capsys.readouterr().err

def test_left_unread_in_capfd(capfd):
    subprocess.run({CRASH})  # the child writes to fd 2, which capfd holds until the end of the test

def test_thread():
    t = threading.Thread(target=lambda: 1 / 0)
    t.start()
    t.join()

def test_pipe_read_directly():
    p = subprocess.Popen([sys.executable, "-c", "print('hi')"], stdout=subprocess.PIPE, text=True)
    assert p.stdout.read() == "hi\\n"
    p.wait()
    p.stdout.close()

def test_fails_itself():
    print("{TB}")
    assert False, "its own failure"

@pytest.mark.parametrize("case", ["in-table", "not-in-table"])
def test_param(case):
    print("{TB}")

def test_not_in_table():
    print("{TB}")
    subprocess.run({CRASH}, capture_output=True)

def test_clean(capsys):
    print("error: --T -1.0 is invalid; allowed: a finite number > 0")
    r = subprocess.run([sys.executable, "-c", "import sys; sys.exit('error: one line')"], capture_output=True)
    assert r.returncode == 1 and capsys.readouterr().out
    with pytest.raises(ValueError):  # raised and caught inside the test: nothing is shown
        raise ValueError("boom")

@pytest.mark.parametrize("case", ["only-the-expected-one", "another-one-too"])
def test_expected(case):
    print("Traceback (most recent call last):\\n  File 'run.py', line 1\\nChildFailedError: killed on purpose")
    if case == "another-one-too":
        print("{TB}")
        print('Traceback (most recent call last):\\n  File "/x/colam_core/cli.py", line 9\\nChildFailedError: in ours')
"""

IN_TABLE = ["test_prints", "test_via_subprocess", "test_subprocess_to_devnull", "test_check_output",
            "test_read_with_capsys", "test_left_unread_in_capfd", "test_thread", "test_pipe_read_directly",
            "test_fails_itself", "test_param[in-table]", "test_clean", "test_expected"]


def doc(refs, faults=()):
    rows = "\n".join(f"| {i} | CLI | input {i} | message | `tests/test_cases.py::{r}` |" for i, r in enumerate(refs, 1))
    fault_rows = "\n".join(f"| fault {r} | stops | `tests/test_cases.py::{r}` |" for r in faults)
    return textwrap.dedent("""\
        # Reliability

        ## Faults

        | fault | what happens | test |
        |---|---|---|
        {faults}

        ## Bad input

        | # | where | bad input | message | test |
        |---|---|---|---|---|
        {rows}

        Prose naming `tests/test_cases.py::test_not_in_table` is not a table row.
        """).format(rows=rows, faults=fault_rows)


@pytest.fixture
def session(pytester, monkeypatch):
    expected = ("killed on purpose", "^ChildFailedError")
    monkeypatch.setitem(no_traceback.EXPECTED, "test_cases.py::test_expected", expected)
    pytester.makepyfile(test_cases=TESTS)
    pytester.makefile(".md", RELIABILITY=doc(IN_TABLE[:-2], faults=IN_TABLE[-2:]))

    def run(*args):
        return pytester.inline_run("-p", "no_traceback", "--reliability-doc", str(pytester.path / "RELIABILITY.md"),
                                   "-p", "no:cacheprovider", *args)
    return run


def outcomes(reprec) -> dict[str, tuple[str, str]]:
    """test name -> (outcome of its call, outcome of its teardown), and the messages."""
    res, text = {}, {}
    for r in reprec.getreports("pytest_runtest_logreport"):
        name = r.nodeid.split("::")[-1]
        res.setdefault(name, {})[r.when] = r.outcome
        text[name] = text.get(name, "") + str(r.longrepr or "") + "".join(f"\n{t}\n{s}" for t, s in r.sections)
    return {n: (w.get("call"), w.get("teardown")) for n, w in res.items()}, text


def test_a_table_case_that_shows_a_traceback_fails_wherever_it_shows_it(session):
    got, text = outcomes(session())
    for name in ["test_prints", "test_via_subprocess", "test_subprocess_to_devnull", "test_check_output",
                 "test_read_with_capsys", "test_left_unread_in_capfd", "test_thread", "test_pipe_read_directly", "test_fails_itself",
                 "test_param[in-table]", "test_expected[another-one-too]"]:
        assert got[name][0] == "failed", (name, got[name], text[name])
        assert "no-traceback check" in text[name] and "docs/RELIABILITY.md" in text[name], text[name]
    assert "captured stderr call" in text["test_left_unread_in_capfd"]  # capfd hands what is left to pytest
    assert "Bad input row 1)" in text["test_prints"] and "ValueError: boom" in text["test_prints"]
    assert "the stderr of `" in text["test_via_subprocess"] and "-c raise ValueError('boom')" in text[
        "test_via_subprocess"]
    assert "sent to DEVNULL" in text["test_subprocess_to_devnull"]
    assert "read with capsys/capfd (stderr)" in text["test_read_with_capsys"]
    assert "ZeroDivisionError" in text["test_thread"] and "ended thread" in text["test_thread"]
    assert "does not read with communicate()" in text["test_pipe_read_directly"]
    assert "its own failure" in text["test_fails_itself"] and "no-traceback check" in text["test_fails_itself"]
    assert "Faults: fault test_expected" in text["test_expected[another-one-too]"]
    message = text["test_expected[another-one-too]"].split("Captured stdout call")[0]
    assert "ValueError: boom" in message and "ChildFailedError: in ours" in message  # a frame of colam_core
    assert "killed on purpose" not in message  # the expected one is allowed


def test_every_other_test_is_left_alone(session):
    got, text = outcomes(session())
    for name in ["test_clean", "test_param[not-in-table]", "test_not_in_table", "test_expected[only-the-expected-one]"]:
        assert got[name] == ("passed", "passed"), (name, text[name])


def test_reliability_cases_runs_only_the_tables_tests_and_refuses_a_name_that_matches_none(session, pytester):
    reprec = session("--reliability-cases")
    got, _ = outcomes(reprec)
    assert set(got) == {*IN_TABLE[:-1], "test_expected[only-the-expected-one]", "test_expected[another-one-too]"}
    assert len(reprec.getcalls("pytest_deselected")[0].items) == 2
    (pytester.path / "RELIABILITY.md").write_text(doc(["test_prints", "test_param[typo]", "test_gone"]))
    res = pytester.runpytest("-p", "no_traceback", "--reliability-doc", str(pytester.path / "RELIABILITY.md"),
                             "--reliability-cases")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    res.stderr.fnmatch_lines(["*names tests that were not collected: test_cases.py::test_gone, "
                              "test_cases.py::test_param[[]typo[]]*"])


def test_tracebacks_are_found_in_ipython_output_and_in_executed_notebooks(tmp_path):
    ipython = ("\x1b[0;31m---------------------------------------------------------------------------\x1b[0m\n"
               "\x1b[0;31mTypeError\x1b[0m                                 Traceback (most recent call last)\n"
               "Cell \x1b[0;32mIn[3], line 4\x1b[0m\n      2 x = 1\n----> 4 f(x)\n\n"
               "File \x1b[0;32m~/colam_core/params.py:9\x1b[0m, in \x1b[0;36mf\x1b[0;34m(x)\x1b[0m\n"
               "\x1b[0;31mTypeError\x1b[0m: 'int' object is not iterable")
    (tb,) = no_traceback.tracebacks("before\n" + ipython + "\nafter")
    assert tb.endswith("TypeError: 'int' object is not iterable") and "\x1b" not in tb
    assert no_traceback.tracebacks("error: --T -1.0 is invalid; allowed: a finite number > 0") == []
    nb = {"cells": [{"cell_type": "code", "outputs": [{"output_type": "stream", "name": "stderr", "text": ["ok\n"]}]},
                    {"cell_type": "code", "outputs": [{"output_type": "error", "ename": "TypeError",
                                                       "evalue": "x", "traceback": ipython.splitlines()}]}]}
    (tmp_path / "out.ipynb").write_text(json.dumps(nb))
    found = no_traceback.notebook_outputs(tmp_path / "out.ipynb")
    assert [w for w, _ in found] == ["the stderr of cell 0", "the error output of cell 1"]
    assert no_traceback.tracebacks(found[1][1]) and no_traceback.notebook_outputs(tmp_path / "missing") == []


def test_the_real_tables_name_cases():
    cases = no_traceback.table_cases(no_traceback.DOC)
    rows = {c.row for c in cases}
    assert sum(r.startswith("Bad input row ") for r in rows) >= 150
    assert any(r.startswith("Faults: ") for r in rows)
    assert all(c.file.startswith("test_") and c.func.startswith("test_") for c in cases)
