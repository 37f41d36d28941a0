"""recsys: BigQuery ML matrix factorization (the MovieLens tutorial) as Spark batch jobs."""

__version__ = "0.1.0"
