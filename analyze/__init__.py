"""sloan: the analyzer. Opens run directories with DuckDB."""
