"""Layer 1, files: atomic writes, JSON lines, the run directory's layout, the SQLite label store."""
