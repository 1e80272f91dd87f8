"""What the API answers: one pydantic model per JSON shape, so OpenAPI describes every response.

The models describe, field by field, what the stores and the engine return today; a route names
its model with ``response_model=`` and may keep returning a dict. ``Out`` forbids fields it does
not list, so a field added to a store's answer but not here fails the tests (a 500 naming it)
instead of silently vanishing from the answer. Where a payload is open by nature (an alarm's
triggering reading or event, a timeline entry's detail, the health parts each role reports) the
field is ``dict[str, Any]`` and says so.
"""

from api.schemas.alerts import *  # noqa: F403
from api.schemas.common import *  # noqa: F403
from api.schemas.dashboard import *  # noqa: F403
from api.schemas.estates import *  # noqa: F403
from api.schemas.supervision import *  # noqa: F403
