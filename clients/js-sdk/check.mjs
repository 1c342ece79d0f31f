// matrix-js-sdk against the homeserver: two users register (through the user-interactive
// auth), create a room, invite, join, exchange messages over /sync, and paginate back to the
// room's creation. Exits non-zero on the first thing that goes wrong.
import * as sdk from "matrix-js-sdk";

const baseUrl = process.env.HOMESERVER_URL;
if (!baseUrl) throw new Error("HOMESERVER_URL is not set");
const deadline = setTimeout(() => {
  console.error("js-sdk check: timed out");
  process.exit(1);
}, 120_000);


async function register(username) {
  const anon = sdk.createClient({ baseUrl });
  let session;
  try {
    await anon.registerRequest({ username, password: "secret-pw" });
    throw new Error("register without auth should ask for the user-interactive flow");
  } catch (e) {
    if (e.httpStatus !== 401) throw e;
    session = e.data.session;
    const stages = e.data.flows.map((f) => f.stages.join(","));
    if (!stages.includes("m.login.dummy")) throw new Error(`flows: ${stages}`);
  }
  const done = await anon.registerRequest({
    username,
    password: "secret-pw",
    auth: { type: "m.login.dummy", session },
  });
  const client = sdk.createClient({
    baseUrl,
    accessToken: done.access_token,
    userId: done.user_id,
    deviceId: done.device_id,
  });
  return client;
}

function synced(client) {
  return new Promise((resolve, reject) => {
    client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
      if (state === "PREPARED") resolve();
      if (state === "ERROR") reject(data?.error ?? new Error("sync error"));
    });
  });
}

function waitFor(what, check, ms = 30_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`waiting for ${what}`)), ms);
    const poll = setInterval(() => {
      const value = check();
      if (value) {
        clearTimeout(timer);
        clearInterval(poll);
        resolve(value);
      }
    }, 50);
  });
}

const bodies = (room) =>
  room.getLiveTimeline().getEvents()
    .filter((e) => e.getType() === "m.room.message")
    .map((e) => e.getContent().body);

const alice = await register(`alice${Date.now()}`);
const bob = await register(`bob${Date.now()}`);
const aliceReady = synced(alice);
const bobReady = synced(bob);
await alice.startClient({ initialSyncLimit: 10 });
await bob.startClient({ initialSyncLimit: 10 });
await Promise.all([aliceReady, bobReady]);
console.log("js-sdk check: both clients synced");

const { room_id: roomId } = await alice.createRoom({
  name: "js-sdk room",
  topic: "made by matrix-js-sdk",
  invite: [bob.getUserId()],
  preset: sdk.Preset.PrivateChat,
});
await waitFor("bob's invite", () => bob.getRoom(roomId)?.getMyMembership() === "invite");
await bob.joinRoom(roomId);
await waitFor("alice seeing bob join", () =>
  alice.getRoom(roomId)?.getMember(bob.getUserId())?.membership === "join");
console.log("js-sdk check: bob joined", roomId);

for (let i = 0; i < 4; i++) {
  await alice.sendTextMessage(roomId, `alice ${i}`);
  await bob.sendTextMessage(roomId, `bob ${i}`);
}
const want = [0, 1, 2, 3].flatMap((i) => [`alice ${i}`, `bob ${i}`]);
for (const [name, client] of [["alice", alice], ["bob", bob]]) {
  await waitFor(`${name} seeing every message`, () => {
    const room = client.getRoom(roomId);
    return room && want.every((b) => bodies(room).includes(b));
  });
  // The local echo was matched to the synced event by its transaction id: nothing twice.
  const seen = bodies(client.getRoom(roomId));
  if (seen.length !== new Set(seen).size) throw new Error(`${name} sees duplicates: ${seen}`);
}
console.log("js-sdk check: messages exchanged");

// A fresh client, with a small initial sync, paginates back to the room's creation.
const reader = sdk.createClient({
  baseUrl,
  accessToken: bob.getAccessToken(),
  userId: bob.getUserId(),
  deviceId: bob.getDeviceId(),
});
const readerReady = synced(reader);
await reader.startClient({ initialSyncLimit: 2 });
await readerReady;
const room = await waitFor("the room in a new client", () => reader.getRoom(roomId));
for (let i = 0; i < 20; i++) {
  const events = room.getLiveTimeline().getEvents();
  if (events.some((e) => e.getType() === "m.room.create")) break;
  await reader.scrollback(room, 5);
}
const all = room.getLiveTimeline().getEvents();
if (!all.some((e) => e.getType() === "m.room.create")) throw new Error("never reached the creation");
const order = bodies(room);
if (JSON.stringify(order) !== JSON.stringify(want)) throw new Error(`history: ${order}`);
console.log(`js-sdk check: paginated back to the creation (${all.length} events)`);

for (const client of [alice, bob, reader]) client.stopClient();
clearTimeout(deadline);
console.log("js-sdk check: ok");
process.exit(0);
