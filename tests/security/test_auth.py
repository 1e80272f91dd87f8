"""Adversary tests: authentication and live streams, against the real service over real HTTP.

Each test is one thing an attacker (or a careless operator) tried: guessing passwords fast,
telling which user names exist by the answer's time, weak passwords and admin tokens, a logout
that leaves a token alive, a live stream outliving its token, and live streams that never read.
Client addresses are told apart by binding to other loopback addresses (127.0.0.x).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from api.throttle import LoginThrottle
from estatewatch.service import Service, StartupError
from tests.security.auth_helpers import ADMIN, admin, login, make_user, open_stream, wait_until

pytestmark = pytest.mark.integration

GOOD = "Lantern-harbour-71"  # a password the policy accepts


def client_from(address: str, service: Service) -> httpx.Client:
    """An HTTP client whose connections come from another loopback address."""
    return httpx.Client(
        base_url=service.url, transport=httpx.HTTPTransport(local_address=address), timeout=30
    )


# --- settings ------------------------------------------------------------------------------


def test_an_admin_token_shorter_than_24_characters_is_refused_at_start(tmp_path: Path) -> None:
    from tests.conftest import service_settings

    svc = Service(service_settings(tmp_path, admin_token="a"))
    with pytest.raises(StartupError, match="at least 24"):
        svc.start()
    svc.stop()
    # the same for a token file someone wrote by hand
    data = tmp_path / "data2"
    data.mkdir()
    (data / "admin-token").write_text("short-token\n")
    svc = Service(service_settings(tmp_path, admin_token="", data_dir=str(data)))
    with pytest.raises(StartupError, match="admin-token"):
        svc.start()
    svc.stop()


# --- passwords -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password", ["password", "qwertyuiop", "1234567890", "Password123", "aaaaaaaaaaaa", "short-1"]
)
def test_weak_passwords_are_refused_at_user_creation(service: Service, password: str) -> None:
    with admin(service) as api:
        r = api.post(
            "/api/v1/users",
            json={"username": "weak", "role": "authority", "password": password},
        )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] in ("invalid_user", "invalid_request")


def test_weak_passwords_are_refused_at_password_change(service: Service) -> None:
    make_user(service, "duty-1", "authority", [], GOOD)
    token = login(service, "duty-1", GOOD)
    with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {token}"}) as c:
        r = c.post("/api/v1/me/password", json={"current": GOOD, "new": "password"})
        assert r.status_code == 422
        r = c.post("/api/v1/me/password", json={"current": GOOD, "new": "qwertyuiop"})
        assert r.status_code == 422 and "common" in r.json()["error"]["message"]
        r = c.post("/api/v1/me/password", json={"current": "wrong-one-!!", "new": "x7-Lantern-9"})
        assert r.status_code == 403
        r = c.post("/api/v1/me/password", json={"current": GOOD, "new": "x7-Lantern-9"})
        assert r.status_code == 200
        # every token of the user is revoked by the change, this one too
        assert c.get("/api/v1/me").status_code == 401
    assert login(service, "duty-1", "x7-Lantern-9")


# --- login throttling ----------------------------------------------------------------------


def test_guessing_one_users_password_is_throttled_with_retry_after(service: Service) -> None:
    make_user(service, "victim", "authority", [], GOOD)
    with httpx.Client(base_url=service.url, timeout=30) as c:
        codes = [
            c.post("/api/v1/login", json={"username": "victim", "password": f"guess-{i}"})
            for i in range(8)
        ]
    statuses = [r.status_code for r in codes]
    assert statuses[:5] == [401] * 5, statuses
    assert 429 in statuses[5:], statuses
    refused = next(r for r in codes if r.status_code == 429)
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.json()["error"]["code"] == "too_many_attempts"
    # while it waits, even the right password is refused: the throttle tells nothing
    r = httpx.post(f"{service.url}/api/v1/login", json={"username": "victim", "password": GOOD})
    assert r.status_code == 429
    # another user from another address is not slowed by it
    make_user(service, "bystander", "authority", [], GOOD)
    with client_from("127.0.0.7", service) as other:
        t0 = time.monotonic()
        r = other.post("/api/v1/login", json={"username": "bystander", "password": GOOD})
        assert r.status_code == 200 and time.monotonic() - t0 < 2.0


def test_guessing_many_user_names_from_one_address_is_throttled(service: Service) -> None:
    make_user(service, "regular", "authority", [], GOOD)
    hashed = 0
    statuses: list[int] = []
    with client_from("127.0.0.3", service) as c:
        for i in range(60):
            r = c.post("/api/v1/login", json={"username": f"user-{i}", "password": "password-x"})
            statuses.append(r.status_code)
            hashed += r.status_code == 401
        # the address is held back, for every user name, the real one too
        r = c.post("/api/v1/login", json={"username": "regular", "password": GOOD})
        assert r.status_code == 429
    assert hashed <= 21, statuses  # 20 free failures, then 429 answered before any hashing
    assert statuses[-1] == 429
    # the same user logs in from its own address
    with client_from("127.0.0.4", service) as c:
        r = c.post("/api/v1/login", json={"username": "regular", "password": GOOD})
        assert r.status_code == 200


def test_unknown_users_are_answered_as_slowly_as_known_ones(service: Service) -> None:
    make_user(service, "known", "authority", [], GOOD)

    def timed(username: str, address: str) -> float:
        with client_from(address, service) as c:
            c.get("/healthz")  # the connection is open before the clock starts
            t0 = time.perf_counter()
            r = c.post("/api/v1/login", json={"username": username, "password": "wrong-guess-1"})
            took = time.perf_counter() - t0
        assert r.status_code == 401
        return took

    known, unknown = [], []
    for i in range(4):  # below the per-user limit; each from an address of its own
        known.append(timed("known", f"127.0.1.{i + 1}"))
        unknown.append(timed(f"nobody-{i}", f"127.0.2.{i + 1}"))
    k, u = statistics.median(known), statistics.median(unknown)
    # the old code answered an unknown user in 1.6 ms and a known one in 42.7 ms
    assert u > 0.5 * k, f"unknown {u * 1000:.1f} ms, known {k * 1000:.1f} ms"


GUESSER = """
import collections, json, sys, threading, time, httpx
url, seconds = sys.argv[1], float(sys.argv[2])
counts = collections.Counter()
def guess(n):
    transport = httpx.HTTPTransport(local_address=f"127.0.3.{n % 2 + 1}")
    with httpx.Client(base_url=url, transport=transport, timeout=30) as c:
        i, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            i += 1
            r = c.post("/api/v1/login", json={"username": f"g{n}-{i}", "password": "guess-pass"})
            counts[r.status_code] += 1
