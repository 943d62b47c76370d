"""Write JUnit XML with the installed pytest and pytest-rerunfailures, for the rerun tests.

    python tests/data/rerunfailures/generate.py [OUTPUT_DIR]

Builds a throwaway test project in a temporary directory, runs ``python -m pytest --reruns 3
--junitxml=...`` on it twice (pytest's default JUnit settings, then ``junit_family=xunit1``
with ``junit_logging=all``), and writes ``rerun-<version>.xml`` and
``rerun-<version>-xunit1.xml`` to OUTPUT_DIR (default: this folder), where <version> is the
pytest-rerunfailures version. The files are pytest's output, unedited. Run it with the
interpreter whose pytest and pytest-rerunfailures should write them; it prints their paths.

Plugins are not auto-loaded (only pytest-rerunfailures is loaded, with ``-p``), so nothing
else installed beside pytest changes what is written.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Every name here is asserted on by tests/core/test_parsers_reruns.py.
TESTS = '''\
from pathlib import Path

import pytest

RUNS = Path(__file__).with_name("runs")


def count_run(name):
    """How many times ``name`` ran before, counting this run; kept in a file of this project,
    so the count survives the reruns (which re-import nothing) and starts at 0 every time."""
    RUNS.mkdir(exist_ok=True)
    marker = RUNS / name
    runs = int(marker.read_text()) if marker.exists() else 0
    marker.write_text(str(runs + 1))
    return runs


def test_fails_once():
    print("fails_once stdout")
    assert count_run("fails_once") > 0, "fails on the first run only"


def test_always_fails():
    print("always_fails stdout")
    assert False, "fails on every run"


def test_passes():
    pass


@pytest.fixture
def flaky_setup():
    if count_run("flaky_setup") == 0:
        raise RuntimeError("setup fails on the first run only")


def test_setup_fails_once(flaky_setup):
    pass


@pytest.mark.skip(reason="never runs")
def test_skipped():
    pass


class TestOther:
    def test_fails_once(self):
        """Same name as the flaky module-level test, another class: another test."""
'''

RUNS = {
    "": [],
    "-xunit1": ["-o", "junit_family=xunit1", "-o", "junit_logging=all"],
}


def generate(output: Path) -> list[Path]:
    output.mkdir(parents=True, exist_ok=True)
    written = []
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTEST_", "TESTLENS_"))
    }
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    for suffix, options in RUNS.items():
        target = output / f"rerun-{version('pytest-rerunfailures')}{suffix}.xml"
        with tempfile.TemporaryDirectory() as scratch:
            project = Path(scratch)
            (project / "pytest.ini").write_text("[pytest]\n")  # stop the search for a config
            (project / "test_reruns.py").write_text(TESTS)
            command = [
                sys.executable,
                "-m",
                "pytest",
                "-p",
                "pytest_rerunfailures",
                "-p",
                "no:cacheprovider",
                "--reruns",
                "3",
                f"--junitxml={target}",
                *options,
                "test_reruns.py",
            ]
            done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
        if done.returncode != 1 or not target.is_file():  # 1: some tests failed, as intended
            sys.exit(f"pytest exited with {done.returncode}:\n{done.stdout}\n{done.stderr}")
        written.append(target)
    return written


if __name__ == "__main__":
    for path in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(path)
