"""estatewatch: estatewatch."""
