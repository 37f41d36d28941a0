#!/usr/bin/env bash
# Install what the BigQuery integration tests (tests/bigquery) need. Idempotent; run from the repo root:
#
#   bash .ci/bigquery/setup.sh && .venv-spark35/bin/python -m pytest -q -p no:cacheprovider tests/bigquery -m bigquery
#
# `setup.sh deps` installs everything but this repo; a later `setup.sh` then adds only the repo
# (editable): .ci/run installs the packages beside the default tier, whose own editable install
# of the repo must not run at the same time as another (both write recsys.egg-info here).
#
# Needs: python3 >= 3.11 for the emulator venv (bqemulator requires it; set BQEMU_PYTHON to choose one),
# python3 >= 3.10 for the Spark venv (SPARK35_PYTHON), Java 17 (for the tests, not for this script),
# network access to PyPI. With UV set to a uv executable (.ci/run sets it), uv installs the pinned
# packages instead of pip, because CI runs this beside the default tier on two cores: 57.5 CPU-s
# against pip's 67.7 here (building pyspark 3.5.9 from its sdist is 25 of them with either tool),
# 16.6 against 184.2 for the Airflow venv (docs/development.md). Creates:
#   .venv-bqemu/     bqemulator 1.4.0 (patched by .ci/bigquery/patch_bqemulator.py), DuckDB 1.5.5 and its
#                    spatial extension, installed for HOME=.venv-bqemu/home so the emulator's
#                    `INSTALL spatial; LOAD spatial` works offline
#   .venv-spark35/   pyspark 3.5 + google-cloud-bigquery + pytest and the other test extras (xxhash,
#                    pillow) + this repo (editable): the BigQuery tier and the 3.5 pass of .ci/run
# The spark-bigquery-connector jar is NOT downloaded here: the tests put
# com.google.cloud.spark:spark-3.5-bigquery:0.42.1 in spark.jars.packages and Spark's Ivy fetches it
# from Maven Central on first use (cached in ~/.ivy2). Only Spark 3.5 is covered: the Spark 4.0
# connector (spark-4.0-bigquery) cannot be downloaded in this environment.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

# --- pinned versions (tested together) ---
BQEMU_PKGS="bqemulator==1.4.0 duckdb==1.5.5 duckdb-extension-spatial==1.5.5 numpy==2.4.6 google-cloud-bigquery==3.47.0"
SPARK35_PKGS="pyspark==3.5.9 google-cloud-bigquery==3.47.0 pandas==3.1.1 pyarrow==26.0.1 pytest==9.2.0 xxhash==4.1.0 pillow==13.0.0"

log() { echo "[bigquery setup] $*"; }

pip_install() {  # pip_install VENV ARGS...: uv's pip when $UV is set, else the venv's own pip
  local venv=$1; shift
  if [ -n "${UV:-}" ]; then
    "$UV" pip install -q --python "$venv/bin/python" "$@"
  else
    "$venv/bin/pip" install -q --upgrade pip && "$venv/bin/pip" install -q "$@"
  fi
}

pick_python() {  # pick_python MINOR_MIN CANDIDATE...: first interpreter >= 3.MINOR_MIN
  local min=$1; shift
  for p in "$@"; do
    [ -n "$p" ] || continue
    command -v "$p" >/dev/null 2>&1 || continue
    if "$p" -c "import sys, venv; sys.exit(0 if sys.version_info >= (3, $min) else 1)" 2>/dev/null; then
      command -v "$p"; return 0
    fi
  done
  return 1
}

# stamp-based idempotency: a venv is (re)installed only when its package list or this script changed
stamp_of() { { echo "$1"; cat "$ROOT/.ci/bigquery/setup.sh"; } | sha256sum | cut -c1-16; }

make_venv() {  # make_venv DIR PYTHON
  if [ ! -x "$1/bin/python" ]; then
    log "creating $1 with $2 ($("$2" --version 2>&1))"
    "$2" -m venv ${UV:+--without-pip} "$1"  # uv needs no pip in the venv
  fi
}

