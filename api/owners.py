"""People's actions applied by the estate's owner, from any API node (issue 16).

An action on an estate's alarms, plans or devices changes state that one process holds in
memory: the alert engine (open alarms, ``for`` timers, escalations, plan activations) and the
command desk (commands waiting for their answers) of the estate's owner. In one process
(``run``) that is this process; scaled out, an API node sends the action to the owner's
address (``cluster.owners``) over the broker and answers with the owner's reply.

- ``ACTIONS``: every action by name, as a function of the owner's parts, the arguments and who
  acted. The same table is applied locally (``apply``) and by an owner for a request
  (``serve``), so a remote action is the local one, answered the same way.
- ``refusal``: the one mapping of the engine's and the desk's refusals to API errors (404,
  409, 422, 429), used here and by the routes; an owner's refusal reaches the caller as it
  was, status, code and message.
- ``OwnerRouter``: the API node's side. ``act(estate, name, args, by)`` applies it here when
  this process owns the estate, else asks the owner and waits at most ``timeout_s``; an owner
  that does not answer in time is a 503 that says, in Chinese and English, what to do.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from alerts.alarms import InvalidTransition
from alerts.commands import CommandRefused, CommandsBusy
from alerts.remote import CommandConflict
from api.errors import ApiError
from ingest.model import NotOwner
from ingest.schema import AlreadyExists, NotFound

if TYPE_CHECKING:
    from alerts.engine import AlertEngine
    from alerts.remote import CommandDesk

__all__ = [
    "ACTIONS",
    "MAX_ARG_CHARS",
    "NO_ESTATE",
    "OwnerParts",
    "OwnerRouter",
    "Request",
    "apply",
    "refusal",
    "refusals",
    "serve",
]

log = logging.getLogger(__name__)

MAX_ARG_CHARS = 4000  # an argument's text (notes are 2,000 at most; the route bounds them)
# (owner address, request, timeout s) -> the owner's reply, or None when none came in time
Request = Callable[[str, dict[str, Any], float], "dict[str, Any] | None"]


@dataclass(frozen=True)
class OwnerParts:
    """What an owner applies actions with: its alert engine and its command desk."""

    alerts: AlertEngine | None
    commands: CommandDesk | None

    def engine(self) -> AlertEngine:
        if self.alerts is None:
            raise ApiError(503, "unavailable", "alarms and plans are not running on this process")
        return self.alerts

    def desk(self) -> CommandDesk:
        if self.commands is None:
            raise ApiError(
                503,
                "unavailable",
                "this process sends no remote commands: give it the broker (ESTATEWATCH_MQTT_URL)",
            )
        return self.commands


Action = Callable[[OwnerParts, Mapping[str, Any], str], Any]


def _s(args: Mapping[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or len(value) > MAX_ARG_CHARS:
        raise ApiError(422, "invalid_request", f"{key}: text expected")
    return value


def _opt(args: Mapping[str, Any], key: str) -> str | None:
    return None if args.get(key) is None else _s(args, key)


def _i(args: Mapping[str, Any], key: str) -> int:
    value = args.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ApiError(422, "invalid_request", f"{key}: a whole number expected")
    return value


def _texts(args: Mapping[str, Any], key: str) -> list[str]:
    value = args.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(422, "invalid_request", f"{key}: a list of texts expected")
    return value


def _matchers(args: Mapping[str, Any]) -> list[dict[str, str]]:
    value = args.get("matchers")
    if not isinstance(value, list) or not all(
        isinstance(m, dict) and all(isinstance(v, str) for v in m.values()) for m in value
    ):
        raise ApiError(422, "invalid_request", "matchers: a list of {name, value, op} expected")
    return value


def _add_silence(o: OwnerParts, a: Mapping[str, Any], by: str) -> Any:
    starts = None if a.get("starts") is None else _i(a, "starts")
    return o.engine().add_silence(_matchers(a), _i(a, "ends"), by, _s(a, "comment"), starts)


def _post_warning(o: OwnerParts, a: Mapping[str, Any], by: str) -> Any:
    return o.engine().post_warning(
        _s(a, "hazard"), _s(a, "level"), _i(a, "issued"), _i(a, "expires"), by,
        estates=_texts(a, "estates"), region=_s(a, "region"), text=_s(a, "text"),
        source=_s(a, "source"),
    )  # fmt: skip


def _record_drill(o: OwnerParts, a: Mapping[str, Any], by: str) -> Any:
    return o.engine().record_drill(
        _s(a, "estate"), _s(a, "plan"), _i(a, "held"), by,
        participants=_texts(a, "participants"), findings=_s(a, "findings"),
        outcome=_s(a, "outcome"), drill_id=_opt(a, "drill_id"), status=_s(a, "status"),
    )  # fmt: skip


# What concerns no one estate (a silence of every estate, a warning of a region, lifting a
# warning) goes to the owner of this id; the other owners read it from the store within a
# minute (``AlertEngine._refresh_shared``), as they always have.
NO_ESTATE = ""


ACTIONS: dict[str, Action] = {
    "acknowledge": lambda o, a, by: o.engine().acknowledge(_s(a, "alarm"), by, _opt(a, "note")),
    "resolve": lambda o, a, by: o.engine().resolve(_s(a, "alarm"), by, _opt(a, "note")),
    "confirm": lambda o, a, by: o.engine().confirm(_s(a, "alarm"), by, _opt(a, "note")),
    "technician_arrived": lambda o, a, by: o.engine().technician_arrived(
        _s(a, "alarm"), by, _opt(a, "note")
    ),
    "assign": lambda o, a, by: o.engine().assign(_s(a, "alarm"), _s(a, "assignee"), by),
    "add_note": lambda o, a, by: o.engine().add_note(_s(a, "alarm"), _s(a, "text"), by),
    "complete_task": lambda o, a, by: o.engine().complete_task(
        _s(a, "activation"), _s(a, "task"), by, _opt(a, "note")
    ),
    "activate_plan": lambda o, a, by: o.engine().activate_plan(
        _s(a, "estate"), _s(a, "plan"), _s(a, "level"), by, _s(a, "reason")
    ),
    "stand_down": lambda o, a, by: o.engine().stand_down(_s(a, "activation"), by, _s(a, "reason")),
    "send_command": lambda o, a, by: o.desk().send(
        _s(a, "estate"), _s(a, "dev"), _s(a, "action"), _s(a, "reason"), by, _opt(a, "alarm_id")
    ),
    "add_silence": _add_silence,
    "expire_silence": lambda o, a, by: o.engine().expire_silence(_s(a, "silence"), by),
    "post_warning": _post_warning,
    "cancel_warning": lambda o, a, by: o.engine().cancel_warning(_s(a, "warning"), by),
    "record_drill": _record_drill,
    # a read of what only the owner holds in memory: its stations' observed weather levels
    "weather_levels": lambda o, a, _by: o.engine().weather_levels(_s(a, "estate")),
}


def refusal(exc: Exception) -> ApiError | None:
    """The API error for a refusal of the engine or the command desk; None for anything else
    (a fault, not an answer)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, NotFound):
        return ApiError(404, "not_found", str(exc))
    if isinstance(exc, AlreadyExists):
        return ApiError(409, "already_exists", str(exc))
    if isinstance(exc, InvalidTransition | CommandConflict):
        return ApiError(409, "conflict", str(exc))
    if isinstance(exc, CommandsBusy):
        return ApiError(429, "too_many_commands", str(exc))
    if isinstance(exc, NotOwner):  # the partition moved while the action was applied
        estates = ", ".join(sorted(exc.estates))
        return ApiError(
            503,
            "owner_moved",
            f"小区 {estates} 正在移交给另一个进程，该操作未执行；请几秒后重试。"
            f" / Estate {estates} is moving to another worker; the action was not applied. "
            "Try again in a few seconds.",
        )
    if isinstance(exc, CommandRefused | ValueError | KeyError):
        return ApiError(422, "invalid_request", str(exc).strip("'\""))
    return None


