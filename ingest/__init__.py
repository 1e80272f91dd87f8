"""estatewatch: ingest."""
