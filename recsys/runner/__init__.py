"""runner: the jobs. ``cli`` parses a job's command line and config, builds the session
(``recsys.session``) and exits with one line on failure; ``pipeline`` runs ingest ->
train -> evaluate -> recommend through sources, model, evaluation and sinks. The top of
the import graph: nothing in recsys imports the runner."""
