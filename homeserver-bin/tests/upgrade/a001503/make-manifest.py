import json, os, hashlib
import sys
out = sys.argv[1] if len(sys.argv) > 1 else '/work/fixtures-out'
runs = {}
for b in ('sled', 'postgres'):
    r = json.load(open(f'{out}/ids-{b}.json'))
    r.pop('backend')
    pub, priv = r['rooms']['public'], r['rooms']['private']
    ev = r['events']['public_room']
    r['aliases'] = {'#fixture:fixture.test': pub, '#second:fixture.test': pub}
    r['published_rooms'] = [pub]
    r['forgotten'] = [{'user': '@bob:fixture.test', 'room': priv}]
    r['account_data'] = {
        'global': [
            {'user': '@alice:fixture.test', 'type': 'org.example.fixture', 'content': {'n': 1}},
            {'user': '@bob:fixture.test', 'type': 'org.example.fixture', 'content': {'n': 2}},
        ],
        'room': [
            {'user': '@alice:fixture.test', 'room': pub, 'type': 'org.example.room', 'content': {'r': 1}},
            {'user': '@alice:fixture.test', 'room': pub, 'type': 'm.tag', 'content': {'tags': {'m.favourite': {'order': 0.5}}}},
            {'user': '@bob:fixture.test', 'room': pub, 'type': 'm.tag', 'content': {'tags': {'u.work': {}}}},
            {'user': '@bob:fixture.test', 'room': pub, 'type': 'm.fully_read', 'content': {'event_id': ev['alice_image']}},
        ],
    }
    media_used = {}
    for m in r['media']:
        media_used[m['uploader']] = media_used.get(m['uploader'], 0) + m['size']
    r['media_bytes_per_uploader'] = media_used
    # Every record a001503 wrote, as (reserved owner, key) -> JSON value; the account-data
    # store with room = none (sled) / room_id = '' (postgres).
    r['records'] = {
        '!aliases': {
            '#fixture:fixture.test': {'room_id': pub, 'creator': '@alice:fixture.test'},
            '#second:fixture.test': {'room_id': pub, 'creator': '@alice:fixture.test'},
            '#deleted:fixture.test': None,
        },
        '!directory': {pub: True, priv: None},
        '!redactions': {ev['bob_2_redacted']: ev['redaction_of_bob_2']},
        '!profiles': r['profiles'],
        '!forgotten': {f'@bob:fixture.test {priv}': True},
    }
    if b == 'sled':
        r['data_dir'] = 'sled-a001503/ (sled store in sled-a001503/sled, uploads in sled-a001503/media, key in sled-a001503/signing.key)'
    else:
        r['database_dump'] = 'postgres-a001503.sql'
        r['data_dir'] = 'postgres-data-a001503/ (uploads in media/, key in signing.key; no sled)'
    r['config'] = f'config-{b}.toml'
    r['signing_key_id'] = 'ed25519:a_1'
    runs[b] = r

manifest = {
    'commit': 'a0015038f50eb5e09cf84e1ec3ceada1098fd819',
    'binary': 'homeserver-bin at a001503, debug build (/work/target-fixture/debug/homeserver)',
    'generator': 'make-fixture.sh (sled, then postgres); check-fixture.sh reads a fixture back',
    'server_name': 'fixture.test',
    'room_version': '12 (the default at a001503: room ids are !<hash> with no server part)',
    'users': {
        '@alice:fixture.test': {'localpart': 'alice', 'password': 'alice-fixture-password', 'admin': False,
                                'device_id': 'ALICEDEV', 'device_display_name': 'Alice laptop (renamed)',
                                'made_by': 'homeserver register-user (server stopped)'},
        '@bob:fixture.test': {'localpart': 'bob', 'password': 'bob-fixture-password', 'admin': False,
                              'device_id': 'BOBDEV', 'device_display_name': 'Bob fixture device',
                              'made_by': 'homeserver register-user (server stopped)'},
    },
    'rooms': {
        'public': {'creator': '@alice:fixture.test', 'preset': 'public_chat', 'name': 'Fixture Room',
                   'topic': 'Fixture Room, topic changed',
                   'aliases': ['#fixture:fixture.test', '#second:fixture.test'],
                   'canonical_alias': '#fixture:fixture.test', 'published': True,
                   'members': {'@alice:fixture.test': 'join', '@bob:fixture.test': 'join'},
                   'messages': 5, 'note': 'messages: alice_1, bob_1, bob_2 (redacted by alice), alice_2, alice_image'},
        'private': {'creator': '@alice:fixture.test', 'preset': 'private_chat', 'name': 'Private Fixture Room',
                    'aliases': [], 'published': False,
                    'members': {'@alice:fixture.test': 'join', '@bob:fixture.test': 'leave'},
                    'forgotten_by': ['@bob:fixture.test'],
                    'note': 'bob: invited, joined, sent one message, left, forgot; alice set its directory visibility to private (record value null)'},
    },
    'deleted_aliases': ['#deleted:fixture.test (made then deleted: its !aliases record is JSON null, must resolve to M_NOT_FOUND)'],
    'profiles': {'@alice:fixture.test': {'displayname': 'Alice Fixture', 'avatar_url': 'mxc of alice\'s avatar.png upload (per run)'},
                 '@bob:fixture.test': {'displayname': 'Bob Fixture'}},
    'media_files': {
        'avatar.png': {'uploader': '@alice:fixture.test', 'content_type': 'image/png', 'size': 70},
        'alice.txt': {'uploader': '@alice:fixture.test', 'content_type': 'text/plain', 'size': 31},
        'bob.txt': {'uploader': '@bob:fixture.test', 'content_type': 'text/plain', 'size': 13},
    },
    'not_persisted_at_a001503': ['typing', 'read receipts (m.read)', 'to-device messages', 'e2ee device/one-time keys',
                                 'filters (the filter id encodes the filter)', 'per-user media usage: there is no !media_usage record at a001503 (added later; see README)'],
    'records_layout_at_a001503': {
        'where': 'matrix-homeserver/src/services/records.rs: account data with a reserved owner (user_id) and no room; key = account-data type',
        'sled': 'matrix-storage sled tree "matrix", account-data table, owner = "!aliases" etc., room = none',
        'postgres': 'table account_data(user_id = "!aliases" etc., room_id = \'\' (empty string, not NULL), kind = key, content = JSON bytes)',
        'tables': {
            '!aliases': 'alias -> {"room_id","creator"} (null once deleted)',
            '!directory': 'room id -> true when published (null when set private)',
            '!redactions': 'redacted event id -> redaction event id (a JSON string)',
            '!profiles': 'user id -> {"displayname"?, "avatar_url"?}',
            '!forgotten': '"<user id> <room id>" (one space) -> true',
        },
    },
    'runs': runs,
}
json.dump(manifest, open(f'{out}/manifest.json', 'w'), indent=2)
print('ok')
