"""Log in and out, who am I, and (for admins) users and their lifecycle."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field

from api import schemas
from api.deps import BOOTSTRAP_ADMIN, COOKIE, Ctx, CurrentUser, guard, presented_tokens
from api.errors import ApiError
from api.users import (
    MAX_PASSWORD,
    MIN_PASSWORD,
    TOKEN_DAYS,
    Principal,
    Role,
    UserError,
    UserStore,
    new_password,
    token_hash,
)

router = APIRouter(prefix="/api/v1", tags=["users"])

# Password hashing (scrypt, ~40 ms of CPU) runs on threads of its own, two at a time: a flood
# of logins queues here, not in the pool every other route runs on, and never on the event
# loop. Beyond MAX_WAITING queued logins the answer is 503 at once.
_verify = ThreadPoolExecutor(max_workers=2, thread_name_prefix="login")
MAX_WAITING = 64
_waiting = 0
_waiting_lock = threading.Lock()

USERNAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class LoginIn(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD)


class UserIn(BaseModel):
    username: str = Field(pattern=USERNAME, examples=["duty-xinhua"])
    display_name: str = Field(default="", max_length=200, examples=["新华小区值班员"])
    role: Role
    estates: list[str] = Field(default_factory=list, max_length=500)
    password: str = Field(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)


class UserChangeIn(BaseModel):
    """What changes; left out: stays as it is."""

    display_name: str | None = Field(default=None, max_length=200)
    role: Role | None = None
    estates: list[str] | None = Field(default=None, max_length=500)


class PasswordIn(BaseModel):
    current: str = Field(min_length=1, max_length=MAX_PASSWORD)
    new: str = Field(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)


def _users(ctx: Ctx) -> UserStore:
    if ctx.users is None:
        raise ApiError(503, "unavailable", "user accounts are not set up on this service")
    return ctx.users


async def _off_loop(fn: Any, *args: Any) -> Any:
    global _waiting
    with _waiting_lock:
        if _waiting >= MAX_WAITING:
            raise ApiError(
                503, "busy", "too many logins at once: try again shortly", {"Retry-After": "1"}
            )
        _waiting += 1
    try:
        return await asyncio.get_running_loop().run_in_executor(_verify, fn, *args)
    finally:
        with _waiting_lock:
            _waiting -= 1


@router.post("/login", response_model=schemas.LoggedIn, **guard("public"))
async def login(body: LoginIn, ctx: Ctx, request: Request, response: Response) -> dict[str, Any]:
    """A token for the dashboard (also set as an HttpOnly cookie for the live stream).
    Throttled per user name and per client address: after a few failures each further
    attempt waits twice as long (429 with ``Retry-After``)."""
    users = _users(ctx)
    address = request.client.host if request.client else "?"
    wait = ctx.login_throttle.attempt(body.username, address)
    if wait:
        raise ApiError(
            429,
            "too_many_attempts",
            f"too many failed logins: try again in {wait} s",
            {"Retry-After": str(wait)},
        )
    got = await _off_loop(users.login, body.username, body.password)
    if got is None:
        raise ApiError(401, "bad_credentials", "wrong user name or password")
    ctx.login_throttle.succeeded(body.username, address)
    who, token = got
    response.set_cookie(
        COOKIE, token, max_age=TOKEN_DAYS * 86_400, httponly=True, samesite="strict"
    )
    return {"token": token, "user": who.public()}


@router.post("/logout", response_model=schemas.Ok, **guard("user"))
def logout(ctx: Ctx, request: Request, response: Response) -> dict[str, Any]:
    """Revokes every token the request carries (bearer and cookie) and ends their streams."""
    tokens = presented_tokens(request)
    if ctx.users:
        for token in tokens:
            ctx.users.revoke(token)
    if ctx.live:
        ctx.live.end_tokens({token_hash(t) for t in tokens})
    response.delete_cookie(COOKIE)
    return {"ok": True}


@router.get("/me", response_model=schemas.User, **guard("user"))
def me(p: CurrentUser) -> dict[str, Any]:
    return p.public()


@router.post("/me/password", response_model=schemas.Ok, **guard("user"))
async def change_password(body: PasswordIn, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    """A new password for the caller, given the current one; every token of the caller is
    revoked (log in again everywhere)."""
    users = _users(ctx)
    if p is BOOTSTRAP_ADMIN:
        raise ApiError(409, "invalid_user", "the bootstrap admin has a token, not a password")
    if not await _off_loop(users.verify_password, p.username, body.current):
        raise ApiError(403, "bad_credentials", "the current password is wrong")
    try:
        await _off_loop(users.set_password, p.username, body.new)
    except UserError as exc:
        raise ApiError(422, "invalid_password", str(exc)) from None
    if ctx.live:
        ctx.live.end_user(p.username)
    return {"ok": True}


@router.get("/users", response_model=schemas.Page[schemas.UserAccount], **guard("admin"))
def list_users(ctx: Ctx) -> dict[str, Any]:
    items = _users(ctx).list_users()
    return {"items": items, "total": len(items)}


@router.post("/users", status_code=201, response_model=schemas.User, **guard("admin"))
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


def _not_self(p: Principal, username: str, what: str) -> None:
    if p.username == username and p is not BOOTSTRAP_ADMIN:
        raise ApiError(409, "invalid_user", f"you cannot {what} your own account")


def _cut(ctx: Ctx, username: str) -> None:
    """The user's tokens are gone: end its open streams too."""
    if ctx.live:
        ctx.live.end_user(username)


@router.patch("/users/{username}", response_model=schemas.UserAccount, **guard("admin"))
def update_user(username: str, body: UserChangeIn, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    """Another role, other estates or name for a user; its open live streams end (they were
    opened for what it could see before) and its next request sees the change."""
    if body.role is not None and body.role is not Role.ADMIN:
        _not_self(p, username, "take the admin role from")
    for estate in body.estates or []:
        ctx.state.get_estate(estate)  # 404 names an estate that does not exist
    try:
        user = _users(ctx).update_user(username, body.role, body.estates, body.display_name)
    except UserError as exc:
        raise ApiError(422, "invalid_user", str(exc)) from None
    _cut(ctx, username)
    return user


@router.post("/users/{username}/disable", response_model=schemas.UserAccount, **guard("admin"))
def disable_user(username: str, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    """The user can no longer log in; its tokens are revoked and its live streams end."""
    _not_self(p, username, "disable")
    user = _users(ctx).set_disabled(username, True)
    _cut(ctx, username)
    return user


@router.post("/users/{username}/enable", response_model=schemas.UserAccount, **guard("admin"))
def enable_user(username: str, ctx: Ctx) -> dict[str, Any]:
    return _users(ctx).set_disabled(username, False)


@router.delete("/users/{username}", response_model=schemas.UserDeleted, **guard("admin"))
def delete_user(username: str, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    """The account and its tokens go, its live streams end; what it did keeps its name."""
    _not_self(p, username, "delete")
    _users(ctx).delete_user(username)
    _cut(ctx, username)
    return {"ok": True, "username": username}


@router.post("/users/{username}/rotate", response_model=schemas.UserPassword, **guard("admin"))
def rotate_user(username: str, ctx: Ctx, p: CurrentUser) -> dict[str, Any]:
    """A new random password, shown in this answer only; the old one and every token of
    the user stop working at once."""
    _not_self(p, username, "rotate")
    password = new_password()
    _users(ctx).set_password(username, password, checked=False)
    _cut(ctx, username)
    return {"username": username, "password": password}
