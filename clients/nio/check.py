"""matrix-nio against the homeserver: two users register, create a room, invite, join,
exchange messages over /sync, and paginate back to the room's creation. Exits non-zero on
the first thing that goes wrong."""

import asyncio
import os
import sys
import time

from nio import (
    AsyncClient,
    JoinResponse,
    RegisterResponse,
    RoomCreateResponse,
    RoomInviteResponse,
    RoomMessagesResponse,
    RoomSendResponse,
    SyncResponse,
)

URL = os.environ["HOMESERVER_URL"]


def expect(response, kind):
    if not isinstance(response, kind):
        raise SystemExit(f"nio check: expected {kind.__name__}, got {response!r}")
    return response


async def register(name):
    client = AsyncClient(URL, name)
    expect(await client.register(name, "secret-pw", "nio"), RegisterResponse)
    return client


async def main():
    stamp = int(time.time() * 1000)
    alice = await register(f"nioalice{stamp}")
    bob = await register(f"niobob{stamp}")
    try:
        for client in (alice, bob):
            expect(await client.sync(timeout=0), SyncResponse)
        created = expect(
            await alice.room_create(name="nio room", topic="made by matrix-nio"),
            RoomCreateResponse,
        )
        room_id = created.room_id
        expect(await alice.room_invite(room_id, bob.user_id), RoomInviteResponse)
        invited = expect(await bob.sync(timeout=5000), SyncResponse)
        if room_id not in invited.rooms.invite:
            raise SystemExit(f"nio check: bob's sync has no invite for {room_id}")
        expect(await bob.join(room_id), JoinResponse)

        want = []
        for i in range(4):
            for client, who in ((alice, "alice"), (bob, "bob")):
                body = f"{who} {i}"
                want.append(body)
                content = {"msgtype": "m.text", "body": body}
                expect(await client.room_send(room_id, "m.room.message", content), RoomSendResponse)

        # Bob's incremental syncs deliver every message.
        seen = []
        for _ in range(20):
            response = expect(await bob.sync(timeout=3000), SyncResponse)
            room = response.rooms.join.get(room_id)
            if room:
                seen += [e.body for e in room.timeline.events if hasattr(e, "body")]
            if all(b in seen for b in want):
                break
        if not all(b in seen for b in want):
            raise SystemExit(f"nio check: bob saw {seen}, wanted {want}")

        # Paginate back from the end to the creation.
        start = bob.next_batch
        events = []
        for _ in range(20):
            page = expect(
                await bob.room_messages(room_id, start=start, limit=5), RoomMessagesResponse
            )
            events += page.chunk
            if not page.end or not page.chunk:
                break
            start = page.end
        kinds = [getattr(e, "source", {}).get("type") for e in events]
        if "m.room.create" not in kinds:
            raise SystemExit(f"nio check: pagination never reached the creation: {kinds}")
        history = [e.body for e in reversed(events) if hasattr(e, "body")]
        if history != want:
            raise SystemExit(f"nio check: history {history}, wanted {want}")
        print(f"nio check: ok ({len(events)} events back to the creation)")
    finally:
        await alice.close()
        await bob.close()


asyncio.run(asyncio.wait_for(main(), 120))
sys.exit(0)