@contextmanager
def refusals() -> Iterator[None]:
    """Refusals raised inside as API errors (faults pass on unchanged)."""
    try:
        yield
    except Exception as exc:
        err = refusal(exc)
        if err is None or err is exc:
            raise
        raise err from None


def apply(parts: OwnerParts, name: str, args: Mapping[str, Any], by: str) -> Any:
    """Apply one action here; refusals raise ApiError."""
    action = ACTIONS.get(name)
    if action is None:
        raise ApiError(422, "invalid_request", f"unknown action {name!r}")
    with refusals():
        return action(parts, args, by)


def serve(parts: OwnerParts, request: Mapping[str, Any]) -> dict[str, Any]:
    """An owner's answer to a request ``{"action", "args", "by"}``: ``{"status": 200,
    "body": …}`` or ``{"status": 4xx/5xx, "error": {"code", "message"}}``. Never raises."""
    name, args, by = request.get("action"), request.get("args"), request.get("by")
    if not isinstance(name, str) or not isinstance(args, dict) or not isinstance(by, str):
        return _error(ApiError(422, "invalid_request", "a request needs action, args and by"))
    try:
        body = apply(parts, name, args, by)
    except ApiError as exc:
        return _error(exc)
    except Exception:
        log.exception("owner: %s by %s failed", name, by)
        return _error(ApiError(500, "internal_error", f"the owner could not apply {name}"))
    log.info("owner: %s by %s applied (asked on %s)", name, by, request.get("reply_to"))
    return {"status": 200, "body": body}


