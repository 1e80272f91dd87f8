"""Users, roles and bearer tokens.

Roles: ``admin`` (everything), ``authority`` (reads every estate, runs reports and inspection
draws), ``operator`` (reads its estates, acknowledges and resolves their alarms, ticks their
plan tasks), ``viewer`` (reads its estates). Passwords are kept as scrypt hashes, tokens as
SHA-256 hashes (they are random and long, so a fast hash is enough); neither is ever stored
in clear. Own tables and schema version on the state database's engine.

A password has at least ``MIN_PASSWORD`` characters and is not one of the 30,000 most common
ones (zxcvbn's list). Disabling, deleting a user or rotating its password deletes its tokens
at once; the API then ends its live streams.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ingest.schema import NotFound, version_table
from protocol.clock import now_ms

SCHEMA_VERSION = 1
TOKEN_DAYS = 30
MIN_PASSWORD = 10
MAX_PASSWORD = 200

metadata = sa.MetaData()
schema_version = version_table("users_schema_version", metadata)
users = sa.Table(
    "users",
    metadata,
    sa.Column("username", sa.String(64), primary_key=True),
    sa.Column("display_name", sa.String(200), nullable=False, server_default=""),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("estates", sa.Text, nullable=False, server_default="[]"),  # JSON list of ids
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
)
tokens = sa.Table(
    "api_tokens",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("username", sa.String(64), sa.ForeignKey("users.username"), nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("expires_ms", sa.BigInteger, nullable=False),
)


class Role(StrEnum):
    ADMIN = "admin"
    AUTHORITY = "authority"
    OPERATOR = "operator"
    VIEWER = "viewer"


@dataclass(frozen=True)
class Principal:
    """Who is asking, and what they may see and do."""

    username: str
    role: Role
    estates: frozenset[str] = frozenset()
    display_name: str = ""

    @property
    def sees_all_estates(self) -> bool:
        return self.role in (Role.ADMIN, Role.AUTHORITY)

    def can_read(self, estate: str) -> bool:
        return self.sees_all_estates or estate in self.estates

    def can_operate(self, estate: str) -> bool:
        return self.role is Role.ADMIN or (self.role is Role.OPERATOR and estate in self.estates)

    def public(self) -> dict[str, Any]:
        return {
            "username": self.username,
            "display_name": self.display_name,
            "role": self.role.value,
            "estates": sorted(self.estates),
        }


class UserError(ValueError):
    pass


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return f"scrypt$16384$8$1${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        _alg, n, r, p, salt, digest = stored.split("$")
        got = hashlib.scrypt(
            password.encode(),
            salt=bytes.fromhex(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(digest) // 2,
        )
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), digest)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@functools.cache
def common_passwords() -> frozenset[str]:
    """The 30,000 most common passwords of zxcvbn's list, lower case (loaded on first use)."""
    from zxcvbn.frequency_lists import FREQUENCY_LISTS

    return frozenset(p.lower() for p in FREQUENCY_LISTS["passwords"])


def password_problem(password: str, username: str = "") -> str | None:
    """Why a new password is refused, or None when it may be used."""
    if len(password) < MIN_PASSWORD:
        return f"the password must have at least {MIN_PASSWORD} characters"
    if len(password) > MAX_PASSWORD:
        return f"the password must have at most {MAX_PASSWORD} characters"
    folded = password.lower()
    if folded in common_passwords() or len(set(password)) < 4:
        return "this password is one of the most common ones: choose another"
    if len(username) >= 3 and username.lower() in folded:
        return "the password must not contain the user name"
    return None


def new_password() -> str:
    """A random password for a rotation (shown once)."""
    return secrets.token_urlsafe(15)  # 20 characters


class UserStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # an unknown user's password is checked against this, so that the answer takes as
        # long as for a known user: the time tells nothing about which names exist
        self._dummy_hash = hash_password(secrets.token_urlsafe(16))
        with engine.begin() as conn:
            if not sa.inspect(conn).has_table("users_schema_version"):
                metadata.create_all(conn)
                conn.execute(
                    schema_version.insert().values(version=SCHEMA_VERSION, applied_ms=now_ms())
                )

    def _principal(self, row: Any) -> Principal:
        return Principal(
            row.username, Role(row.role), frozenset(orjson.loads(row.estates)), row.display_name
        )

    def create_user(
        self, username: str, role: Role, password: str, estates: list[str], display_name: str = ""
    ) -> Principal:
        if problem := password_problem(password, username):
            raise UserError(problem)
        if role in (Role.OPERATOR, Role.VIEWER) and not estates:
            raise UserError(f"an {role.value} must be bound to at least one estate")
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    users.insert().values(
                        username=username,
                        display_name=display_name,
                        role=role.value,
                        estates=orjson.dumps(sorted(set(estates))).decode(),
                        password_hash=hash_password(password),
                        created_ms=now_ms(),
                    )
                )
        except sa.exc.IntegrityError:
            raise UserError(f"user {username!r} already exists") from None
        return Principal(username, role, frozenset(estates), display_name)

    def list_users(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(users).order_by(users.c.username)).all()
        return [
            {**self._principal(r).public(), "disabled": r.disabled, "created_ms": r.created_ms}
            for r in rows
        ]

    def login(self, username: str, password: str) -> tuple[Principal, str] | None:
        """A new token for the right password, else None. The password is hashed whether the
        user exists or not (constant-time answer)."""
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(users).where(users.c.username == username)).first()
        ok = check_password(password, row.password_hash if row else self._dummy_hash)
        if row is None or row.disabled or not ok:
            return None
        token = secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            conn.execute(
                tokens.insert().values(
                    token_hash=token_hash(token),
                    username=username,
                    created_ms=now_ms(),
                    expires_ms=now_ms() + TOKEN_DAYS * 86_400_000,
                )
            )
        return self._principal(row), token

    def principal_for_token(self, token: str) -> Principal | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(users)
                .join(tokens, tokens.c.username == users.c.username)
                .where(
                    tokens.c.token_hash == token_hash(token),
                    tokens.c.expires_ms > now_ms(),
                    users.c.disabled == sa.false(),
                )
            ).first()
        return self._principal(row) if row else None

    def revoke(self, token: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(tokens.delete().where(tokens.c.token_hash == token_hash(token)))

    def token_valid(self, token: str) -> bool:
        return self.principal_for_token(token) is not None

    # --- lifecycle: each change takes effect at once (the user's tokens go) ----------------
    def _row(self, conn: Any, username: str) -> Any:
        row = conn.execute(sa.select(users).where(users.c.username == username)).first()
        if row is None:
            raise NotFound(f"user {username!r} not found")
        return row

    def get_user(self, username: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            r = self._row(conn, username)
        return {**self._principal(r).public(), "disabled": r.disabled, "created_ms": r.created_ms}

    def set_disabled(self, username: str, disabled: bool) -> dict[str, Any]:
        with self.engine.begin() as conn:
            self._row(conn, username)
            conn.execute(
                users.update().where(users.c.username == username).values(disabled=disabled)
            )
            if disabled:
                conn.execute(tokens.delete().where(tokens.c.username == username))
        return self.get_user(username)

    def update_user(
        self,
        username: str,
        role: Role | None = None,
        estates: list[str] | None = None,
        display_name: str | None = None,
    ) -> dict[str, Any]:
        """A new role, estates or name; what is left out stays. Takes effect on the user's
        next request (its tokens look the user up each time)."""
        with self.engine.begin() as conn:
            row = self._row(conn, username)
            now_role = role or Role(row.role)
            now_estates = sorted(set(estates)) if estates is not None else orjson.loads(row.estates)
            if now_role in (Role.OPERATOR, Role.VIEWER) and not now_estates:
                raise UserError(f"an {now_role.value} must be bound to at least one estate")
            values: dict[str, Any] = {
                "role": now_role.value,
                "estates": orjson.dumps(now_estates).decode(),
            }
            if display_name is not None:
                values["display_name"] = display_name
            conn.execute(users.update().where(users.c.username == username).values(**values))
        return self.get_user(username)

    def delete_user(self, username: str) -> None:
        """The account and its tokens go; what the user did (alarm notes, draws) keeps the
        name it was done under."""
        with self.engine.begin() as conn:
            self._row(conn, username)
            conn.execute(tokens.delete().where(tokens.c.username == username))
            conn.execute(users.delete().where(users.c.username == username))

    def set_password(self, username: str, password: str, checked: bool = True) -> None:
        """A new password; every token of the user is revoked (log in again everywhere).
        ``checked=False`` for a random one of ours (a rotation), which needs no policy."""
        with self.engine.connect() as conn:
            self._row(conn, username)  # 404 before any policy talk
        if checked and (problem := password_problem(password, username)):
            raise UserError(problem)
        digest = hash_password(password)
        with self.engine.begin() as conn:
            self._row(conn, username)
            conn.execute(
                users.update().where(users.c.username == username).values(password_hash=digest)
            )
            conn.execute(tokens.delete().where(tokens.c.username == username))

    def verify_password(self, username: str, password: str) -> bool:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(users).where(users.c.username == username)).first()
        ok = check_password(password, row.password_hash if row else self._dummy_hash)
        return row is not None and ok
