"""The README and docs/ stay true to the code: every setting and every error code the server
declares is documented, with the default and the status the code has."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from testlens.server.errors import ErrorCode
from testlens.server.settings import DECLARED, Settings

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DOCS = README + "".join(p.read_text() for p in sorted((ROOT / "docs").glob("*.md")))


def section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def table_rows(text: str) -> list[list[str]]:
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[1:]]


def shown(value: object) -> str:
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def test_the_settings_table_lists_exactly_the_declared_settings():
    rows = table_rows(section("Configuration"))
    documented = {name for row in rows for name in re.findall(r"`(TESTLENS_\w+)`", row[0])}
    assert documented == {setting.variable for setting in DECLARED}


def test_each_documented_default_is_the_real_default():
    defaults = {f.name: f.default for f in fields(Settings)}
    rows = table_rows(section("Configuration"))
    checked = 0
    for setting in DECLARED:
        default = defaults.get(setting.field)
        if default is None or not isinstance(default, int | float | str | tuple):
            continue  # computed defaults (paths, URLs, keys) are described in words
        (row,) = [r for r in rows if f"`{setting.variable}`" in r[0]]
        assert shown(default) in row[1], (setting.variable, default, row[1])
        checked += 1
    assert checked >= 7


def test_every_error_code_is_documented():
    missing = [code.name for code in ErrorCode if not re.search(rf"\b{code.name}\b", DOCS)]
    assert missing == []


def test_codes_written_with_a_status_have_that_status():
    pairs = re.findall(r"`(\d{3}) ([A-Z][A-Z_]+)`", DOCS)
    assert len(pairs) >= 5
    for status, name in pairs:
        assert ErrorCode[name].status == int(status), (name, status)


def test_the_readme_error_table_gives_each_code_its_real_status():
    rows = table_rows(section("Errors"))
    assert rows, "the README has an error table"
    for row in rows:
        status = int(row[0])
        for name in re.findall(r"`([A-Z_]+)`", row[1]):
            assert ErrorCode[name].status == status, (name, status)
