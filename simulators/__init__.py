"""estatewatch: simulators."""
