"""Core: settings, database, artifact store, ids, errors, auth context and audit."""
