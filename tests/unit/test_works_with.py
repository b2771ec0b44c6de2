"""README's "Works with" table is the one tests/works_with.py renders from the matrix's rows."""

from __future__ import annotations

import json
import re
from pathlib import Path

import works_with

TESTS = Path(works_with.__file__).resolve().parent


def test_readme_table_is_the_rendered_rows():
    section = works_with.readme_section(works_with.README.read_text())
    assert section is not None, f"README.md lost the markers {works_with.BEGIN!r}"
    assert section == works_with.render(), (
        "README's Works with table is stale: run `python tests/works_with.py`"
    )


def test_npm_clients_are_pinned_exactly_and_locked():
    package = json.loads((TESTS / "node" / "package.json").read_text())
    lock = json.loads(works_with.NODE_LOCK.read_text())
    for name, spec in package["dependencies"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", spec), f"{name}: pin an exact version, not {spec!r}"
        locked = lock["packages"][f"node_modules/{name}"]["version"]
        assert locked == spec, f"{name}: package.json {spec}, lock {locked}: run npm install"
    for row in works_with.ROWS:
        if row.registry == "npm":
            assert package["dependencies"].get(row.package) == row.version, row.package


def test_rows_name_real_modules_and_their_own_cases():
    ids = [case_id for row in works_with.ROWS for case_id in row.case_ids()]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    for row in works_with.ROWS:
        assert (TESTS / "integration" / f"{row.module}.py").is_file(), row.module
        assert set(row.known_failures) <= set(row.cases), row.key
        assert row.registry in ("npm", "pypi"), row.registry


def test_known_failures_are_strict_xfails():
    modules = {row.module for row in works_with.ROWS}
    for param in (p for module in sorted(modules) for p in works_with.params(module)):
        row, case = param.values
        marks = [m for m in param.marks if m.name == "xfail"]
        if case in row.known_failures:
            assert marks and marks[0].kwargs["strict"] is True, param.id
        else:
            assert not marks, param.id


def test_a_pypi_row_takes_its_version_from_the_exact_pin(tmp_path, monkeypatch):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\nname = "x"\ndependencies = []\n'
        '[project.optional-dependencies]\ndev = ["pipecat-ai[assemblyai]==1.14.0", "ruff>=0.6"]\n'
    )
    monkeypatch.setattr(works_with, "PYPROJECT", pyproject)
    assert works_with.pinned_version("pypi", "pipecat_ai") == "1.14.0"
