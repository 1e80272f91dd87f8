"""Log in and out, who am I, and (for admins) users."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from api.deps import COOKIE, Ctx, CurrentUser, guard, request_token
from api.errors import ApiError
from api.users import TOKEN_DAYS, Role, UserError, UserStore

router = APIRouter(prefix="/api/v1", tags=["users"])


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=200)


class UserIn(BaseModel):
    username: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", examples=["duty-xinhua"])
    display_name: str = Field(default="", max_length=200, examples=["新华小区值班员"])
    role: Role
    estates: list[str] = Field(default_factory=list, max_length=500)
    password: str = Field(min_length=8, max_length=200)


def _users(ctx: Ctx) -> UserStore:
    if ctx.users is None:
        raise ApiError(503, "unavailable", "user accounts are not set up on this service")
    return ctx.users


@router.post("/login", **guard("public"))
def login(body: LoginIn, ctx: Ctx, response: Response) -> dict[str, Any]:
    """A token for the dashboard (also set as an HttpOnly cookie for the live stream)."""
    got = _users(ctx).login(body.username, body.password)
    if got is None:
        raise ApiError(401, "bad_credentials", "wrong user name or password")
    who, token = got
    response.set_cookie(
        COOKIE, token, max_age=TOKEN_DAYS * 86_400, httponly=True, samesite="strict"
    )
    return {"token": token, "user": who.public()}


@router.post("/logout", **guard("user"))
def logout(ctx: Ctx, request: Request, response: Response) -> dict[str, Any]:
    token = request_token(request, None) or request.headers.get("authorization", "")[7:]
    if token and ctx.users:
        ctx.users.revoke(token)
    response.delete_cookie(COOKIE)
    return {"ok": True}


@router.get("/me", **guard("user"))
def me(p: CurrentUser) -> dict[str, Any]:
    return p.public()


@router.get("/users", **guard("admin"))
def list_users(ctx: Ctx) -> dict[str, Any]:
    items = _users(ctx).list_users()
    return {"items": items, "total": len(items)}


@router.post("/users", status_code=201, **guard("admin"))
def create_user(body: UserIn, ctx: Ctx) -> dict[str, Any]:
    for estate in body.estates:
        ctx.state.get_estate(estate)  # 404 names an estate that does not exist
    try:
        return (
            _users(ctx)
            .create_user(body.username, body.role, body.password, body.estates, body.display_name)
            .public()
        )
    except UserError as exc:
        raise ApiError(409 if "exists" in str(exc) else 422, "invalid_user", str(exc)) from None
