"""Dependencies shared by the routes: the context, who is asking, and what they may reach.

Every route declares its access level with ``guard(level)``; the level is also written into the
OpenAPI document (``x-access``), where a test finds any route that has none. Also what the
alerting routers (alarms, silences, plans, warnings, drills) share: the engine and its refusals.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import Field

from api.context import ApiContext
from api.errors import ApiError
from api.owners import OwnerParts, apply, refusals
from api.users import Principal, Role

if TYPE_CHECKING:
    from alerts.engine import AlertEngine
    from alerts.queries import StoredQueries

_bearer = HTTPBearer(auto_error=False)
COOKIE = "estatewatch_token"
BOOTSTRAP_ADMIN = Principal("admin", Role.ADMIN, frozenset(), "bootstrap admin")


def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ApiContext, Depends(context)]


def request_token(request: Request, creds: HTTPAuthorizationCredentials | None) -> str | None:
    # The dashboard's EventSource cannot send headers: it carries the login cookie instead.
    return creds.credentials if creds else request.cookies.get(COOKIE)


def bearer_token(request: Request) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def presented_tokens(request: Request) -> list[str]:
    """Every token the request carries (the bearer header's and the login cookie's), for a
    logout that must revoke them all."""
    found = [bearer_token(request), request.cookies.get(COOKIE)]
    return list(dict.fromkeys(t for t in found if t))


def principal(
    request: Request,
    ctx: Ctx,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    token = request_token(request, creds)
    if not token:
        raise ApiError(401, "unauthorized", "log in, or send 'Authorization: Bearer <token>'")
    if ctx.admin_token and hmac.compare_digest(token.encode(), ctx.admin_token.encode()):
        return BOOTSTRAP_ADMIN
    p = ctx.users.principal_for_token(token) if ctx.users else None
    if p is None:
        raise ApiError(401, "unauthorized", "unknown or expired token: log in again")
    return p


CurrentUser = Annotated[Principal, Depends(principal)]


def not_found(estate: str) -> ApiError:
    # The same answer as for an estate that does not exist: no hint that it does.
    return ApiError(404, "not_found", f"estate {estate!r} not found")


def _estate_read(estate: str, p: CurrentUser) -> Principal:
    if not p.can_read(estate):
        raise not_found(estate)
    return p


def _estate_operate(estate: str, p: CurrentUser) -> Principal:
    if not p.can_read(estate):
        raise not_found(estate)
    if not p.can_operate(estate):
        raise ApiError(403, "forbidden", f"{p.role.value} may only read estate {estate!r}")
    return p


def _role(*roles: Role) -> Any:
    def check(p: CurrentUser) -> Principal:
        if p.role not in roles:
            allowed = " or ".join(r.value for r in roles)
            raise ApiError(403, "forbidden", f"only {allowed} may do this")
        return p

    return check


def _user(p: CurrentUser) -> Principal:
    return p


LEVELS: dict[str, Any] = {
    "user": _user,  # any logged-in user; what they get is filtered to their estates
    "estate:read": _estate_read,
    "estate:operate": _estate_operate,
    "authority": _role(Role.ADMIN, Role.AUTHORITY),
    "admin": _role(Role.ADMIN),
}


def guard(level: str) -> dict[str, Any]:
    """Keyword arguments for a route decorator: the check and its OpenAPI mark."""
    if level == "public":
        return {"openapi_extra": {"x-access": "public"}}
    return {"dependencies": [Depends(LEVELS[level])], "openapi_extra": {"x-access": level}}


def require_operate(p: Principal, estate: str) -> None:
    """For routes whose estate comes from a stored object (an alarm, an activation)."""
    if not p.can_read(estate):
        raise ApiError(404, "not_found", "not found")
    if not p.can_operate(estate):
        raise ApiError(403, "forbidden", f"{p.role.value} may only read estate {estate!r}")


def require_read(p: Principal, estate: str) -> None:
    if not p.can_read(estate):
        raise ApiError(404, "not_found", "not found")


def visible_estates(p: Principal) -> frozenset[str] | None:
    """None: every estate (admins, authorities)."""
    return None if p.sees_all_estates else p.estates


def check_estate_filter(p: Principal, estate: str | None) -> None:
    if estate is not None and not p.can_read(estate):
        raise ApiError(404, "not_found", f"estate {estate!r} not found")


# Epoch milliseconds accepted from callers (JS-safe integers; far beyond any real date).
Ms = Annotated[int, Field(ge=0, lt=2**53, examples=[1768003200000])]


@contextmanager
def engine_errors() -> Iterator[None]:
    """The engine's refusals as API errors: a change the state forbids is a conflict, a value
    it cannot use is an invalid request (what was wrong is in the message)."""
    with refusals():
        yield


def reads_of(ctx: ApiContext) -> StoredQueries:
    """The alerts' reads: the engine's where this process runs one, else the store's."""
    engine: AlertEngine | None = getattr(ctx, "alerts", None)
    if engine is not None:
        return engine.queries
    reads: StoredQueries | None = getattr(ctx, "alert_reads", None)
    if reads is None:
        raise ApiError(503, "unavailable", "alarms and plans are not running on this process")
    return reads


def owner_act(ctx: ApiContext, estate: str, action: str, args: dict[str, Any], by: str) -> Any:
    """A person's action on an estate, applied by the estate's owner: this process when it
    holds the estate's alert engine, else the owner over the broker (``api/owners.py``)."""
    router = getattr(ctx, "owners", None)
    if router is not None:
        return router.act(estate, action, args, by)
    parts = OwnerParts(getattr(ctx, "alerts", None), getattr(ctx, "commands", None))
    return apply(parts, action, args, by)
