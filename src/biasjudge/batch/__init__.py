"""Batch judging of whole files: `biasjudge judge-file IN OUT`.

:mod:`biasjudge.batch.judge_file` streams a JSONL or Parquet file of pairs through a judge, in
input order, resumable after a kill (its function :func:`~biasjudge.batch.judge_file.judge_file`
is the job); :mod:`biasjudge.batch.ray_engine` runs the same job's judging on Ray Data (an actor
pool, one judge per actor). The job reads its rows with :mod:`biasjudge.batch.rows`, writes
them with :mod:`biasjudge.batch.output` and builds its judge from :mod:`biasjudge.batch.settings`.
Nothing else in biasjudge imports this package but the CLI.

Nothing is re-exported here: a function `judge_file` on the package would hide the module of
the same name (`import biasjudge.batch.judge_file as m` would give the function).
"""