threads = [threading.Thread(target=guess, args=(n,)) for n in range(16)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(counts))
"""


def test_a_login_flood_does_not_slow_everyone_else(service: Service) -> None:
    """16 guessers from 2 addresses (another process) for 8 s: most are refused before any
    hashing, and meanwhile another user's requests stay fast."""
    make_user(service, "calm", "authority", [], GOOD)
    token = login(service, "calm", GOOD)
    flood = subprocess.Popen(
        [sys.executable, "-c", GUESSER, service.url, "8"], stdout=subprocess.PIPE, text=True
    )
    took: list[float] = []
    with httpx.Client(
        base_url=service.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ) as c:
        time.sleep(1)
        while flood.poll() is None:
            t0 = time.perf_counter()
            assert c.get("/api/v1/me").status_code == 200
            took.append(time.perf_counter() - t0)
            time.sleep(0.05)
    out, _ = flood.communicate(timeout=60)
    answers = {int(k): v for k, v in json.loads(out).items()}
    hashed, refused = answers.get(401, 0), answers.get(429, 0)
    assert refused > hashed, answers
    # per address: 20 free failures, then one after 1 s, 2 s, 4 s …; the rest 429 before hashing
    assert hashed <= 2 * 24, answers
    took.sort()
    p90 = took[int(len(took) * 0.9)]
    print(f"login flood {answers}: p90 of another user's requests {p90 * 1000:.0f} ms")
    assert p90 < 1.0, f"p90 {p90:.3f} s under {answers}"  # generous: a shared 2-core machine


