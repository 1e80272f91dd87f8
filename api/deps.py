"""Dependencies shared by the routes: the context and the bearer-token check."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.context import ApiContext
from api.errors import ApiError

_bearer = HTTPBearer(auto_error=False)


def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ApiContext, Depends(context)]


def require_admin(
    ctx: Ctx, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> None:
    # Users and roles come with the dashboard issue; until then the bootstrap admin's token
    # is the only key.
    if creds is None:
        raise ApiError(401, "unauthorized", "send 'Authorization: Bearer <token>'")
    if not hmac.compare_digest(creds.credentials.encode(), ctx.admin_token.encode()):
        raise ApiError(401, "unauthorized", "unknown token")


Admin = Depends(require_admin)
