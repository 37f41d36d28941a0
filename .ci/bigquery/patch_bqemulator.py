"""Patch bqemulator 1.4.0 so the spark-bigquery-connector (0.42.1) works against it.

Run with the emulator venv's interpreter: `.venv-bqemu/bin/python .ci/bigquery/patch_bqemulator.py`.
Idempotent: each patch leaves a `# recsys patch N` marker and is skipped when the marker is there.
Fails loudly (exit 1) on any other bqemulator version, or when the source to replace is not found
exactly once, so an upgrade is noticed instead of silently running an unpatched emulator.

Five emulator bugs, each found by running the real connector against the emulator:
  1. Storage Write into a table with STRUCT / ARRAY<STRUCT> columns fails at commit.
  2. Storage Read in ARROW format (the connector's default) returns 0 rows, silently.
  3. Direct-write overwrite (MERGE ... INSERT ROW) fails.
  4. SELECT query results (connector `query` option, and DataFrame.count()) cannot be read.
  5. Tables created with standard SQL type names (INT64, FLOAT64, ...) crash the connector.
"""

import importlib.metadata
import importlib.util
import pathlib
import subprocess
import sys

EXPECTED_VERSION = "1.4.0"


def fail(msg):
    sys.exit(f"patch_bqemulator: {msg}")


version = importlib.metadata.version("bqemulator")
if version != EXPECTED_VERSION:
    fail(f"these patches are for bqemulator {EXPECTED_VERSION}, found {version}; re-check each patch")


_PKG = pathlib.Path(importlib.util.find_spec("bqemulator").origin).parent


def source_file(module):
    # resolved by path, so no emulator module is imported (and cached) half-patched
    path = _PKG.joinpath(*module.split(".")[1:]).with_suffix(".py")
    if not path.is_file():
        fail(f"{path} not found; unexpected bqemulator layout")
    return path


def patch(n, module, old, new, *, append=False):
    """Replace `old` (exactly one occurrence) by `new`, or append `new` when `append`.
    `new` must contain the marker `# recsys patch <n>`."""
    marker = f"# recsys patch {n}"
    assert marker in new, f"patch {n}: marker missing from replacement"
    path = source_file(module)
    src = path.read_text()
    if marker in src:
        print(f"patch {n}: already applied ({path.name})")
        return
    if append:
        for name in old:  # for appended code, `old` lists names the new code relies on
            if name not in src:
                fail(f"patch {n}: {name!r} not found in {path}; unexpected source")
        src = src + new
    else:
        count = src.count(old)
        if count != 1:
            fail(f"patch {n}: expected the original code once in {path}, found it {count} times; unexpected source")
        src = src.replace(old, new)
    path.write_text(src)
    print(f"patch {n}: applied ({path})")


# Patch 1 -- bug: the Storage Write API builds the target table's Arrow schema from
# {"name", "type", "mode"} only (write_servicer._table_arrow_schema), dropping the nested
# `fields` of RECORD columns. Symptom: any direct write into a table with a STRUCT or
# ARRAY<STRUCT> column fails at BatchCommitWriteStreams with
#   UNKNOWN: Unexpected <class '_duckdb.InvalidInputException'>: Invalid Input Error:
#   Attempted to convert a STRUCT with no fields to DuckDB which is not supported
# Fix: build the field dicts with the REST serializer, which recurses into sub-fields.
patch(1, "bqemulator.grpc_api.write_servicer",
      '''    fields_raw = [
        {"name": f.name, "type": f.type, "mode": f.mode} for f in table_meta.schema_.fields
    ]''',
      '''    from bqemulator.api.routes.tables import _field_to_rest  # recsys patch 1: keep nested fields

    fields_raw = [_field_to_rest(f) for f in table_meta.schema_.fields]''')

