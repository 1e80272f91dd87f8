"""estatewatch: api."""
