"""The BigQuery tier (tests/bigquery) skips where its prerequisites are missing, but fails in CI
(CI=true, as .ci/run sets it) when the tier is run, so that CI cannot pass on a skipped tier.

Runs pytest itself in subprocesses on the tier's folder with the emulator made missing
(RECSYS_BQEMU_VENV pointing nowhere): collection only, no Spark and no emulator start.
"""

import os
import subprocess
import sys

from conftest import REPO


def run_tier(tmp_path, ci):
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["RECSYS_BQEMU_VENV"] = str(tmp_path / "no-emulator")
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-m", "bigquery", "tests/bigquery", "-k", "smoke or secrets"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_missing_emulator_skips_the_tier_outside_ci(tmp_path):
    proc = run_tier(tmp_path, ci=False)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert " skipped" in proc.stdout and "error" not in proc.stdout.lower()
    assert "BigQuery emulator not installed" in proc.stdout


def test_missing_emulator_fails_the_tier_in_ci(tmp_path):
    proc = run_tier(tmp_path, ci=True)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "skipped" not in proc.stdout
    assert "CI runs the BigQuery tier but BigQuery emulator not installed" in proc.stdout