# Patch 2 -- bug: ReadSession.arrow_schema.serialized_schema is a whole Arrow IPC *stream*
# (schema message + end-of-stream marker ffffffff00000000). The connector concatenates the
# schema bytes and the record batches into one Java ArrowStreamReader, which stops at the EOS
# marker. Symptom: reading a table with readDataFormat=ARROW (the default) returns 0 rows, no
# error (AVRO reads and the Python storage client are unaffected).
# Fix: emit the bare schema message.
patch(2, "bqemulator.streaming.read_session",
      '''    schema_sink = io.BytesIO()
    writer = pa.ipc.new_stream(schema_sink, schema)  # type: ignore[no-untyped-call,unused-ignore]
    writer.close()
    return schema_sink.getvalue()''',
      '''    return schema.serialize().to_pybytes()  # recsys patch 2: no EOS marker after the schema message''')

# Patch 3 -- bug: the connector's direct-write overwrite (SaveMode.Overwrite) writes a temporary
# table, then runs
#   MERGE `t` USING (SELECT * FROM `t_tmp`) ON FALSE WHEN NOT MATCHED THEN INSERT ROW
#   WHEN NOT MATCHED BY SOURCE THEN DELETE
# and the emulator passes BigQuery's `INSERT ROW` through to DuckDB. Symptom: DuckDB
#   Parser Error: syntax error at or near "ROW"
# yet the job is reported DONE, and the connector then fails with
#   BigQueryException: Not found: job:<project>.<job id>
# Fix: rewrite `THEN INSERT ROW` to DuckDB's equivalent `THEN INSERT *` after translation.
patch(3, "bqemulator.sql.translator", ["class SQLTranslator", "def translate(", "Ok"], '''

# recsys patch 3: BigQuery's MERGE ... THEN INSERT ROW is DuckDB's THEN INSERT *
import re as _recsys_re

_recsys_orig_translate = SQLTranslator.translate


def _recsys_translate(self, bq_sql, *args, **kwargs):
    result = _recsys_orig_translate(self, bq_sql, *args, **kwargs)
    if isinstance(result, Ok) and isinstance(result.value, str):
        fixed = _recsys_re.sub(r"\\bTHEN\\s+INSERT\\s+ROW\\b", "THEN INSERT *", result.value,
                               flags=_recsys_re.IGNORECASE)
        if fixed != result.value:
            return Ok(fixed)
    return result


SQLTranslator.translate = _recsys_translate
''', append=True)

