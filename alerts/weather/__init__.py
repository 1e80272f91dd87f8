"""Weather levels per hazard per estate: CMA criteria on station readings, official warnings."""

from alerts.weather.board import EstateHazardLevel, WeatherBoard
from alerts.weather.levels import (
    BUNDLED_CRITERIA,
    Criteria,
    Hazard,
    Observed,
    WeatherLevel,
    load_criteria,
    wind_force,
)
from alerts.weather.warnings import OfficialWarning

__all__ = [
    "BUNDLED_CRITERIA",
    "Criteria",
    "EstateHazardLevel",
    "Hazard",
    "Observed",
    "OfficialWarning",
    "WeatherBoard",
    "WeatherLevel",
    "load_criteria",
    "wind_force",
]
