"""matrix-nio with end-to-end encryption (python-olm) against one or two homeservers.

Usage: e2ee.py ALICE_URL BOB_URL [LABEL]

Alice registers on ALICE_URL and bob on BOB_URL (the same URL for one server, two for
federation). Both upload device and one-time keys; alice creates a room with m.room.encryption
(m.megolm.v1.aes-sha2) and invites bob, who joins: each one's /sync names the other in
device_lists.changed (they now share an encrypted room). Each queries the other's device
keys, checks them against the keys the other holds (verification out of band: both clients
are in this process) and trusts them; each claims one of the other's one-time keys, and the
other's one-time key count in /sync drops by one. Alice shares a megolm session by to-device (Olm) and
sends an encrypted message that bob decrypts; bob does the same the other way. Then bob logs in
a second device: alice's /sync names bob in device_lists.changed, her key query finds the new
device, and her next message, under a new megolm session shared with both of bob's devices, is
decrypted by both. Every wait is bounded; exits non-zero with what was missing on the first
thing that goes wrong."""

import asyncio
import logging
import sys
import time

from nio import (
    AsyncClient,
    AsyncClientConfig,
    JoinResponse,
    KeysClaimResponse,
    KeysQueryResponse,
    KeysUploadResponse,
    LoginResponse,
    MegolmEvent,
    RegisterResponse,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    ShareGroupSessionResponse,
    SyncResponse,
)
from nio.store import SqliteMemoryStore

# How long one wait for something to arrive over /sync may take (over federation too).
WAIT_SECONDS = 45
# The whole run.
RUN_SECONDS = 240
PASSWORD = "secret-pw"
MEGOLM = "m.megolm.v1.aes-sha2"

LABEL = "nio e2ee"