# --- logout and live streams ---------------------------------------------------------------


def test_logout_with_bearer_and_cookie_revokes_both_tokens(service: Service) -> None:
    make_user(service, "two-tabs", "authority", [], GOOD)
    a = login(service, "two-tabs", GOOD)
    b = login(service, "two-tabs", GOOD)
    r = httpx.post(
        f"{service.url}/api/v1/logout",
        headers={"Authorization": f"Bearer {a}", "Cookie": f"estatewatch_token={b}"},
    )
    assert r.status_code == 200
    for token in (a, b):
        r = httpx.get(f"{service.url}/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, token


def test_a_live_stream_ends_when_its_token_is_logged_out(service: Service) -> None:
    make_user(service, "watcher", "authority", [], GOOD)
    token = login(service, "watcher", GOOD)
    with open_stream(service, token) as stream:
        r = httpx.post(f"{service.url}/api/v1/logout", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
        assert stream.ended.wait(5), "the stream outlived the logout"


def test_live_streams_are_capped_per_user_and_in_total(service: Service) -> None:
    make_user(service, "many-tabs", "authority", [], GOOD)
    token = login(service, "many-tabs", GOOD)
    with contextlib.ExitStack() as stack:
        for _ in range(8):
            stack.enter_context(open_stream(service, token))
        r = httpx.get(f"{service.url}/api/v1/stream", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 429, r.text
        assert r.json()["error"]["code"] == "too_many_streams"
        assert r.headers.get("Retry-After")
        # everyone's bound (lowered here: 200 in the service)
        service.live.total = 10
        stack.enter_context(open_stream(service, ADMIN["Authorization"][7:]))
        stack.enter_context(open_stream(service, ADMIN["Authorization"][7:]))
        r = httpx.get(f"{service.url}/api/v1/stream", headers=ADMIN)
        assert r.status_code == 503 and r.json()["error"]["code"] == "too_many_streams"
    # closed streams give their places back
    assert wait_until(lambda: service.live.subscribers == 0, 10)
    with open_stream(service, token):
        pass


def rss_mb() -> float:
    return float(psutil.Process(os.getpid()).memory_info().rss) / 2**20


def flood_and_time_healthz(
    service: Service, updates: Callable[[int], list[Any]], timeout: float
) -> tuple[float, float]:
    """Five rounds of device updates to the live streams, /healthz asked after each: how much
    the process grew (MB) and the slowest /healthz (s)."""
    before = rss_mb()
    slowest = 0.0
    for round_ in range(5):
        service.live.publish_many(updates(round_))
        t0 = time.perf_counter()
        assert httpx.get(f"{service.url}/healthz", timeout=timeout).status_code == 200
        slowest = max(slowest, time.perf_counter() - t0)
        time.sleep(0.5)
    return rss_mb() - before, slowest


def stuck_stream(service: Service, token: str) -> socket.socket:
    """A client that asks for the live stream and never reads it."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((service.settings.api_host, service.api_port))
    s.sendall(
        f"GET /api/v1/stream HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    return s


@pytest.fixture
def stuck(service: Service) -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    yield socks
    for s in socks:
        s.close()


def test_live_clients_that_never_read_are_dropped(
    service: Service, stuck: list[socket.socket]
) -> None:
    """40 streams (5 users x 8) that never read while 100,000 device updates go out: they are
    dropped, their buffers freed; memory and /healthz stay as they were."""
    service.live.stall_s = 1.0  # 10 s in the service
    tokens = []
    for n in range(5):
        make_user(service, f"stuck-{n}", "authority", [], GOOD)
        tokens.append(login(service, f"stuck-{n}", GOOD))
    for token in tokens:
        for _ in range(8):
            stuck.append(stuck_stream(service, token))
    assert wait_until(lambda: service.live.subscribers == 40, 10), service.live.subscribers
    grew, slowest = flood_and_time_healthz(
        service,
        lambda round_: [
            (
                "e1",
                "device",
                {"dev": f"dev-{i:05d}", "kind": "smoke_detector", "ts": round_, "metrics": {}},
            )
            for i in range(20_000)
        ],
        timeout=30,
    )
    print(f"RSS grew {grew:.0f} MB, /healthz at most {slowest:.2f} s")
    assert slowest < 5.0, f"/healthz took {slowest:.2f} s"  # 17-20 s before
    assert grew < 120, f"RSS grew {grew:.0f} MB"
    subs = list(service.live._subs)
    assert subs and all(getattr(s, "dropped", False) for s in subs), [s.pending for s in subs]
    assert sum(s.pending for s in subs) == 0
    # a dropped stream's connection ends once it moves: the client gets to the end of it
    s = stuck[0]
    s.settimeout(10)
    with contextlib.suppress(ConnectionResetError):
        while s.recv(65536):
            pass


def test_500_live_clients_that_never_read_stay_within_the_bounds(
    service: Service, stuck: list[socket.socket]
) -> None:
    """The issue's attack: 500 streams that never read (the old service took 1.1 GB and 15 s
    for /healthz). 200 get a stream (the total bound; the per-user bound is lifted here to
    reach it), the others 503; the 200 are dropped once they stall, and memory and /healthz
    stay as they were while 100,000 device updates go out."""
    service.live.per_user = 1_000
    service.live.stall_s = 1.0
    make_user(service, "flooder", "authority", [], GOOD)
    token = login(service, "flooder", GOOD)
    for _ in range(500):
        stuck.append(stuck_stream(service, token))
    assert wait_until(lambda: service.live.refused >= 300, 30), service.live.refused
    assert service.live.subscribers == 200
    grew, slowest = flood_and_time_healthz(
        service,
        lambda round_: [
            ("e1", "device", {"dev": f"d-{i:05d}", "kind": "smoke_detector", "ts": round_})
            for i in range(20_000)
        ],
        timeout=60,
    )
    print(f"500 streams: RSS grew {grew:.0f} MB, /healthz at most {slowest:.2f} s")
    assert slowest < 5.0, f"/healthz took {slowest:.2f} s"
    assert grew < 300, f"RSS grew {grew:.0f} MB"  # 1.1 GB before
    assert all(s.dropped for s in list(service.live._subs))


def test_the_throttle_backs_off_twice_as_long_each_time_and_forgets() -> None:
    now = [0.0]
    t = LoginThrottle(
        user_free=3,
        address_free=100,
        base_s=1,
        max_s=8,
        forget_s=60,
        max_keys=50,
        clock=lambda: now[0],
    )
    assert [t.attempt("u", "a") for _ in range(3)] == [0, 0, 0]
    waits = []
    for _ in range(5):
        waits.append(t.attempt("u", "a"))  # refused: how long to wait
        now[0] += waits[-1]
        assert t.attempt("u", "a") == 0  # after the wait, one more try (it fails again)
    assert waits == [1, 2, 4, 8, 8]  # doubling, capped at max_s
    t.succeeded("u", "a")
    assert t.attempt("u", "a") == 0  # a success forgets the user's count
    for _ in range(10):
        t.attempt("v", "a")
    now[0] += 61 + 8
    assert t.attempt("v", "a") == 0  # quiet for forget_s: forgotten
    for i in range(500):  # a spray of names keeps the table bounded
        t.attempt(f"spray-{i}", "b")
    assert len(t._counts) <= 50
