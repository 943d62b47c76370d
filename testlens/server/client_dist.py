"""``GET /client/testlens.whl``: the server hands out its own CI client as a wheel.

testlens is self-hosted and on no public package index, so a CI job cannot ``pip install``
the client from one; but every job that uploads can reach the server. So the server builds a
pure-Python wheel of the client half of the package it runs (``testlens/__init__.py``,
``cli.py``, ``core/`` and ``client/``; never ``server/``, as a client install has no server)
and serves it to anyone, like the health checks: the code is no secret, and a CI job should
not need its upload key before it has a client to send it with. A job then installs the client
that speaks this server's API, with the client's dependencies only (no FastAPI, SQLAlchemy).

The metadata comes from the installed ``testlens`` distribution, so pyproject.toml stays the
one source of truth: the version, the requirements without an extra marker (the client's;
the server's are the ``server`` extra) and the entry points whose module the wheel holds (the
``testlens`` command and the pytest plugin). The wheel is built with the standard library on
the first request and kept in memory; its bytes depend only on the files and the metadata.

pip takes a wheel only under a valid wheel file name, before it sends any request (so neither
a redirect nor ``Content-Disposition`` helps ``pip install .../testlens.whl``): CI recipes
install ``/client/testlens-<version>-py3-none-any.whl``. ``/client/testlens.whl`` serves the
same bytes under a name that never changes, with the versioned name in
``Content-Disposition``, for ``curl -OJ`` and browsers.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import io
import re
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Response

from .errors import ApiError, ErrorCode, error_responses

DISTRIBUTION = "testlens"
TAG = "py3-none-any"
MEDIA_TYPE = "application/octet-stream"
PACKAGE = Path(__file__).resolve().parents[1]  # the installed ``testlens`` package
# What a client install holds, relative to the package: modules and whole subpackages.
CLIENT_PARTS = ("__init__.py", "cli.py", "core", "client")
# A fixed timestamp for every entry, so the same files always make the same bytes.
_EPOCH = (1980, 1, 1, 0, 0, 0)
_EXTRA_MARKER = re.compile(r"\bextra\s*==")

router = APIRouter(tags=["client"])


@dataclass(frozen=True, slots=True)
class Wheel:
    filename: str
    content: bytes


def client_files(package: Path = PACKAGE) -> list[tuple[str, Path]]:
    """``(name in the wheel, file)`` for every file of the client, in a stable order."""
    found: list[tuple[str, Path]] = []
    for part in CLIENT_PARTS:
        path = package / part
        paths = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in paths:
            relative = file.relative_to(package)
            if "__pycache__" in relative.parts or file.suffix in (".pyc", ".pyo"):
                continue
            if any(piece.startswith(".") for piece in relative.parts):
                continue
            found.append((f"{package.name}/{relative.as_posix()}", file))
    return found


def client_requirements(requires: list[str] | None) -> list[str]:
    """The requirements without an extra marker: what ``pip install testlens`` installs.
    Environment markers (``; python_version < "3.12"``) are kept as they are."""
    kept = []
    for requirement in requires or []:
        _, _, marker = requirement.partition(";")
        if not _EXTRA_MARKER.search(marker):
            kept.append(requirement.strip())
    return kept


def _module_file(module: str, names: set[str]) -> bool:
    path = module.replace(".", "/")
    return f"{path}.py" in names or f"{path}/__init__.py" in names


def entry_points_text(
    entry_points: importlib.metadata.EntryPoints, names: set[str]
) -> tuple[str, list[str]]:
    """``entry_points.txt`` with the entry points whose module is in the wheel, and the
    ``console_scripts`` names among them."""
    groups: dict[str, list[str]] = {}
    scripts = []
    for entry in sorted(entry_points, key=lambda e: (e.group, e.name)):
        if not _module_file(entry.module, names):
            continue
        groups.setdefault(entry.group, []).append(f"{entry.name} = {entry.value}")
        if entry.group == "console_scripts":
            scripts.append(entry.name)
    text = "".join(f"[{group}]\n" + "\n".join(lines) + "\n\n" for group, lines in groups.items())
    return text, scripts


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o100644 << 16  # a regular file, rw-r--r--
    return info


def build_wheel(distribution: importlib.metadata.Distribution, package: Path = PACKAGE) -> Wheel:
    """The client wheel of ``distribution``'s version, from the files under ``package``."""
    meta = distribution.metadata
    name = re.sub(r"[-_.]+", "_", meta["Name"]).lower()
    version = meta["Version"]
    dist_info = f"{name}-{version}.dist-info"
    files = [(arcname, path.read_bytes()) for arcname, path in client_files(package)]
    names = {arcname for arcname, _ in files}
    entry_points, scripts = entry_points_text(distribution.entry_points, names)
    if "testlens" not in scripts:
        raise RuntimeError("the installed testlens distribution declares no testlens command")

    def field(key: str) -> str | None:  # (meta[key] of a missing key fails on newer Pythons)
        values = meta.get_all(key) or []
        return str(values[0]) if values else None

    headers = [("Metadata-Version", "2.1"), ("Name", meta["Name"]), ("Version", version)]
    for key in ("Summary", "Requires-Python"):
        if value := field(key):
            headers.append((key, value))
    if value := field("License-Expression") or field("License"):
        headers.append(("License", value))
    headers += [("Requires-Dist", r) for r in client_requirements(distribution.requires)]
    metadata = "".join(f"{key}: {value}\n" for key, value in headers)
    metadata += "\nThe testlens CI client (command, pytest plugin, report parsers), as served by\n"
    metadata += (
        "a testlens server at /client/. The server itself: pip install 'testlens[server]'.\n"
    )
    wheel_file = (
        "Wheel-Version: 1.0\n"
        "Generator: testlens.server.client_dist\n"
        "Root-Is-Purelib: true\n"
        f"Tag: {TAG}\n"
    )
    files += [
        (f"{dist_info}/METADATA", metadata.encode()),
        (f"{dist_info}/WHEEL", wheel_file.encode()),
        (f"{dist_info}/entry_points.txt", entry_points.encode()),
    ]
    record = "".join(_record_line(arcname, data) + "\n" for arcname, data in files)
    record += f"{dist_info}/RECORD,,\n"
    files.append((f"{dist_info}/RECORD", record.encode()))

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for arcname, data in files:
            archive.writestr(_entry(arcname), data)
    return Wheel(f"{name}-{version}-{TAG}.whl", buffer.getvalue())


