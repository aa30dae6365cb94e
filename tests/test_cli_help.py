"""The command line explains itself: help from the same table as the README, --flag/--no-flag booleans, --version,
`colam notebooks DIR`, and the program name the user typed in every message."""
import re
import sys
from dataclasses import fields
from pathlib import Path

import pytest

import colam_core
from colam_core import Config
from colam_core.cli import _config_from_args, build_parser, main
from colam_core.config import CHOICES
from colam_core.options import BY_NAME, NO_FLAG, OPTIONS, README_END, README_START, format_value, readme_table

ROOT = Path(__file__).resolve().parents[1]


def _words(text: str) -> str:
    return " ".join(text.split())


def _train_help(capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "120")
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    return _words(capsys.readouterr().out)


def _readme_rows() -> dict[str, list[str]]:
    text = (ROOT / "README.md").read_text()
    table = text[text.index(README_START):text.index(README_END)]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        m = re.match(r"`(\w+)`", cells[0]) if len(cells) == 4 else None
        if m:
            rows[m.group(1)] = cells
    return rows


def test_every_option_has_one_row():
    assert [o.name for o in OPTIONS if o.name in BY_NAME] == [o.name for o in OPTIONS]
    assert sorted(BY_NAME) == sorted(f.name for f in fields(Config)), "a Config field needs a row in options.py"
    assert all(o.meaning and o.allowed_text() for o in OPTIONS)


def test_the_readme_table_is_the_generated_one():
    text = (ROOT / "README.md").read_text()
    assert readme_table() in text, "README.md is stale: run `python -m colam_core.options README.md`"


def test_help_readme_and_defaults_agree(capsys, monkeypatch):
    help_text = _train_help(capsys, monkeypatch)
    rows = _readme_rows()
    defaults = Config()
    for f in fields(Config):
        o = BY_NAME[f.name]
        default = format_value(getattr(defaults, f.name))
        name_cell, default_cell, allowed_cell, meaning_cell = rows[f.name]
        assert default_cell == f"`{default}`" and allowed_cell == o.allowed_text() and meaning_cell == o.meaning
        if f.name in NO_FLAG:
            assert o.flag not in help_text
            continue
        assert f"(`{o.flag}`)" in name_cell
        entry = _words(f"{o.meaning}. Allowed: {o.allowed_text()}. Default: {default}.")
        assert entry in help_text, f"{o.flag}: help lacks {entry!r}"


def test_choices_in_the_help_are_the_registries(capsys, monkeypatch):
    help_text = _train_help(capsys, monkeypatch)
    for name, allowed in CHOICES.items():
        assert "Allowed: " + ", ".join(allowed()) in help_text, name
    assert "Allowed: hl, ls, cp, dl, colam, ols, cskd, lr, lr_static, fixed." in help_text


@pytest.mark.parametrize("argv, expected", [
    (["--download"], True),
    (["--download", "true"], True),
    (["--no-download"], False),
    (["--download", "off"], False),
    ([], False),
])
def test_boolean_flags(argv, expected):
    cfg, _ = _config_from_args(build_parser().parse_args(["train", *argv]))
    assert cfg.download is expected


def test_optional_boolean_takes_auto_and_flags_compose():
    argv = ["train", "--channels-last", "auto", "--compile", "--no-nesterov", "--epochs", "4"]
    args = build_parser().parse_args(argv)
    cfg, _ = _config_from_args(args)
    assert cfg.channels_last is None and cfg.compile is True and cfg.nesterov is False and cfg.epochs == 4
    cfg, _ = _config_from_args(build_parser().parse_args(["train", "--no-channels-last"]))
    assert cfg.channels_last is False


def test_no_flag_takes_no_value(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--no-download", "true"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--no-download takes no value" in err and len(err.strip().splitlines()) == 1


def test_log_flag_maps_to_the_trackers():
    cfg, _ = _config_from_args(build_parser().parse_args(["train", "--log", "tensorboard,mlflow",
                                                          "--tracking-uri", "sqlite:///x.db"]))
    assert cfg.trackers == ("tensorboard", "mlflow") and cfg.tracking_uri == "sqlite:///x.db"


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert colam_core.__version__ in capsys.readouterr().out


@pytest.mark.parametrize("argv0, prog", [("/venv/bin/colam", "colam"), ("/x/colam_core/__main__.py",
                                                                          "python -m colam_core")])
def test_messages_name_the_program_the_user_typed(argv0, prog, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [argv0])
    for argv in (["train", "--epochs"], ["train", "--nosuch", "1"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert f"(see `{prog} train --help`)" in capsys.readouterr().err
    from colam_core.runs import resume_command
    assert resume_command("runs/x") == f"{prog} train --resume runs/x"
    assert build_parser().prog == prog


def test_notebooks_are_copied_out(tmp_path, capsys):
    dest = tmp_path / "nb"
    assert main(["notebooks", str(dest)]) == 0
    shipped = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert sorted(p.name for p in dest.glob("*.ipynb")) == shipped and "01_quickstart.ipynb" in shipped
    (dest / "01_quickstart.ipynb").write_text("mine")
    assert main(["notebooks", str(dest)]) == 0
    assert (dest / "01_quickstart.ipynb").read_text() == "mine" and "kept" in capsys.readouterr().out
    assert main(["notebooks", str(dest), "--force"]) == 0
    assert (dest / "01_quickstart.ipynb").read_bytes() == (ROOT / "notebooks" / "01_quickstart.ipynb").read_bytes()
    (tmp_path / "file").write_text("x")
    assert main(["notebooks", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err
