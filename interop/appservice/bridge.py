"""A small Matrix bridge for the interop tests, written with mautrix-python's appservice module.

The "remote network" is simulated in this process: each remote user has a Matrix puppet
(`@bridgetest_<name>:<server>`, registered with `m.login.application_service`); a message a
Matrix user sends into a bridged room is recorded as delivered to the remote network and echoed
back into the room by a puppet; a message the test injects on the remote side is sent into the
room by the remote user's puppet. A Matrix user's invite to a remote user is accepted by its
puppet. When the homeserver asks (`/_matrix/app/v1/users/...`, `/rooms/...`), the remote network
knows every `@bridgetest_remote...` user (its puppet is registered then) and every
`#bridgetest_chan...` channel (its portal, a public room with that alias, is made then).

The bridge also keeps what the homeserver pushed to it: every transaction (its id, how the
`hs_token` came, how many were in flight at once), every room event in the order received and
when it came, every ephemeral event (MSC2409: typing, receipts, presence), and the queries and
pings it was sent. It can be made to fail: `stop_listener`/`start_listener` close and reopen its
port, `refuse` answers the next transactions with 500.

`registration_yaml` writes the registration a homeserver loads (Synapse's format). The bridge's
own settings (tokens, port) stay in a JSON file beside it, as real bridges keep theirs in their
config.

Usage: python bridge.py registration --port PORT OUT
writes OUT (the registration, YAML) and OUT.json (the bridge's settings: its port and tokens;
the homeserver's URL and name are given when it runs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import logging
import secrets
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from mautrix.appservice import AppService, IntentAPI
from mautrix.appservice.state_store import ASStateStore
from mautrix.client.state_store.memory import MemoryStateStore
from mautrix.types import (
    EventType,
    Membership,
    MessageType,
    RoomCreatePreset,
    RoomID,
    TextMessageEventContent,
    UserID,
)

ID = "bridgetest"
PREFIX = "bridgetest_"
BOT_LOCALPART = "bridgetest_bot"


# The transaction the request being handled carries (set by the middleware, filled in by the
# transaction handler, which runs in the request's task).
_CURRENT: contextvars.ContextVar[list] = contextvars.ContextVar("transaction")


class StateStore(ASStateStore, MemoryStateStore):
    """mautrix's in-memory room state, plus the appservice's registered-users cache."""

    def __init__(self) -> None:
        ASStateStore.__init__(self)
        MemoryStateStore.__init__(self)


@dataclass
class Settings:
    """What the bridge needs to run; the registration is derived from it."""

    port: int
    as_token: str
    hs_token: str
    homeserver_url: str = ""
    server_name: str = ""

    @staticmethod
    def new(port: int) -> "Settings":
        return Settings(
            port=port,
            as_token=secrets.token_urlsafe(32),
            hs_token=secrets.token_urlsafe(32),
        )

    @staticmethod
    def load(path: str) -> "Settings":
        with open(path, encoding="utf-8") as f:
            return Settings(**json.load(f))

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.__dict__, f, indent=2)

    def registration_yaml(self) -> str:
        """The registration, as mautrix bridges write theirs: an exclusive user namespace for
        the puppets, an exclusive alias namespace for the portals, ephemeral events under the
        stable and the MSC2409 name, no rate limits."""
        q = json.dumps  # a JSON string is a YAML scalar: no quoting rules to get wrong
        return "\n".join(
            [
                f"id: {q(ID)}",
                f"url: {q(f'http://127.0.0.1:{self.port}')}",
                f"as_token: {q(self.as_token)}",
                f"hs_token: {q(self.hs_token)}",
                f"sender_localpart: {q(BOT_LOCALPART)}",
                "namespaces:",
                "  users:",
                "    - exclusive: true",
                f"      regex: {q('@' + PREFIX + '.*')}",
                "  aliases:",
                "    - exclusive: true",
                f"      regex: {q('#' + PREFIX + '.*')}",
                "  rooms: []",
                "rate_limited: false",
                "receive_ephemeral: true",
                "de.sorunome.msc2409.push_ephemeral: true",
                "",
            ]
        )


@dataclass
class Transaction:
    """One transaction as the bridge's HTTP listener saw it."""

    txn_id: str
    bearer: bool  # the hs_token came as `Authorization: Bearer`
    query_token: bool  # ...or as the deprecated `access_token` query parameter
    in_flight: int  # transactions being handled at once, this one included
    events: int
    ephemeral: int


@dataclass
class RemoteNetwork:
    """The simulated remote side: what reached it from Matrix, per portal room."""

    delivered: list[tuple[RoomID, UserID, str]] = field(default_factory=list)


