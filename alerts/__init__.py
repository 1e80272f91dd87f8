"""estatewatch: alerts."""