def _error(exc: ApiError) -> dict[str, Any]:
    return {"status": exc.status, "error": {"code": exc.code, "message": exc.message}}


def _unanswered(estate: str, address: str, timeout_s: float) -> ApiError:
    return ApiError(
        503,
        "owner_unavailable",
        f"处理小区 {estate} 的进程（{address}）在 {timeout_s:g} 秒内没有应答；该操作可能未执行。"
        "请刷新后查看状态再重试；若持续如此，请检查该 ingest 进程和消息代理是否在运行。"
        f" / The process that owns estate {estate} ({address}) did not answer within "
        f"{timeout_s:g} s; the action may not have been applied. Reload to see its state and "
        "try again; if this persists, check that its ingest process and the broker are running.",
        {"Retry-After": "5"},
    )


class OwnerRouter:
    """The API node's side: an action applied by the estate's owner.

    ``owner_of``: the one owner look-up (``cluster.owners``). ``request``: the link to owners
    (``estatewatch.owner_link.OwnerLink.request``); None where this process owns everything.
    ``local``: this process's own parts and ``serves`` (addresses it owns), when it owns any.
    """

    def __init__(
        self,
        owner_of: Callable[[str], str],
        request: Request | None,
        local: OwnerParts | None = None,
        serves: Callable[[str], bool] = lambda _address: False,
        timeout_s: float = 2.0,
    ) -> None:
        self.owner_of = owner_of
        self.request = request
        self.local = local
        self.serves = serves
        self.timeout_s = timeout_s

    def act(self, estate: str, name: str, args: Mapping[str, Any], by: str) -> Any:
        """Apply the action where the estate's state is; refusals and a silent owner raise
        ApiError (the owner's own status, code and message; 503 after ``timeout_s``)."""
        address = self.owner_of(estate)
        if self.local is not None and (self.request is None or self.serves(address)):
            return apply(self.local, name, args, by)
        if self.request is None:
            raise ApiError(503, "unavailable", "this process reaches no owner of estates")
        body = {"action": name, "args": dict(args), "by": by}
        reply = self.request(address, body, self.timeout_s)
        if reply is None:
            raise _unanswered(estate, address, self.timeout_s)
        status = reply.get("status")
        if status == 200:
            return reply.get("body")
        err = reply.get("error") or {}
        raise ApiError(
            status if isinstance(status, int) and 400 <= status < 600 else 502,
            str(err.get("code", "owner_error")),
            str(err.get("message", f"the owner of estate {estate} refused {name}")),
        )
