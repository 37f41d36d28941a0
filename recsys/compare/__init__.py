"""Compare a recsys run against BigQuery ML's own output (the compare job, ``jobs/compare.py``).

The flow, one module per step:

- ``inputs``: reads BigQuery ML's side (files written by ``bq extract``: CSV, newline-delimited
  JSON, Parquet, Avro; or BigQuery tables) and the recsys side (by default the sink's tables)
  and checks them before anything is written; ``frames`` turns each into canonical columns.
- ``stages`` and ``topk``: the comparisons (ML.EVALUATE, ML.TRAINING_INFO, ML.RECOMMEND, the
  top-k lists, ML.WEIGHTS' intercepts), frames in, frozen ``results`` out; ``verdict`` judges
  the figures against ``compare.tolerances``.
- ``render``: the one renderer, results to Markdown, SVG plots, console lines and
  ``report.html`` (drawn by ``text``, ``svg`` and ``html_page``).
- ``job``: ``run_compare`` runs the steps and is the only module that writes (the sink's
  ``compare_*`` tables, the report's files).

Ids are compared as text (an INT64 side matches a STRING side); ids on one side only are
counted, never silently dropped. Latent factors are identified only up to a rotation, so
predictions and intercepts are compared, factors are not.

It may import ``recsys.config``, ``recsys.schemas``, ``recsys.errors``, ``recsys.evaluation.ranking`` (the
top-k order), ``recsys.session`` (the spark-avro jar), ``recsys.sinks``, ``recsys.bigquery``
(late, for BigQuery tables) and ``recsys.job_report``; not the other jobs. Only the job runner
(``recsys.runner.cli``, for ``avro_conf``) and ``jobs/compare.py`` import it.

Plots are hand-written SVG (``svg``), not matplotlib. matplotlib is a dependency the project
does not have: ``pip download matplotlib`` (3.11.2, Python 3.11 x86_64) fetches 24.4 MB of
wheels besides numpy (matplotlib, fonttools, pillow, kiwisolver, contourpy, cycler,
pyparsing), 79 MB installed, for the driver of every Dataproc job. Its SVG of one figure
differed between two runs (a date and random ids, unless ``svg.hashsalt`` and
``metadata={"Date": None}`` are set) and its text is drawn as glyph paths, so a test cannot read
a plot's numbers back. The hand-written plots give the same bytes for the same data, and every
data mark carries its value.
"""

from recsys.compare.frames import predictions_frame, topk_frame, topk_from_predictions
from recsys.compare.inputs import avro_conf, read_files
from recsys.compare.job import run_compare
from recsys.compare.stages import compare_predictions
from recsys.compare.topk import compare_topk

__all__ = ["avro_conf", "compare_predictions", "compare_topk", "predictions_frame",
           "read_files", "run_compare", "topk_frame", "topk_from_predictions"]