class Remembered(logging.Handler):
    """Keeps nio's warnings (a device that joined later cannot decrypt what came before:
    expected), to print them only when something fails."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(f"{record.name}: {record.getMessage()}")


class Failure(Exception):
    """What went wrong, said once at the top."""


def fail(message):
    raise Failure(message)


def expect(response, kind, what):
    if not isinstance(response, kind):
        fail(f"{what}: expected {kind.__name__}, got {response!r}")
    return response


class Device:
    """One logged-in nio client with its Olm machine, and what its syncs have said."""

    def __init__(self, url, name):
        config = AsyncClientConfig(encryption_enabled=True, store=SqliteMemoryStore)
        self.client = AsyncClient(url, name, config=config)
        self.name = name
        # Every user named in device_lists.changed, every signed_curve25519 count, in order.
        self.changed = []
        self.otk_counts = []
        # Timeline events by event id, as nio handed them over (decrypted where it could).
        self.events = {}

    @property
    def user_id(self):
        return self.client.user_id

    @property
    def device_id(self):
        return self.client.device_id

    @property
    def ed25519(self):
        return self.client.olm.account.identity_keys["ed25519"]

    async def sync_once(self, timeout_ms=1000):
        response = expect(
            await self.client.sync(timeout=timeout_ms, full_state=False),
            SyncResponse,
            f"{self.name}'s sync",
        )
        self.changed += response.device_list.changed
        if response.device_key_count.signed_curve25519 is not None:
            self.otk_counts.append(response.device_key_count.signed_curve25519)
        for room in response.rooms.join.values():
            for event in room.timeline.events:
                self.events[event.event_id] = event
        return response

    async def sync_until(self, predicate, what):
        """Syncs until predicate() holds, for at most WAIT_SECONDS; what (a text, or a
        function making one then) says what was awaited."""
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            if predicate():
                return
            if time.monotonic() > deadline:
                said = what() if callable(what) else what
                fail(f"{self.name}: within {WAIT_SECONDS} s, never {said}")
            await self.sync_once()

    async def upload_keys(self):
        uploaded = expect(
            await self.client.keys_upload(), KeysUploadResponse, f"{self.name}'s keys/upload"
        )
        want = self.client.olm.account.max_one_time_keys // 2
        if uploaded.signed_curve25519_count != want:
            fail(
                f"{self.name} uploaded {want} one-time keys, the server counts "
                f"{uploaded.signed_curve25519_count}"
            )
        return uploaded.signed_curve25519_count

    async def close(self):
        await self.client.close()


async def register(url, name):
    device = Device(url, name)
    expect(
        await device.client.register(name, PASSWORD, f"nio {name}"),
        RegisterResponse,
        f"registering {name}",
    )
    if device.client.olm is None:
        fail(f"{name}: no Olm machine after registration (python-olm missing?)")
    return device


async def login(url, user_id, name):
    device = Device(url, user_id)
    device.name = name
    expect(
        await device.client.login(PASSWORD, device_name=f"nio {name}"),
        LoginResponse,
        f"{name}'s login",
    )
    return device


async def query_and_trust(me, others):
    """me queries device keys and trusts exactly the devices in others, once their keys are
    the ones those devices hold."""
    client = me.client
    want_users = {o.user_id for o in others}
    if not want_users <= client.users_for_key_query | client.olm.tracked_users:
        fail(f"{me.name}: nio does not track {want_users} (tracked {client.olm.tracked_users})")
    if client.should_query_keys:
        queried = expect(await client.keys_query(), KeysQueryResponse, f"{me.name}'s keys/query")
        if queried.failures:
            fail(f"{me.name}'s keys/query failures: {queried.failures}")
    for other in others:
        devices = {d.id: d for d in client.device_store.active_user_devices(other.user_id)}
        device = devices.get(other.device_id)
        if device is None:
            fail(
                f"{me.name}'s key query has no device {other.device_id} of {other.user_id} "
                f"(has {sorted(devices)})"
            )
        if device.ed25519 != other.ed25519:
            fail(
                f"{me.name} sees {other.name}'s ed25519 key {device.ed25519}, "
                f"{other.name} holds {other.ed25519}"
            )
        client.verify_device(device)


async def claim_one(me, other):
    """me claims one of other's one-time keys; other's count in /sync drops by one."""
    before = other.otk_counts[-1]
    claimed = expect(
        await me.client.keys_claim({other.user_id: [other.device_id]}),
        KeysClaimResponse,
        f"{me.name}'s keys/claim",
    )
    if claimed.failures:
        fail(f"{me.name}'s keys/claim failures: {claimed.failures}")
    keys = claimed.one_time_keys.get(other.user_id, {}).get(other.device_id, {})
    if len(keys) != 1 or not next(iter(keys)).startswith("signed_curve25519:"):
        fail(f"{me.name} claimed {claimed.one_time_keys}, wanted one signed_curve25519 key")
    await other.sync_until(
        lambda: other.otk_counts[-1] == before - 1,
        lambda: f"saw its one-time key count go from {before} to {before - 1} "
        f"(counts seen: {other.otk_counts})",
    )


async def share(me, room_id, recipients):
    """me shares its megolm session for room_id; each recipient device is among those it
    went to by to-device."""
    shared = expect(
        await me.client.share_group_session(room_id),
        ShareGroupSessionResponse,
        f"{me.name} sharing a megolm session",
    )
    want = {(r.user_id, r.device_id) for r in recipients}
    if not want <= set(shared.users_shared_with):
        fail(f"{me.name} shared its megolm session with {shared.users_shared_with}, wanted {want}")


async def send_and_decrypt(sender, room_id, body, readers):
    """sender sends an encrypted text; each reader's sync decrypts it to body."""
    if not sender.client.rooms[room_id].encrypted:
        fail(f"{sender.name} does not see {room_id} as encrypted")
    sent = expect(
        await sender.client.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": body}
        ),
        RoomSendResponse,
        f"{sender.name} sending {body!r}",
    )
    for reader in readers:
        await reader.sync_until(
            lambda: sent.event_id in reader.events,
            f"received {sender.name}'s {sent.event_id}",
        )
        event = reader.events[sent.event_id]
        if isinstance(event, MegolmEvent):
            fail(f"{reader.name} could not decrypt {sender.name}'s {body!r}: {event.source}")
        if not isinstance(event, RoomMessageText) or not event.decrypted:
            fail(f"{reader.name} got {event!r} for {body!r}, wanted a decrypted text")
        if event.body != body or event.sender != sender.user_id:
            fail(f"{reader.name} decrypted {event.body!r} from {event.sender}, wanted {body!r}")
        # Only nio's megolm decryption sets `decrypted`; `verified` says the session came from
        # the device the reader trusted (its keys checked against the sender's own).
        if not event.verified:
            fail(f"{reader.name} decrypted {body!r}, but not as from a verified device")
        if event.session_id != sender.client.olm.outbound_group_sessions[room_id].id:
            fail(f"{reader.name} decrypted {body!r} under another megolm session")


