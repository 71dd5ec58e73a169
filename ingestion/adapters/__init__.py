"""Adapters: one module per (technology, port); the embedded ones run on one machine, offline.

Embedded: ``local_blob`` (a folder as the blob source), ``local_artifacts`` (a folder of
checkpoints), ``sqlite_jobs``, ``sqlite_index`` (FTS5 + vectors), ``local_embedder`` (feature hashing);
``_folders`` and ``_sqlite`` hold what they share. Nothing is re-exported here: ``bootstrap`` imports
the modules it needs, so an embedded run never imports an Azure SDK and an Azure run never opens SQLite.
"""
