"""recsys: BigQuery ML matrix factorization (the MovieLens tutorial) as Spark batch jobs.

The packages follow the data: ``sources`` (files and tables in) -> ``model`` (CREATE MODEL,
ML.RECOMMEND, ML.WEIGHTS) -> ``evaluation`` (ML.EVALUATE, ranking, tuning) -> ``sinks``
(tables out); ``compare`` sets a run beside BigQuery ML's own output; ``runner`` holds the
jobs. Below them all: ``config`` (typed settings), ``schemas`` (table names, schemas and
naming rules), ``errors``, ``sums`` (order-independent sums), ``job_report``, ``session``
(the one SparkSession factory) and ``bigquery`` (the connection, shared by sources and sinks). Imports point from the runner down to the
foundations, never back (tests/test_layout.py)."""

__version__ = "0.1.0"