# Patch 4 -- bug: SELECT query jobs advertise an anonymous destination table
# `_bqemu_anonymous.anon<job id>` that exists only for tables.get (synthesised). The connector
# reads query results (option `query`, and DataFrame.count()) from that table. Symptoms:
#   Not found: table:<project>._bqemu_anonymous.anon...            (tabledata.list)
#   NOT_FOUND: Table read failed: Catalog Error: ... schema "<project>___bqemu_anonymous"
#   does not exist                                                   (Storage Read)
# Fix (4a, executor): materialise every SELECT result into a real catalog + DuckDB table of
# `_bqemu_anonymous` (never cleaned up: fine for an --ephemeral test emulator);
# (4b, tables.get) prefer that real table over the synthesised response.
_ANCHOR4 = '''        else build_response_schema(arrow_table.schema)
    )
    ctx.metrics.sql_translation_total.labels(outcome="ok").inc()
'''
patch("4a", "bqemulator.jobs.executor", _ANCHOR4, _ANCHOR4 + '''    if statement_type == "SELECT" and not is_scripted:  # recsys patch 4a
        try:
            _recsys_materialize_anon(project_id, job_id, arrow_table, JOB_SCHEMAS[job_id], ctx)
        except Exception as _exc:  # noqa: BLE001
            _log.warning("recsys.anon_materialize_failed", error=str(_exc))
''')
patch("4a-helper", "bqemulator.jobs.executor",
      ["_ANONYMOUS_RESULTS_DATASET", "JOB_SCHEMAS", "_log = get_logger"], '''


def _recsys_materialize_anon(project_id, job_id, arrow_table, schema_fields, ctx):  # recsys patch 4a-helper
    from uuid import uuid4 as _uuid4
    from bqemulator.api.routes.datasets import _rest_to_dataset_meta
    from bqemulator.api.routes.tables import _rest_to_table_meta
    from bqemulator.storage.sql_identifiers import quoted_schema, quoted_table_ref, register_name
    ds = _ANONYMOUS_RESULTS_DATASET
    tid = f"anon{job_id.replace('-', '')}"
    if ctx.catalog.get_dataset(project_id, ds) is None:
        ctx.engine.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted_schema(project_id, ds)}")
        ctx.catalog.create_dataset(_rest_to_dataset_meta(
            project_id, {"datasetReference": {"projectId": project_id, "datasetId": ds}}, ctx.clock))
    meta = _rest_to_table_meta(project_id, ds, {
        "tableReference": {"projectId": project_id, "datasetId": ds, "tableId": tid},
        "schema": {"fields": list(schema_fields)}}, ctx.clock)
    ref = quoted_table_ref(project_id, ds, tid)
    reg = register_name(f"__bqemu_recsys_anon_{_uuid4().hex[:12]}")
    ctx.engine.connection.register(reg, arrow_table)
    try:
        ctx.engine.execute(f"CREATE OR REPLACE TABLE {ref} AS SELECT * FROM {reg}")
    finally:
        ctx.engine.connection.unregister(reg)
    if ctx.catalog.get_table(project_id, ds, tid) is None:
        ctx.catalog.create_table(meta.model_copy(update={"num_rows": arrow_table.num_rows}))
''', append=True)
patch("4b", "bqemulator.api.routes.tables",
      '''    if dataset_id == "_bqemu_anonymous" and table_id.startswith("anon"):
        return _anonymous_result_table_to_rest(project_id, dataset_id, table_id)
    t = ctx.catalog.get_table(project_id, dataset_id, table_id)''',
      '''    t = ctx.catalog.get_table(project_id, dataset_id, table_id)  # recsys patch 4b
    if t is None and dataset_id == "_bqemu_anonymous" and table_id.startswith("anon"):
        return _anonymous_result_table_to_rest(project_id, dataset_id, table_id)''')

# Patch 5 -- bug: tables.get echoes the type names used at creation. Real BigQuery returns the
# legacy names (INTEGER/FLOAT/BOOLEAN/RECORD) in the REST schema. Symptom: reading a table that
# was created with standard names (e.g. by the Python client: INT64, FLOAT64) fails in the
# connector with NullPointerException: ... "LegacySQLTypeName.getStandardType()" is null.
# Fix: normalise to legacy names on output.
patch(5, "bqemulator.api.routes.tables",
      '''    out: dict[str, Any] = {"name": field.name, "type": field.type, "mode": field.mode}''',
      '''    _legacy = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN", "STRUCT": "RECORD"}  # recsys patch 5
    out: dict[str, Any] = {"name": field.name, "type": _legacy.get(field.type.upper(), field.type), "mode": field.mode}''')

# The patched modules must still import, and the names the patches use must resolve.
check = """
import bqemulator.grpc_api.write_servicer, bqemulator.streaming.read_session
import bqemulator.sql.translator as tr, bqemulator.jobs.executor as ex, bqemulator.api.routes.tables as tb
import bqemulator.api.routes.datasets as ds, bqemulator.storage.sql_identifiers as si
assert tr.SQLTranslator.translate is tr._recsys_translate
for mod, name in [(tb, "_field_to_rest"), (tb, "_rest_to_table_meta"), (ds, "_rest_to_dataset_meta"),
                  (si, "quoted_schema"), (si, "quoted_table_ref"), (si, "register_name"),
                  (ex, "_recsys_materialize_anon")]:
    assert hasattr(mod, name), (mod.__name__, name)
"""
r = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
if r.returncode != 0:
    fail("patched emulator does not import cleanly:\n" + r.stderr[-3000:])
print(f"bqemulator {version}: all patches in place")
