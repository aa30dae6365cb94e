"""CLI: trains, resumes, and every bad value exits 2 with one line naming the option, before loading data."""
import json
import subprocess
import sys

import pytest

from colam_core.cli import main


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "colam_core", *args], capture_output=True, text=True, timeout=timeout)


def test_train_show_and_resume_finished(tmp_path):
    out = tmp_path / "r"
    res = run_cli("train", "--dataset", "synthetic", "--method", "colam", "--epochs", "2", "--stages", "2",
                  "--T", "1.5", "--out", str(out), "--quiet")
    assert res.returncode == 0, res.stderr
    assert "test_acc=" in res.stdout and (out / "summary.json").exists()
    show = run_cli("show", str(out))
    assert show.returncode == 0 and "colam on synthetic" in show.stdout and "stage_1" in show.stdout
    again = run_cli("train", "--resume", str(out), "--quiet")
    assert again.returncode == 0 and "test_acc=" in again.stdout
    # calibration both ways, labelled, with summary.json's numbers: when training ends and in `show`
    s = json.loads((out / "summary.json").read_text())
    both = f"ECE softmax(z/T) {s['test_ece']:.4f}, ECE softmax(z) {s['test_ece_T1']:.4f}"
    assert both in res.stdout and both in again.stdout
    assert f"{both} (T = 1.5)" in show.stdout


def test_show_and_resume_a_run_written_before_ece_at_T1(tmp_path, capsys):
    out = tmp_path / "old"
    assert main(["train", "--dataset", "synthetic", "--method", "hl", "--epochs", "1", "--out", str(out),
                 "--quiet"]) == 0
    s = json.loads((out / "summary.json").read_text())
    del s["test_ece_T1"]  # summary.json as runs wrote it before test_ece_T1 existed
    (out / "summary.json").write_text(json.dumps(s))
    capsys.readouterr()
    assert main(["show", str(out)]) == 0
    assert f"ECE softmax(z/T) {s['test_ece']:.4f}, ECE softmax(z) n/a" in capsys.readouterr().out
    assert main(["train", "--resume", str(out), "--quiet"]) == 0   # the finished run reports again, no KeyError
    done = capsys.readouterr().out
    assert "ECE softmax(z/T) " in done and "ECE softmax(z) " in done


@pytest.mark.parametrize("args, needle", [
    (["--dataset", "mnist"], "--dataset 'mnist'"),
    (["--model", "vgg11"], "--model 'vgg11'"),
    (["--method", "foo"], "--method 'foo'"),
    (["--T", "-1"], "--T -1.0"),
    (["--T", "abc"], "--T 'abc'"),
    (["--epochs", "10", "--stages", "4"], "--epochs 10"),
    (["--peer-samples", "0"], "--peer-samples 0"),
    (["--peer-samples", "many"], "--peer-samples 'many'"),
    (["--dataset", "cifar100", "--data-root", "/nonexistent/dir"], "/nonexistent/dir"),
    (["--batch-size", "zero"], "--batch-size 'zero'"),
    (["--hard-weight", "2"], "--hard-weight 2.0"),
    (["--download", "maybe"], "--download 'maybe'"),
])
def test_bad_values_one_line_no_traceback(tmp_path, capsys, args, needle):
    code = main(["train", "--out", str(tmp_path / "r"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err and ("allowed" in err or "--data-root" in err and "--download" in err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_argparse_error_is_one_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--nosuch", "1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--nosuch" in err


def test_resume_of_a_missing_directory(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_different_run_in_out_is_refused(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["train", "--dataset", "synthetic", "--epochs", "1", "--stages", "1", "--out", str(out),
                 "--quiet"]) == 0
    before = (out / "history.csv").read_bytes()
    assert main(["train", "--dataset", "synthetic", "--epochs", "2", "--stages", "1", "--out", str(out)]) == 2
    assert "different run" in capsys.readouterr().err
    assert (out / "history.csv").read_bytes() == before


def test_list(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "colam" in out and "digits" in out and "resnet56" in out