_lock = threading.Lock()
_built: Wheel | None = None


def client_wheel() -> Wheel:
    """The client wheel of the running server, built on first use and then kept."""
    global _built
    with _lock:
        if _built is None:
            _built = build_wheel(importlib.metadata.distribution(DISTRIBUTION))
        return _built


def _download(wheel: Wheel) -> Response:
    return Response(
        wheel.content,
        media_type=MEDIA_TYPE,
        headers={
            "Content-Disposition": f'attachment; filename="{wheel.filename}"',
            # a server upgrade changes the client behind the same URL
            "Cache-Control": "no-cache",
        },
    )


_WHEEL = {
    "description": "The client wheel (binary). Public: no API key.",
    "content": {MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
}


@router.get("/client/testlens.whl", response_class=Response, responses={200: _WHEEL})
def client_wheel_latest() -> Response:
    """The CI client as a wheel, under a name that never changes (``Content-Disposition``
    gives the versioned file name; ``pip install`` needs that name in the URL)."""
    return _download(client_wheel())


@router.get(
    "/client/{filename}",
    response_class=Response,
    responses={200: _WHEEL, **error_responses(ErrorCode.NOT_FOUND)},  # not this server's wheel
)
def client_wheel_versioned(filename: str) -> Response:
    """The CI client as a wheel under its file name (``testlens-<version>-py3-none-any.whl``),
    for ``pip install <server>/client/<that name>``. Any other name is a 404 that names the
    wheel this server serves."""
    wheel = client_wheel()
    if filename != wheel.filename:
        raise ApiError(
            ErrorCode.NOT_FOUND,
            f"This server serves the client as {wheel.filename}, not {filename}",
            {"filename": filename, "available": wheel.filename},
        )
    return _download(wheel)
