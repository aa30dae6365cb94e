"""docs/DEFAULTS.md is the one place that says where every default comes from: each table row must match the code."""
import ast
import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from colam_core import analysis
from colam_core.config import DEFAULT_STAGES, Config, paper_recipe, transfer_recipe
from colam_core.metrics import expected_calibration_error

DOC = Path(__file__).resolve().parents[1] / "docs" / "DEFAULTS.md"
PROVENANCE = ("paper states (", "paper silent: our choice, because ", "from the method's own paper (")


def _tables() -> dict[tuple[str, ...], list[list[str]]]:
    """Every markdown table of the document: header cells -> body rows (cells stripped)."""
    tables, header, rows = {}, None, []
    for line in DOC.read_text().splitlines() + [""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if header is None:
                header = tuple(cells)
            elif not set("".join(cells)) <= set("-: "):
                rows.append(cells)
        elif header is not None:
            tables[header], header, rows = rows, None, []
    return tables


def _value(cell: str):
    m = re.fullmatch(r"`(.*)`", cell)
    assert m, f"a value in backticks, got {cell!r}"
    return ast.literal_eval(m.group(1))


def _code(cell: str) -> str:
    return cell.strip("`")


TABLES = _tables()


def test_every_config_option_has_one_row_with_its_default():
    rows = TABLES[("option", "default", "provenance")]
    documented = {_code(r[0]): _value(r[1]) for r in rows}
    assert len(documented) == len(rows), "an option is documented twice"
    defaults = {f.name: getattr(Config(), f.name) for f in dataclasses.fields(Config)}
    assert set(documented) == set(defaults), (sorted(set(defaults) - set(documented)),
                                              sorted(set(documented) - set(defaults)))
    changed = {k: (documented[k], v) for k, v in defaults.items() if documented[k] != v}
    assert not changed, f"defaults changed without their row in docs/DEFAULTS.md (row, code): {changed}"


def test_every_preset_value_has_one_row():
    want = {"paper": paper_recipe("preact_resnet34"), "paper, DenseNet": {"epochs": paper_recipe("densenet_bc_100")
                                                                        ["epochs"]},
            "transfer": transfer_recipe()}
    got: dict[str, dict] = {}
    for preset, option, value, _ in TABLES[("preset", "option", "value", "provenance")]:
        got.setdefault(_code(preset), {})[_code(option)] = _value(value)
    assert got == want


def test_the_other_defaults_match_the_code():
    actual = {
        "stages of `colam`": DEFAULT_STAGES["colam"], "stages of `lr`": DEFAULT_STAGES["lr"],
        "stages of `lr_static`": DEFAULT_STAGES["lr_static"],
        "`metrics.expected_calibration_error` bins":
            inspect.signature(expected_calibration_error).parameters["n_bins"].default,
        "`analysis.adt_adc` normalize": inspect.signature(analysis.adt_adc).parameters["normalize"].default,
        "`analysis.adt_adc_for_run` normalize":
            inspect.signature(analysis.adt_adc_for_run).parameters["normalize"].default,
    }
    rows = {r[0]: _value(r[1]) for r in TABLES[("default of", "value", "provenance")]}
    assert rows == actual
    assert set(DEFAULT_STAGES) == {"colam", "lr", "lr_static"}  # a new method default needs its row


@pytest.mark.parametrize("header", [h for h in TABLES if h[-1] == "provenance"], ids=lambda h: h[0])
def test_every_row_says_where_its_value_comes_from(header):
    for row in TABLES[header]:
        assert row[-1].startswith(PROVENANCE), row


def test_nothing_credits_the_paper_with_the_schedule_stages_or_temperature():
    """The paper tunes stages and T by cross-validation and states neither, nor the 50%/75% step schedule."""
    rows = {(r[0], _code(r[1])): r[-1] for r in TABLES[("preset", "option", "value", "provenance")]}
    for key in (("`paper`", "schedule"), ("`paper`", "milestones"), ("`transfer`", "schedule")):
        assert rows[key].startswith("paper silent"), key
    options = {_code(r[0]): r[-1] for r in TABLES[("option", "default", "provenance")]}
    assert options["T"].startswith("paper silent") and options["milestones"].startswith("paper silent")
    other = {r[0]: r[-1] for r in TABLES[("default of", "value", "provenance")]}
    assert other["stages of `colam`"].startswith("paper silent")
