"""estatewatch: gateway."""
