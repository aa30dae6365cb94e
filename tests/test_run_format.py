"""The versioned run format: config.json and summary.json carry `format`, the package version and the git commit;
a reader refuses a format it does not know, naming it; the schema in docs/ARCHITECTURE.md names every key."""
import json
import re
import shutil
from pathlib import Path

import pytest

import colam_core
from colam_core import Config, RunError, Trainer, load_run
from colam_core.runs import RUN_FORMAT, source_commit

ROOT = Path(__file__).resolve().parents[1]


def _copy(run, tmp_path) -> Path:
    dest = tmp_path / run.path.name
    shutil.copytree(run.path, dest)
    return dest


def _edit(path: Path, **changes) -> None:
    d = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    path.write_text(json.dumps(d))


def test_config_and_summary_carry_format_version_and_commit(tiny_runs):
    run = tiny_runs["hl"]
    assert run.resolved["format"] == RUN_FORMAT == run.format and run.summary["format"] == RUN_FORMAT
    assert run.resolved["versions"]["colam_workbench"] == colam_core.__version__
    git = run.resolved["git"]
    assert git == source_commit()
    if (ROOT / ".git").exists():  # a source checkout (a worktree has a .git file)
        assert re.fullmatch(r"[0-9a-f]{40}", git["commit"]) and isinstance(git["dirty"], bool)


def test_a_newer_format_is_refused_by_name(tiny_runs, tmp_path):
    d = _copy(tiny_runs["hl"], tmp_path)
    _edit(d / "config.json", format=RUN_FORMAT + 1)
    with pytest.raises(RunError, match=rf"format {RUN_FORMAT + 1} .*reads formats 1 to {RUN_FORMAT}.*upgrade"):
        load_run(d)
    before = (d / "config.json").read_text()
    with pytest.raises(RunError, match=f"format {RUN_FORMAT + 1}"):  # nor resumed (it would be rewritten)
        Trainer(Config.from_dict(tiny_runs["hl"].config), out=d)
    assert (d / "config.json").read_text() == before


def test_a_summary_of_a_newer_format_is_refused(tiny_runs, tmp_path):
    d = _copy(tiny_runs["hl"], tmp_path)
    _edit(d / "summary.json", format=RUN_FORMAT + 1)
    with pytest.raises(RunError, match=f"summary.json is run-directory format {RUN_FORMAT + 1}"):
        _ = load_run(d).summary


@pytest.mark.parametrize("bad", ["2", 0, True])
def test_a_format_that_is_not_a_number_is_damage(tiny_runs, tmp_path, bad):
    d = _copy(tiny_runs["hl"], tmp_path)
    _edit(d / "config.json", format=bad)
    with pytest.raises(RunError, match="not a format number"):
        load_run(d)


def test_format_1_runs_without_the_key_still_read(tiny_runs, tmp_path):
    d = _copy(tiny_runs["colam"], tmp_path)
    _edit(d / "config.json", format=None, git=None)
    _edit(d / "summary.json", format=None)
    run = load_run(d)
    assert run.format == 1 and run.summary["test_acc"] == tiny_runs["colam"].summary["test_acc"]
    assert run.soft_label_keys() == ["stage_1", "stage_2"] and run.model(1) is not None


def test_the_schema_in_the_docs_names_every_key(tiny_runs):
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    schema = doc[doc.index("## The run directory"):]
    run = tiny_runs["colam"]
    documented = set(re.findall(r"`([A-Za-z_0-9]+)`", schema))
    for what, keys in (("config.json", run.resolved), ("summary.json", run.summary),
                       ("history.csv", run.history.columns)):
        missing = sorted(set(keys) - documented)
        assert missing == [], f"{what} keys not documented in docs/ARCHITECTURE.md: {missing}"
    assert f"`format`: {RUN_FORMAT}" in schema