class TestBridge:
    """The bridge: puppets, one kind of portal room, relaying both ways."""

    def __init__(self, settings: Settings, log: logging.Logger | None = None) -> None:
        self.settings = settings
        self.log = log or logging.getLogger("bridge")
        self.remote = RemoteNetwork()
        self.transactions: list[Transaction] = []
        self.events: list[dict[str, Any]] = []  # room events, in the order pushed
        self.ephemeral: list[dict[str, Any]] = []
        self.arrived: dict[str, float] = {}  # event id -> when it first came (time.monotonic)
        self.portals: set[RoomID] = set()
        self.echo_from: UserID | None = None  # the puppet that echoes Matrix messages back
        self.echo_errors: list[str] = []
        self.refuse = 0  # transactions still to answer with 500 (an AS failing for a while)
        self.refused: list[str] = []  # the ids of those answered 500
        # What the homeserver asked: ("user", user id), ("alias", alias), ("ping", txn id).
        self.queries: list[tuple[str, str]] = []
        self.work_errors: list[str] = []  # puppets' joins that failed
        self._in_flight = 0
        self._echoes: asyncio.Queue[tuple[RoomID, str]] = asyncio.Queue()
        self._echo_task: asyncio.Task | None = None
        self._joins: asyncio.Queue[tuple[RoomID, UserID]] = asyncio.Queue()
        self._join_task: asyncio.Task | None = None
        self._changed = asyncio.Condition()
        self.az = AppService(
            server=settings.homeserver_url,
            domain=settings.server_name,
            as_token=settings.as_token,
            hs_token=settings.hs_token,
            bot_localpart=BOT_LOCALPART,
            id=ID,
            log=self.log,
            state_store=StateStore(),
            aiohttp_params={"middlewares": [self._observe]},
            ephemeral_events=True,
            query_user=self._query_user,
            query_alias=self._query_alias,
        )
        # Events are handled in the order the transaction holds them, one at a time.
        self.az.synchronous_handlers = True
        self.az.handle_transaction = self._handle_transaction  # type: ignore[method-assign]
        self.az.matrix_event_handler(self._on_event)

    # The homeserver's side: the HTTP listener.

    async def start(self) -> None:
        await self.az.start(host="127.0.0.1", port=self.settings.port)
        self._echo_task = asyncio.create_task(self._echo_loop())
        self._join_task = asyncio.create_task(self._join_loop())

    async def stop(self) -> None:
        for task in (self._echo_task, self._join_task):
            if task:
                task.cancel()
        await self.az.stop()

    async def stop_listener(self) -> None:
        """The bridge goes down for the homeserver: its port refuses connections."""
        if self.az.runner:
            await self.az.runner.cleanup()
            self.az.runner = None

    async def start_listener(self) -> None:
        """The bridge is back: a new listener on the same port (an aiohttp application serves
        one runner only, so the routes go on a new one)."""
        app = web.Application(middlewares=[self._observe])
        app.router.add_route("GET", "/_matrix/mau/live", self.az._liveness_probe)
        self.az.register_routes(app)
        self.az.app = app
        self.az.runner = web.AppRunner(app)
        await self.az.runner.setup()
        await web.TCPSite(self.az.runner, "127.0.0.1", self.settings.port).start()

    @web.middleware
    async def _observe(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.endswith("/_matrix/app/v1/ping"):
            body = await request.json()  # aiohttp keeps the body for the handler
            self.queries.append(("ping", str(body.get("transaction_id"))))
            return await handler(request)
        if "/transactions/" not in request.path:
            return await handler(request)
        if self.refuse > 0:
            self.refuse -= 1
            self.refused.append(request.match_info.get("transaction_id", ""))
            return web.json_response(
                {"errcode": "M_UNKNOWN", "error": "failing (a test)"}, status=500
            )
        self._in_flight += 1
        in_flight = self._in_flight
        holder: list[Transaction] = []
        _CURRENT.set(holder)
        try:
            response = await handler(request)
        finally:
            self._in_flight -= 1
        for txn in holder:
            auth = request.headers.get("Authorization", "")
            txn.bearer = auth == f"Bearer {self.settings.hs_token}"
            txn.query_token = "access_token" in request.rel_url.query
            txn.in_flight = in_flight
            self.transactions.append(txn)
        async with self._changed:
            self._changed.notify_all()
        return response

    async def _handle_transaction(
        self, txn_id: str, *, events: list, extra_data: dict, ephemeral: list | None = None, **kw
    ) -> dict:
        # Reached only with the right hs_token and a transaction id not seen before (mautrix
        # answers a repeated one without handling it again).
        holder = _CURRENT.get(None)
        if holder is not None:
            holder.append(Transaction(txn_id, False, False, 0, len(events), len(ephemeral or [])))
        now = time.monotonic()
        for event in events:
            self.arrived.setdefault(event.get("event_id", ""), now)
        self.events.extend(events)
        self.ephemeral.extend(ephemeral or [])
        return await AppService.handle_transaction(
            self.az, txn_id, events=events, extra_data=extra_data, ephemeral=ephemeral, **kw
        )

    async def _query_user(self, user_id: UserID) -> dict | None:
        """The homeserver asks whether a user of the namespace exists: the remote network knows
        every `@bridgetest_remote...`, whose puppet is registered on the spot."""
        self.queries.append(("user", user_id))
        localpart, _, server = user_id[1:].partition(":")
        if server != self.settings.server_name or not localpart.startswith(PREFIX + "remote"):
            return None
        await self.puppet(user_id).ensure_registered()
        return {"bridged": True}  # {} would do, but mautrix answers 404 to an empty dict

    async def _query_alias(self, alias: str) -> dict | None:
        """The homeserver asks about an alias of the namespace: `#bridgetest_chan...` is a
        remote channel, whose portal (a public room with that alias) is made on the spot."""
        self.queries.append(("alias", alias))
        localpart, _, server = alias[1:].partition(":")
        if server != self.settings.server_name or not localpart.startswith(PREFIX + "chan"):
            return None
        bot = self.az.intent
        await bot.ensure_registered()
        room_id = await bot.create_room(
            alias_localpart=localpart, preset=RoomCreatePreset.PUBLIC, name=localpart
        )
        self.portals.add(room_id)
        return {"bridged": True}  # {} would do, but mautrix answers 404 to an empty dict

    async def _on_event(self, event: Any) -> None:
        if (
            event.type == EventType.ROOM_MEMBER
            and event.state_key.startswith("@" + PREFIX)
            and event.content.membership == Membership.INVITE
            and not event.sender.startswith("@" + PREFIX)
        ):
            # A Matrix user invited a remote user: its puppet accepts (from its own task).
            await self._joins.put((event.room_id, UserID(event.state_key)))
            return
        if event.type != EventType.ROOM_MESSAGE or event.room_id not in self.portals:
            return
        if event.sender.startswith("@" + PREFIX):
            return  # our own puppets: already on the remote network
        body = event.content.body
        self.remote.delivered.append((event.room_id, event.sender, body))
        await self._echoes.put((event.room_id, body))

    async def _echo_loop(self) -> None:
        # The remote network answers every message with an echo, in order, from its own task so
        # that the transaction is answered at once.
        while True:
            room_id, body = await self._echoes.get()
            if self.echo_from is None:
                continue
            try:
                await self.puppet(self.echo_from).send_text(room_id, f"echo: {body}")
            except Exception as e:  # recorded, and the check reports it
                self.echo_errors.append(f"{body}: {e}")

    async def _join_loop(self) -> None:
        while True:
            room_id, user_id = await self._joins.get()
            try:
                await self.puppet(user_id).join_room_by_id(room_id)
            except Exception as e:  # recorded, and the check reports it
                self.work_errors.append(f"{user_id} joining {room_id}: {e}")

    # The remote network's side.

    def puppet_id(self, name: str) -> UserID:
        return UserID(f"@{PREFIX}{name}:{self.settings.server_name}")

    def puppet(self, user_id: UserID) -> IntentAPI:
        return self.az.intent.user(user_id)

    async def register_puppet(self, name: str) -> dict:
        """Registers the puppet of remote user `name` (`m.login.application_service`, no
        password, no device) and answers the homeserver's response."""
        intent = self.puppet(self.puppet_id(name))
        response = await intent._register()  # what ensure_registered sends, with its answer
        await self.az.state_store.registered(intent.mxid)
        return response

    async def inject(self, room_id: RoomID, name: str, text: str) -> str:
        """A message from remote user `name`: its puppet sends it into the room."""
        content = TextMessageEventContent(msgtype=MessageType.TEXT, body=text)
        return await self.puppet(self.puppet_id(name)).send_message(room_id, content)

    async def wait_until(self, predicate: Any, timeout: float) -> bool:
        """Waits (at most `timeout` seconds) until `predicate()` holds after a transaction."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._changed:
            while not predicate():
                left = deadline - loop.time()
                if left <= 0:
                    return False
                try:
                    await asyncio.wait_for(self._changed.wait(), left)
                except asyncio.TimeoutError:
                    return predicate()
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    reg = sub.add_parser("registration", help="write the registration and the bridge's settings")
    reg.add_argument("--port", type=int, required=True)
    reg.add_argument("out")
    args = parser.parse_args()
    settings = Settings.new(args.port)
    settings.save(args.out + ".json")
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(settings.registration_yaml())
    print(f"bridge: registration in {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
