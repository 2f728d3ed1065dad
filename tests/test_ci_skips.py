"""Backends that cannot start skip on a developer machine but fail under CI (``CI=true``), where
scripts/test.sh installs every extra: the Milvus and Ray fixtures use :func:`tests.conftest.skip_unless_ci`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = '''
from tests.conftest import skip_unless_ci

def test_backend():
    skip_unless_ci("the backend server did not start")
'''


@pytest.mark.parametrize(("ci", "outcome"), [("", "1 skipped"), ("true", "1 failed")])
def test_a_backend_that_cannot_start_skips_locally_and_fails_in_ci(tmp_path, ci, outcome):
    probe = tmp_path / "test_probe.py"
    probe.write_text(PROBE)
    env = {**os.environ, "CI": ci, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                          str(probe)], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)  # fmt: skip
    assert outcome in run.stdout, run.stdout + run.stderr
    if outcome == "1 failed":
        assert "the backend server did not start" in run.stdout and "required here, not skipped" in run.stdout


def test_what_counts_as_ci(monkeypatch):
    from tests.conftest import in_ci

    for value, want in [("", False), ("0", False), ("false", False), ("true", True), ("1", True), ("yes", True)]:
        monkeypatch.setenv("CI", value)
        assert in_ci() is want, value


def test_the_milvus_and_ray_fixtures_use_it():
    for name in ("test_milvus.py", "test_ray.py"):
        text = (ROOT / "tests" / name).read_text()
        assert "skip_unless_ci(" in text and "pytest.skip(" not in text and "importorskip" not in text, name


def test_the_system_tools_setup_installs_are_required_in_ci():
    """scripts/setup.sh apt-installs Chromium, FluidSynth and espeak-ng; their tests may not skip under CI."""
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    for name, tool in [("test_browser.py", "chromium"), ("test_tempo_rendered.py", "fluidsynth"),
                       ("test_transcribe.py", "espeak-ng")]:  # fmt: skip
        assert tool in setup, tool
        text = (ROOT / "tests" / name).read_text()
        lines = [ln for ln in text.splitlines() if tool.split("-")[0] in ln.lower() and "pytest.skip(" in ln]
        assert "skip_unless_ci(" in text and not lines, (name, lines)
