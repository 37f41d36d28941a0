"""Writers of the files ``bq extract`` (and bigframes' exports, which run the same EXPORT DATA)
leaves, for fixtures of the compare job. Each fact about BigQuery's export formats is sourced:

- Unaliased expressions are named by BigQuery itself, ``f0_``, ``f1_``, ...:
  https://github.com/googleapis/google-cloud-python/issues/17394 ("BigQuery then auto-names every
  unaliased select expression f0_, f1_, f2_, ...") -- so the tutorial's top-5 query, whose
  ``ARRAY_AGG(STRUCT(...))`` has no alias, leaves a column ``f0_``.
- NEWLINE_DELIMITED_JSON writes INTEGER (INT64) values as JSON strings, FLOAT as numbers (an
  integral FLOAT without a fraction), and one object per line:
  http://qiita.com/sonots/items/fcdaa62145740b57ddd5 (table "BigQuery Type / Exported JSON Type":
  INTEGER -> string, citing google-bigquery issue 31), and
  https://cloud.google.com/bigquery/docs/loading-data-cloud-storage-json (integers beyond 2^53
  must travel as strings). NULL fields are left out of the object.
- An export is limited to 1 GB per file; a URI with one ``*`` wildcard shards it into several
  files, the ``*`` replaced by a 12-digit zero-padded file number (``recommend-000000000000.avro``,
  ``...-000000000001.avro``): same qiita page ("gs://my-bucket/file-name-*.json").
- Avro: a record named ``Root`` (https://qiita.com/kanedaq/items/4269ef53853af286b8e3, the
  BigQuery import/export schema), a NULLABLE column as the union ``["null", T]``
  (https://githubissues.com/DataBiosphere/azul/6678: "NULLABLE STRING ... [null, string]"),
  INT64 as ``long``, FLOAT64 as ``double``, STRING as ``string``, REPEATED as ``array``, RECORD as
  a nested ``record`` (https://hexdocs.pm/avro_utils/readme.html, the Avro <-> BigQuery table).
- CSV: a header row, RFC 4180 quoting (``"`` doubled), NULL as an empty field; nested and
  repeated columns cannot be exported to CSV (qiita page above: "RECORD 型があると CSV では出力
  できない").
- Parquet: no source found in the searchable corpus for BigQuery's exact Parquet writer; the
  fixtures use the standard Parquet types (INT64, DOUBLE, UTF8 BYTE_ARRAY, LIST of STRUCT) that
  pyarrow writes, which is what the types map to.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np


def shard_names(prefix: str, ext: str, count: int) -> List[str]:
    """File names of a ``prefix-*.ext`` export in ``count`` shards."""
    return [f"{prefix}-{n:012d}.{ext}" for n in range(count)]


# --- newline-delimited JSON ---------------------------------------------------------------------

def _json_value(v):
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))  # INT64 as a JSON string
    if isinstance(v, dict):
        return {k: _json_value(x) for k, x in v.items() if x is not None}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_json_value(x) for x in v]
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return int(f) if f.is_integer() and abs(f) < 2 ** 53 else f
    return v


def write_json(path: str, rows: Iterable[dict]) -> None:
    """NEWLINE_DELIMITED_JSON as bq extract writes it."""
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            obj = {k: _json_value(v) for k, v in row.items() if v is not None}
            fh.write(json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n")


# --- Avro ---------------------------------------------------------------------------------------

def _zz(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    out = bytearray()
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _encode(schema, value) -> bytes:
    if isinstance(schema, list):  # ["null", T]: NULLABLE
        return _zz(0) if value is None else _zz(1) + _encode(schema[1], value)
    if isinstance(schema, dict) and schema["type"] == "array":
        items = list(value or [])
        body = b"".join(_encode(schema["items"], x) for x in items)
        return (_zz(len(items)) + body if items else b"") + _zz(0)
    if isinstance(schema, dict) and schema["type"] == "record":
        return b"".join(_encode(f["type"], value.get(f["name"])) for f in schema["fields"])
    if schema == "long":
        return _zz(int(value))
    if schema == "double":
        return struct.pack("<d", float(value))
    if schema == "string":
        data = str(value).encode("utf-8")
        return _zz(len(data)) + data
    raise ValueError(f"unsupported Avro schema {schema!r}")


def avro_type(bq_type: str, mode: str = "NULLABLE", fields=None, name: str = "x"):
    """The Avro type BigQuery exports a column of ``bq_type`` / ``mode`` as."""
    if bq_type == "RECORD":
        base = {"type": "record", "name": name,
                "fields": [{"name": n, "type": t} for n, t in fields]}
    else:
        base = {"INT64": "long", "FLOAT64": "double", "STRING": "string"}[bq_type]
    if mode == "REPEATED":
        return {"type": "array", "items": base}
    return ["null", base] if mode == "NULLABLE" else base


def _avro_header(fields: Sequence[Tuple[str, object]]) -> Tuple[bytes, bytes]:
    """(sync marker, file header) of an Avro container with record ``Root`` of ``fields``."""
    schema = {"type": "record", "name": "Root", "fields": [{"name": n, "type": t}
                                                           for n, t in fields]}
    sync = os.urandom(16)
    meta = {"avro.schema": json.dumps(schema).encode(), "avro.codec": b"null"}
    head = b"Obj\x01" + _zz(len(meta))
    for key, value in meta.items():
        head += _encode("string", key) + _zz(len(value)) + value
    return sync, head + _zz(0) + sync


def write_avro(path: str, fields: Sequence[Tuple[str, object]], rows: Sequence[dict],
               block_rows: int = 20000) -> None:
    """An Avro object container file (null codec): record ``Root`` with ``fields`` (name, Avro
    type from ``avro_type``), rows in blocks."""
    sync, head = _avro_header(fields)
    with open(path, "wb") as fh:
        fh.write(head)
        for lo in range(0, len(rows), block_rows):
            block = rows[lo:lo + block_rows]
            body = b"".join(_encode(t, row.get(n)) for row in block for n, t in fields)
            fh.write(_zz(len(block)) + _zz(len(body)) + body + sync)


def write_avro_columns(path: str, columns: Dict[str, np.ndarray], types: Dict[str, str],
                       block_rows: int = 50000) -> None:
    """A fast path for flat NULLABLE INT64 / FLOAT64 columns without NULLs (ML.RECOMMEND)."""
    names = list(columns)
    n = len(columns[names[0]])
    enc = {}
    for name in names:
        if types[name] == "INT64":
            values = columns[name].astype(np.int64)
            uniq, inverse = np.unique(values, return_inverse=True)
            table = [b"\x02" + _zz(int(v)) for v in uniq]
            enc[name] = [table[k] for k in inverse]
        else:
            packed = columns[name].astype("<f8").tobytes()
            enc[name] = [b"\x02" + packed[8 * k:8 * k + 8] for k in range(n)]
    fields = [(name, ["null", "long" if types[name] == "INT64" else "double"]) for name in names]
    sync, head = _avro_header(fields)
    with open(path, "wb") as fh:
        fh.write(head)
        for lo in range(0, n, block_rows):
            hi = min(n, lo + block_rows)
            body = b"".join(b"".join(enc[name][k] for name in names) for k in range(lo, hi))
            fh.write(_zz(hi - lo) + _zz(len(body)) + body + sync)


# --- CSV ----------------------------------------------------------------------------------------

def _csv_cell(v) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if isinstance(v, (float, np.floating)):
        text = repr(float(v))
        return text[:-2] if text.endswith(".0") else text
    text = str(v)
    if any(c in text for c in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    """CSV as bq extract writes it: header, RFC 4180 quoting, NULL empty."""
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(",".join(header) + "\n")
        for row in rows:
            fh.write(",".join(_csv_cell(v) for v in row) + "\n")