# ---------------------------------------------------------------- emulator venv
PY_EMU=$(pick_python 11 "${BQEMU_PYTHON:-}" python3 python3.13 python3.12 python3.11) || {
  echo "error: bqemulator needs Python >= 3.11 (set BQEMU_PYTHON)" >&2; exit 1; }
make_venv .venv-bqemu "$PY_EMU"
S=$(stamp_of "$BQEMU_PKGS$(cat .ci/bigquery/patch_bqemulator.py)")
if [ "$(cat .venv-bqemu/.setup-stamp 2>/dev/null)" != "$S" ]; then
  log "installing into .venv-bqemu: $BQEMU_PKGS"
  # numpy is not a declared dependency of bqemulator but its start-up imports it;
  # duckdb is pinned to 1.5.5 because the newest spatial extension wheel is 1.5.5 (exact match needed)
  pip_install .venv-bqemu $BQEMU_PKGS
  if [ -f .venv-bqemu/.setup-stamp ]; then  # the packages or the patches changed: re-patch pristine sources
    pip_install .venv-bqemu --force-reinstall --no-deps bqemulator==1.4.0
  fi
  rm -f .venv-bqemu/.setup-stamp
fi

# DuckDB resolves extensions under $HOME/.duckdb/extensions/<version>/<platform>/; the emulator
# runs with HOME=.venv-bqemu/home (see tests/bigquery/emulator.py).
mkdir -p .venv-bqemu/home
HOME="$ROOT/.venv-bqemu/home" .venv-bqemu/bin/python - <<'PY'
import glob, os, duckdb, duckdb_extension_spatial
src = glob.glob(os.path.join(os.path.dirname(duckdb_extension_spatial.__file__), "extensions", "*",
                             "spatial.duckdb_extension"))
assert len(src) == 1, f"expected one spatial extension file, found {src}"
con = duckdb.connect()
if not con.sql("SELECT installed FROM duckdb_extensions() WHERE extension_name = 'spatial'").fetchone()[0]:
    con.install_extension(src[0])
con.load_extension("spatial")  # proves it loads offline
print("[bigquery setup] duckdb", duckdb.__version__, "spatial extension OK under", os.environ["HOME"])
PY

.venv-bqemu/bin/python .ci/bigquery/patch_bqemulator.py
.venv-bqemu/bin/bqemulator --help >/dev/null
echo "$S" > .venv-bqemu/.setup-stamp

# ---------------------------------------------------------------- Spark 3.5 venv
PY_SPARK=$(pick_python 10 "${SPARK35_PYTHON:-}" python3 python3.13 python3.12 python3.11 python3.10) || {
  echo "error: need Python >= 3.10 for .venv-spark35 (set SPARK35_PYTHON)" >&2; exit 1; }
make_venv .venv-spark35 "$PY_SPARK"
S=$(stamp_of "$SPARK35_PKGS")
if [ "$(cat .venv-spark35/.setup-stamp 2>/dev/null)" != "$S" ]; then
  log "installing into .venv-spark35: $SPARK35_PKGS"
  # Compiled to bytecode (pip does that by itself; uv when asked): every Spark job process and
  # Python worker of the 3.5 pass imports pyspark, pandas and pyarrow.
  pip_install .venv-spark35 ${UV:+--compile-bytecode} $SPARK35_PKGS
  echo "$S" > .venv-spark35/.setup-stamp
fi
if [ "${1:-}" = deps ]; then
  log "done (without the repo)"
  exit 0
fi
S=$(stamp_of "$(cat pyproject.toml)")
if [ "$(cat .venv-spark35/.repo-stamp 2>/dev/null)" != "$S" ]; then
  log "installing the repo into .venv-spark35 (editable)"
  pip_install .venv-spark35 -e .
  echo "$S" > .venv-spark35/.repo-stamp
fi
.venv-spark35/bin/python -c "import pyspark, recsys, google.cloud.bigquery as b; print('[bigquery setup] .venv-spark35: pyspark', pyspark.__version__, '| google-cloud-bigquery', b.__version__)"
if ! command -v java >/dev/null 2>&1; then
  log "warning: no java on PATH; the tests need Java 17"
fi
log "done"
