"""The application service checks: the test bridge (bridge.py, mautrix-python) and a real user (a
plain HTTP client) against one homeserver that loaded the bridge's registration.

Usage: python check.py SETTINGS HOMESERVER_URL SERVER_NAME LABEL
  SETTINGS  the bridge's settings (bridge.py registration OUT writes OUT.json)
  HOMESERVER_URL, SERVER_NAME  the homeserver's client API and its server name
  LABEL     what the lines are prefixed with ("synapse", "ours")
Prints a line per check and a summary ("N passed, N failed"); exits 1 on any failure. Every
wait is bounded (APPSERVICE_WAIT_SECS, default 30 s; the bridge being down, 60 s more), and so
is every check (3 * APPSERVICE_WAIT_SECS + 60 s).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
import time
import traceback
import urllib.parse
from typing import Any, Awaitable, Callable

import aiohttp
from mautrix.errors import MatrixRequestError

from bridge import PREFIX, Settings, TestBridge

WAIT = float(os.environ.get("APPSERVICE_WAIT_SECS", "30"))
DOWN_SECS = float(os.environ.get("APPSERVICE_DOWN_SECS", "4"))
CHECK_SECS = 3 * WAIT + 60  # the most one check may take (the bridge down: WAIT + 60 + more)
MESSAGES = 20
WHILE_DOWN = 10
REFUSED = 1  # transactions the bridge answers with 500
CHECKS = 17  # how many checks there are (those not run count as failed)
BURST = 40  # messages sent at once to see rate limits (the homeserver's burst is lower)


class Failed(Exception):
    pass


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise Failed(what)


class Client:
    """A real user (or the bridge's token used by hand): plain HTTP, JSON in and out."""

    def __init__(self, http: aiohttp.ClientSession, base: str, token: str | None = None):
        self.http = http
        self.base = base.rstrip("/")
        self.token = token
        self.user_id = ""
        self.since: str | None = None
        self.timeline: dict[str, list[dict]] = {}
        self.invites: set[str] = set()

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, str] | None = None,
        token: str | None = None,
    ) -> tuple[int, dict]:
        headers = {}
        token = token or self.token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        url = self.base + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        timeout = aiohttp.ClientTimeout(total=WAIT)
        async with self.http.request(method, url, json=body, headers=headers, timeout=timeout) as r:
            try:
                data = await r.json(content_type=None)
            except ValueError:
                data = {}
            return r.status, data if isinstance(data, dict) else {"_": data}

    async def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> dict:
        status, data = await self.call(method, path, body, **kw)
        expect(status == 200, f"{method} {path}: {status} {data}")
        return data

    async def register(self, username: str, password: str) -> None:
        body: dict[str, Any] = {"username": username, "password": password}
        status, data = await self.call("POST", "/_matrix/client/v3/register", body)
        if status == 401 and "session" in data:
            body["auth"] = {"type": "m.login.dummy", "session": data["session"]}
            status, data = await self.call("POST", "/_matrix/client/v3/register", body)
        expect(status == 200, f"registering {username}: {status} {data}")
        self.token = data["access_token"]
        self.user_id = data["user_id"]

    async def sync_once(self, timeout_ms: int = 1000) -> None:
        # Timelines of up to 100 events, so that no burst is cut into a gap ("limited").
        query = {"timeout": str(timeout_ms), "filter": '{"room":{"timeline":{"limit":100}}}'}
        if self.since:
            query["since"] = self.since
        data = await self.ok("GET", "/_matrix/client/v3/sync", query=query)
        self.since = data["next_batch"]
        rooms = data.get("rooms", {})
        for room_id, room in rooms.get("join", {}).items():
            events = room.get("timeline", {}).get("events", [])
            self.timeline.setdefault(room_id, []).extend(events)
        self.invites.update(rooms.get("invite", {}).keys())

    async def sync_until(self, predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            await self.sync_once()
        return True

    def messages(self, room_id: str) -> list[dict]:
        return [e for e in self.timeline.get(room_id, []) if e.get("type") == "m.room.message"]


def q(s: str) -> str:
    return urllib.parse.quote(s, safe="")


class Run:
    def __init__(self, label: str):
        self.label = label
        self.results: list[tuple[str, bool]] = []

    async def check(self, name: str, body: Callable[[], Awaitable[str | None]]) -> bool:
        started = time.monotonic()
        try:
            # Every check is bounded, whatever a library's own timeouts are.
            detail = await asyncio.wait_for(body(), CHECK_SECS)
            ok, note = True, detail or ""
        except Failed as e:
            ok, note = False, str(e)
        except asyncio.TimeoutError:  # a request's (WAIT) or the whole check's (CHECK_SECS)
            ok, note = False, f"timed out after {time.monotonic() - started:.0f} s"
        except (MatrixRequestError, aiohttp.ClientError, KeyError) as e:
            ok, note = False, f"{type(e).__name__}: {e}"
        except Exception as e:  # a bug in the check itself still fails it, with its trace
            ok, note = False, f"{type(e).__name__}: {e}\n{traceback.format_exc()}"
        ms = (time.monotonic() - started) * 1000
        word = "ok  " if ok else "FAIL"
        print(f"{self.label}: {word} {name} ({ms:.0f} ms){': ' + note if note else ''}", flush=True)
        self.results.append((name, ok))
        return ok

    def skip_rest(self, reason: str) -> None:
        """The checks left are not run (what they need failed): each counts as failed."""
        left = CHECKS - len(self.results)
        print(f"{self.label}: FAIL the {left} checks left: not run, {reason}", flush=True)
        self.results.extend((f"not run {i}", False) for i in range(left))


async def main() -> int:
    if len(sys.argv) != 5:
        print(__doc__, file=sys.stderr)
        return 2
    settings_path, homeserver_url, server_name, label = sys.argv[1:5]
    logging.basicConfig(
        level=os.environ.get("APPSERVICE_LOG", "WARNING"),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    settings = Settings.load(settings_path)
    settings.homeserver_url = homeserver_url
    settings.server_name = server_name
    server = settings.server_name
    run = Run(label)
    started = time.monotonic()

    bridge = TestBridge(settings)
    await bridge.start()
    async with aiohttp.ClientSession() as http:
        try:
            await checks(run, bridge, settings, server, http)
        finally:
            await bridge.stop()

    if len(run.results) != CHECKS:
        print(f"{label}: FAIL {len(run.results)} checks ran, CHECKS says {CHECKS}: fix check.py")
        run.results.append(("the number of checks", False))
    passed = sum(1 for _, ok in run.results if ok)
    failed = len(run.results) - passed
    print(f"{label}: appservice checks in {time.monotonic() - started:.1f} s")
    print(f"{label}: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


async def checks(
    run: Run, bridge: TestBridge, settings: Settings, server: str, http: aiohttp.ClientSession
) -> None:
    base = settings.homeserver_url
    as_client = Client(http, base, settings.as_token)
    real = Client(http, base)
    password = secrets.token_urlsafe(16)
    suffix = secrets.token_hex(3)
    alice_name, bob_name = f"alice{suffix}", f"bob{suffix}"
    alice, bob = bridge.puppet_id(alice_name), bridge.puppet_id(bob_name)
    state: dict[str, Any] = {}

    async def real_user() -> str:
        await real.register(f"human{suffix}", password)
        await real.sync_once(0)
        return real.user_id

    if not await run.check("a real user registers (password, m.login.dummy)", real_user):
        run.skip_rest("no real user")
        return

    async def ping() -> str:
        txn = f"ping{suffix}"
        duration = await bridge.az.ping_self(txn)
        expect(("ping", txn) in bridge.queries, f"the bridge was not pinged with {txn}")
        path = "/_matrix/client/v1/appservice/{}/ping"
        status, data = await as_client.call("POST", path.format("someone-else"), {})
        expect(
            status == 403 and data.get("errcode") == "M_FORBIDDEN",
            f"pinging another service: {status} {data}",
        )
        status, data = await real.call("POST", path.format(q(bridge.az.id)), {})
        expect(
            status == 403 and data.get("errcode") == "M_FORBIDDEN",
            f"a normal user pinging the service: {status} {data}",
        )
        return f"{duration} ms; another service's id, or a normal user: 403 M_FORBIDDEN"

    await run.check(
        "the bridge pings itself through the homeserver at its start (appservice ping)", ping
    )

    async def exclusive_user_namespace() -> str:
        intruder = f"{PREFIX}intruder{suffix}"
        status, data = await real.call(
            "GET", "/_matrix/client/v3/register/available", query={"username": intruder}
        )
        expect(
            status == 400 and data.get("errcode") == "M_EXCLUSIVE",
            f"/register/available for {intruder}: {status} {data}",
        )
        intruder_client = Client(http, base)
        body = {"username": intruder, "password": password}
        status, data = await intruder_client.call("POST", "/_matrix/client/v3/register", body)
        if status == 401 and "session" in data:  # a server that checks the name after auth
            body["auth"] = {"type": "m.login.dummy", "session": data["session"]}
            status, data = await intruder_client.call("POST", "/_matrix/client/v3/register", body)
        expect(
            status == 400 and data.get("errcode") == "M_EXCLUSIVE",
            f"registering {intruder} as a normal user: {status} {data}",
        )
        return "register/available and register: 400 M_EXCLUSIVE"

    await run.check(
        "a normal user cannot register in the exclusive namespace (M_EXCLUSIVE)",
        exclusive_user_namespace,
    )

    async def masquerade_refused() -> str:
        whoami = "/_matrix/client/v3/account/whoami"
        for target in (real.user_id, f"@someone{suffix}:{server}", f"@{PREFIX}x:elsewhere.example"):
            status, data = await as_client.call("GET", whoami, query={"user_id": target})
            expect(
                status == 403 and data.get("errcode") == "M_FORBIDDEN",
                f"as_token with user_id={target}: {status} {data}",
            )
        status, data = await as_client.call("GET", whoami, token="not" + settings.as_token)
        expect(
            status == 401 and data.get("errcode") == "M_UNKNOWN_TOKEN",
            f"a wrong as_token: {status} {data}",
        )
        # The as_token alone is the service's own user.
        data = await as_client.ok("GET", whoami)
        expect(data.get("user_id") == bridge.az.bot_mxid, f"whoami with the as_token: {data}")
        return "real user, unknown local user, other server's user: 403 M_FORBIDDEN"

    await run.check("masquerading (user_id) outside the namespace is refused", masquerade_refused)

    async def puppet_registration() -> str:
        response = await bridge.register_puppet(alice_name)
        expect(response.get("user_id") == alice, f"registration answered {response}")
        try:
            again = await bridge.register_puppet(alice_name)
            raise Failed(f"registering {alice} twice answered {again}")
        except MatrixRequestError as e:
            code = getattr(e, "errcode", None)
            expect(code == "M_USER_IN_USE", f"registering twice: {e.http_status} {code}")
        response = await bridge.register_puppet(bob_name)
        expect(response.get("user_id") == bob, f"registration answered {response}")
        me = await bridge.puppet(alice).whoami()
        expect(me.user_id == alice, f"whoami as the puppet: {me.user_id}")
        # The service registers only in its namespace.
        status, data = await as_client.call(
            "POST",
            "/_matrix/client/v3/register",
            {"type": "m.login.application_service", "username": f"outside{suffix}"},
        )
        expect(
            status == 400 and data.get("errcode") == "M_EXCLUSIVE",
            f"the service registering outside its namespace: {status} {data}",
        )
        return f"{alice} and {bob}; twice: M_USER_IN_USE; outside: M_EXCLUSIVE"

    puppets = await run.check(
        "puppets register with m.login.application_service", puppet_registration
    )

    async def portal() -> str:
        alias_local = f"{PREFIX}portal{suffix}"
        room_id = await bridge.puppet(alice).create_room(
            alias_localpart=alias_local, name="bridged", invitees=[real.user_id]
        )
        bridge.portals.add(room_id)
        bridge.echo_from = alice
        state["room"] = room_id
        expect(
            await real.sync_until(lambda: room_id in real.invites),
            "the real user's /sync shows no invite",
        )
        await real.ok("POST", f"/_matrix/client/v3/join/{q(room_id)}", {})
        alias = f"#{alias_local}:{server}"
        await bridge.puppet(alice).invite_user(room_id, bob)
        joined = await bridge.puppet(bob).join_room(alias, max_retries=0)
        expect(joined == room_id, f"{bob} joined {joined} by {alias}, not {room_id}")
        members = await real.ok("GET", f"/_matrix/client/v3/rooms/{q(room_id)}/joined_members")
        joined_ids = set(members.get("joined", {}))
        expect(joined_ids == {alice, bob, real.user_id}, f"joined members: {sorted(joined_ids)}")

        def saw_join() -> bool:
            return any(
                e.get("type") == "m.room.member"
                and e.get("room_id") == room_id
                and e.get("state_key") == real.user_id
                and e.get("content", {}).get("membership") == "join"
                for e in bridge.events
            )

        expect(await bridge.wait_until(saw_join, WAIT), "the bridge was not sent the user's join")
        return f"{room_id} as {alias}; the real user joined, {bob} joined by the alias"

    if not puppets:
        run.skip_rest("no puppets")
        return
    if not await run.check(
        "a puppet makes a room (alias in the namespace), invites the user and a puppet: both join",
        portal,
    ):
        run.skip_rest("no bridged room")
        return
    room_id = state["room"]

    async def alias_exclusive() -> str:
        alias = f"#{PREFIX}mine{suffix}:{server}"
        status, data = await real.call(
            "PUT", f"/_matrix/client/v3/directory/room/{q(alias)}", {"room_id": room_id}
        )
        expect(
            status == 400 and data.get("errcode") == "M_EXCLUSIVE",
            f"a normal user creating {alias}: {status} {data}",
        )
        return "400 M_EXCLUSIVE"

    await run.check(
        "a normal user cannot create an alias in the exclusive namespace (M_EXCLUSIVE)",
        alias_exclusive,
    )

    def from_matrix(prefix: str) -> list[str]:
        return [b for (r, s, b) in bridge.remote.delivered if r == room_id and b.startswith(prefix)]

    async def matrix_to_bridge() -> str:
        sent = [f"to-remote {i}" for i in range(MESSAGES)]
        t0 = time.monotonic()
        started: dict[str, float] = {}
        for body in sent:
            before = time.monotonic()
            data = await real.ok(
                "PUT",
                f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/{secrets.token_hex(8)}",
                {"msgtype": "m.text", "body": body},
            )
            started[data["event_id"]] = before
        arrived = await bridge.wait_until(lambda: len(from_matrix("to-remote ")) >= MESSAGES, WAIT)
        got = from_matrix("to-remote ")
        expect(arrived, f"{len(got)} of {MESSAGES} reached the bridge")
        expect(got == sent, f"out of order or repeated: {got}")
        # From the send request to the transaction that carried it (information, not a limit).
        lat = sorted((bridge.arrived[e] - t) * 1000 for e, t in started.items())
        return (
            f"{MESSAGES} in order in {(time.monotonic() - t0) * 1000:.0f} ms from the first send;"
            f" send to bridge: median {lat[len(lat) // 2]:.0f} ms, max {lat[-1]:.0f} ms"
        )

    await run.check(
        f"{MESSAGES} messages from the real user reach the bridge by transaction, in order",
        matrix_to_bridge,
    )

    def bodies(prefix: str, sender: str | None = None) -> list[str]:
        return [
            e["content"].get("body", "")
            for e in real.messages(room_id)
            if e["content"].get("body", "").startswith(prefix)
            and (sender is None or e.get("sender") == sender)
        ]

    async def echoes_back() -> str:
        want = [f"echo: to-remote {i}" for i in range(MESSAGES)]
        await real.sync_until(lambda: len(bodies("echo: to-remote ")) >= MESSAGES)
        got = bodies("echo: to-remote ", alice)
        expect(not bridge.echo_errors, f"the puppet could not send: {bridge.echo_errors[:3]}")
        expect(got == want, f"the real user's /sync shows {len(got)} echoes: {got[:5]}...")
        return f"{MESSAGES} echoes from {alice} in the real user's /sync, in order"

    await run.check(
        "the bridge relays back: a puppet's messages reach the real user's /sync", echoes_back
    )

    async def remote_to_matrix() -> str:
        event_id = await bridge.inject(room_id, bob_name, "hello from the remote network")
        await real.sync_until(lambda: bool(bodies("hello from the remote network")))
        got = [e for e in real.messages(room_id) if e.get("event_id") == event_id]
        expect(len(got) == 1, f"{event_id} is not in the real user's /sync")
        expect(got[0].get("sender") == bob, f"sent by {got[0].get('sender')}, not {bob}")
        return f"{event_id} from {bob}"

    await run.check(
        "a message injected on the remote side reaches the real user from its puppet",
        remote_to_matrix,
    )

    async def typing() -> str:
        await real.ok(
            "PUT",
            f"/_matrix/client/v3/rooms/{q(room_id)}/typing/{q(real.user_id)}",
            {"typing": True, "timeout": 30000},
        )

        def typing_seen() -> bool:
            return any(
                e.get("type") == "m.typing"
                and e.get("room_id") == room_id
                and real.user_id in e.get("content", {}).get("user_ids", [])
                for e in bridge.ephemeral
            )

        expect(
            await bridge.wait_until(typing_seen, WAIT),
            "no m.typing for the real user reached the bridge",
        )
        await real.ok(
            "PUT",
            f"/_matrix/client/v3/rooms/{q(room_id)}/typing/{q(real.user_id)}",
            {"typing": False},
        )
        return "m.typing in a transaction's ephemeral list"

    await run.check("typing reaches the bridge (MSC2409 ephemeral)", typing)

    async def not_rate_limited() -> str:
        n = BURST
        # A normal user is limited at this rate (the homeserver is configured so)...
        other = Client(http, base)
        await other.register(f"limited{suffix}", password)
        own = (await other.ok("POST", "/_matrix/client/v3/createRoom", {}))["room_id"]

        async def send(i: int) -> int:
            status, _ = await other.call(
                "PUT",
                f"/_matrix/client/v3/rooms/{q(own)}/send/m.room.message/{secrets.token_hex(8)}",
                {"msgtype": "m.text", "body": f"burst {i}"},
            )
            return status

        statuses = list(await asyncio.gather(*(send(i) for i in range(n))))
        expect(429 in statuses, f"a normal user sent {n} at once and was not limited: {statuses}")
        expect(
            statuses.count(200) >= 30, f"a normal user's burst: {statuses.count(200)} of {n} sent"
        )
        # ...the bridge's puppet is not (mautrix retries nothing here: a 429 raises).
        await asyncio.gather(*(bridge.inject(room_id, bob_name, f"burst {i}") for i in range(n)))
        return f"{n} at once: a normal user got {statuses.count(429)} 429s, a puppet none"

    await run.check("puppets are not rate limited (rate_limited: false)", not_rate_limited)

    async def down_and_back() -> str:
        await bridge.stop_listener()
        sent = [f"while-down {i}" for i in range(WHILE_DOWN)]
        for body in sent:
            await real.ok(
                "PUT",
                f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/{secrets.token_hex(8)}",
                {"msgtype": "m.text", "body": body},
            )
        await asyncio.sleep(DOWN_SECS)
        expect(not from_matrix("while-down "), "the bridge got messages while down")
        back = time.monotonic()
        await bridge.start_listener()
        arrived = await bridge.wait_until(
            lambda: len(from_matrix("while-down ")) >= WHILE_DOWN, WAIT + 60
        )
        got = from_matrix("while-down ")
        expect(arrived, f"{len(got)} of {WHILE_DOWN} reached the bridge after it came back")
        expect(got == sent, f"out of order or repeated: {got}")
        return (
            f"down {DOWN_SECS:.0f} s; all {WHILE_DOWN} in order "
            f"{time.monotonic() - back:.1f} s after it came back"
        )

    await run.check(
        f"the bridge down, {WHILE_DOWN} sent, back: all {WHILE_DOWN} arrive in order", down_and_back
    )

    async def refused_then_accepted() -> str:
        bridge.refuse = REFUSED
        sent = [f"after-500 {i}" for i in range(5)]
        for body in sent:
            await real.ok(
                "PUT",
                f"/_matrix/client/v3/rooms/{q(room_id)}/send/m.room.message/{secrets.token_hex(8)}",
                {"msgtype": "m.text", "body": body},
            )
        arrived = await bridge.wait_until(lambda: len(from_matrix("after-500 ")) >= 5, WAIT + 60)
        got = from_matrix("after-500 ")
        expect(len(bridge.refused) == REFUSED, f"{len(bridge.refused)} transactions refused")
        expect(arrived, f"{len(got)} of 5 reached the bridge after {REFUSED} answers of 500")
        expect(got == sent, f"out of order or repeated: {got}")
        handled = {t.txn_id for t in bridge.transactions}
        expect(
            set(bridge.refused) <= handled,
            f"refused transactions {bridge.refused} never sent again (handled: {sorted(handled)})",
        )
        return f"{REFUSED} answered 500, sent again with the same ids, all 5 in order"

    await run.check(
        "transactions answered 500 are sent again (same id) until accepted, in order",
        refused_then_accepted,
    )

    async def alias_query() -> str:
        alias = f"#{PREFIX}chan{suffix}:{server}"
        joined = (await real.ok("POST", f"/_matrix/client/v3/join/{q(alias)}", {}))["room_id"]
        expect(("alias", alias) in bridge.queries, f"the bridge was not asked about {alias}")
        expect(joined in bridge.portals, f"joined {joined}, not the portal the bridge made")
        unknown = f"#{PREFIX}nothing{suffix}:{server}"
        status, data = await real.call("GET", f"/_matrix/client/v3/directory/room/{q(unknown)}")
        expect(
            status == 404 and data.get("errcode") == "M_NOT_FOUND",
            f"an alias the bridge does not know: {status} {data}",
        )
        expect(("alias", unknown) in bridge.queries, f"the bridge was not asked about {unknown}")
        return f"{alias}: made by the bridge when asked, joined; {unknown}: 404 M_NOT_FOUND"

    await run.check(
        "an unknown alias of the namespace is asked of the bridge, which makes the room",
        alias_query,
    )

    async def user_query() -> str:
        ghost = bridge.puppet_id(f"remote{suffix}")
        dm = (await real.ok("POST", "/_matrix/client/v3/createRoom", {"invite": [ghost]}))[
            "room_id"
        ]
        path = f"/_matrix/client/v3/rooms/{q(dm)}/joined_members"

        async def members() -> set[str]:
            return set((await real.ok("GET", path)).get("joined", {}))

        deadline = time.monotonic() + WAIT
        while ghost not in await members() and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        expect(not bridge.work_errors, f"the puppet could not join: {bridge.work_errors}")
        expect(ghost in await members(), f"{ghost} did not join {dm}")
        expect(("user", ghost) in bridge.queries, f"the bridge was not asked about {ghost}")
        return f"{ghost} registered by the bridge when asked, invited, joined {dm}"

    await run.check(
        "an invite to an unknown user of the namespace: the bridge is asked, its puppet joins",
        user_query,
    )

    async def transactions() -> str:
        txns = bridge.transactions
        expect(bool(txns), "no transaction")
        expect(
            all(t.bearer for t in txns), "a transaction without `Authorization: Bearer hs_token`"
        )
        most = max(t.in_flight for t in txns)
        expect(most == 1, f"{most} transactions in flight at once")
        ids = [t.txn_id for t in txns]
        expect(len(set(ids)) == len(ids), "a transaction id handled twice")
        query = sum(1 for t in txns if t.query_token)
        return f"{len(txns)} transactions, one at a time, Bearer hs_token ({query} also in query)"

    await run.check(
        "transactions: hs_token as Authorization Bearer, never two in flight", transactions
    )


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
