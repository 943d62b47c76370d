"""The three rooms stay apart (DESIGN.md): core/ is pure, client/ talks to the server only
over HTTP, and the pytest plugin loads no CLI. Checked on the import statements themselves,
so a violation fails here before it can surface as a slow plugin or a bloated client."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "testlens"


def imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


def modules(room: str) -> list[Path]:
    return sorted((PACKAGE / room).rglob("*.py"))


def offending(paths: list[Path], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    bad = {}
    for path in paths:
        hits = sorted(
            name
            for name in imports(path)
            if any(name == f or name.startswith(f + ".") for f in forbidden)
        )
        if hits:
            bad[str(path.relative_to(PACKAGE.parent))] = hits
    return bad


def test_the_rooms_have_modules():
    for room in ("core", "server", "client"):
        assert len(modules(room)) >= 3, room


def test_core_is_pure():
    forbidden = (
        "testlens.server",
        "testlens.client",
        "testlens.cli",
        "fastapi",
        "starlette",
        "sqlalchemy",
        "httpx",
        "pydantic",
    )
    assert offending(modules("core"), forbidden) == {}


def test_client_talks_to_the_server_only_over_http():
    forbidden = ("testlens.server", "fastapi", "starlette", "sqlalchemy", "uvicorn", "alembic")
    assert offending(modules("client"), forbidden) == {}


def test_the_pytest_plugin_does_not_load_the_cli():
    plugin = PACKAGE / "client" / "pytest_plugin.py"
    assert offending([plugin], ("testlens.client.cli", "testlens.cli", "click")) == {}


def test_the_check_can_fail():
    # Relative imports are resolved, and a forbidden one is reported: the server's app
    # imports FastAPI and its own errors module as ``from . import errors``.
    app = PACKAGE / "server" / "app.py"
    assert "testlens.server.errors" in imports(app)
    found = offending([app], ("fastapi.responses", "testlens.server.errors"))
    assert found == {
        "testlens/server/app.py": [
            "fastapi.responses",
            "fastapi.responses.JSONResponse",
            "testlens.server.errors",
        ]
    }