async def main(alice_url, bob_url):
    stamp = int(time.time() * 1000)
    alice = await register(alice_url, f"e2eealice{stamp}")
    bob = await register(bob_url, f"e2eebob{stamp}")
    devices = [alice, bob]
    try:
        for d in (alice, bob):
            d.otk_counts.append(await d.upload_keys())
        # Tokens from after both uploads: what later names bob in alice's device_lists.changed
        # is his joining her room, not his keys.
        for d in (alice, bob):
            await d.sync_once(timeout_ms=0)

        created = expect(
            await alice.client.room_create(
                name="nio e2ee",
                invite=[bob.user_id],
                initial_state=[
                    {"type": "m.room.encryption", "state_key": "", "content": {"algorithm": MEGOLM}}
                ],
            ),
            RoomCreateResponse,
            "alice creating the encrypted room",
        )
        room_id = created.room_id
        await bob.sync_until(
            lambda: room_id in bob.client.invited_rooms, f"got alice's invite to {room_id}"
        )
        expect(await bob.client.join(room_id), JoinResponse, "bob joining")
        await bob.sync_until(lambda: room_id in bob.client.rooms, f"saw {room_id} joined")
        await bob.sync_until(
            lambda: alice.user_id in bob.client.rooms[room_id].users,
            lambda: f"saw alice in {room_id} (members: {list(bob.client.rooms[room_id].users)})",
        )
        if not bob.client.rooms[room_id].encrypted:
            fail(f"bob's sync of {room_id} has no m.room.encryption in its state")
        # Bob now shares an encrypted room with alice: device_lists.changed names him.
        await alice.sync_until(
            lambda: room_id in alice.client.rooms
            and bob.user_id in alice.client.rooms[room_id].users,
            f"saw bob join {room_id}",
        )
        await alice.sync_until(
            lambda: bob.user_id in alice.changed,
            lambda: f"named bob in device_lists.changed (changed: {alice.changed})",
        )
        # And bob, who joined a room with alice in it, is told of her.
        await bob.sync_until(
            lambda: alice.user_id in bob.changed,
            lambda: f"named alice in device_lists.changed (changed: {bob.changed})",
        )

        await query_and_trust(alice, [bob])
        await query_and_trust(bob, [alice])
        await claim_one(alice, bob)
        await claim_one(bob, alice)

        await share(alice, room_id, [bob])
        await send_and_decrypt(alice, room_id, "hello bob, from alice (encrypted)", [bob])
        await share(bob, room_id, [alice])
        await send_and_decrypt(bob, room_id, "hello alice, from bob (encrypted)", [alice])

        # A device-list update: bob logs in a second device and uploads its keys.
        alice.changed.clear()
        bob2 = await login(bob_url, bob.user_id, "bob's second device")
        devices.append(bob2)
        bob2.otk_counts.append(await bob2.upload_keys())
        await alice.sync_until(
            lambda: bob.user_id in alice.changed,
            lambda: f"saw bob's new device: device_lists.changed was {alice.changed}",
        )
        await bob2.sync_until(
            lambda: room_id in bob2.client.rooms and bob2.client.rooms[room_id].encrypted,
            f"saw {room_id} (bob's second device)",
        )
        await query_and_trust(bob2, [alice])
        await query_and_trust(alice, [bob, bob2])
        # nio starts a new megolm session when a member's devices change; sharing it claims a
        # one-time key of the new device.
        if not alice.client.olm.should_share_group_session(room_id):
            fail("alice would reuse the old megolm session after bob's new device")
        missing = alice.client.get_missing_sessions(room_id)
        if bob2.device_id not in missing.get(bob.user_id, []):
            fail(f"alice misses no Olm session with bob's new device: {missing}")
        await share(alice, room_id, [bob, bob2])
        await send_and_decrypt(alice, room_id, "hello to both of bob's devices", [bob, bob2])
        print(
            f"{LABEL}: ok (keys uploaded, queried, claimed; megolm shared by to-device; "
            f"decrypted both ways; a new device seen and sent to)"
        )
    finally:
        for d in devices:
            await d.close()


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    if len(sys.argv) == 4:
        LABEL = f"nio e2ee ({sys.argv[3]})"
    remembered = Remembered()
    logging.getLogger().addHandler(remembered)
    failed = None
    try:
        asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2]), RUN_SECONDS))
    except Failure as failure:
        failed = f"{LABEL}: {failure}"
    except (asyncio.TimeoutError, TimeoutError):
        failed = f"{LABEL}: the whole run took over {RUN_SECONDS} s"
    if failed:
        print("\n".join(f"{LABEL}: (logged) {line}" for line in remembered.lines[-40:]))
        sys.exit(failed)
    sys.exit(0)
