"""estatewatch: supervision by the housing authority: random inspection draws, yearly reports."""
