//! Signature verification of received room events (issue 13: at least 40,000 events/s on one
//! core with batch verification): the member joins and messages of a room of room version 11
//! and 12, from five servers with a key each, verified one by one (`verify_event`) against
//! batches of 50 (one transaction), 500 and 5,000 (`verify_events_batch`); and what an event
//! costs before the ed25519 work: its signing input (redaction and canonical JSON), its content
//! hash, and receipt from bytes.
//!
//! Times are the bench thread's CPU time (`/proc/thread-self/schedstat`), not wall time: on a
//! shared machine, time slices given to other processes do not count (cache and core sharing
//! still do). Run on one core: `taskset -c 1 cargo bench -p benches --bench federation`; the
//! table for benches/README.md ("Federation") is `benches/scripts/federation_report.py`'s.

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use matrix_core::{KeyRing, Pdu, RoomVersionRules, SigningKey, Value, hash, json, signing};

/// Events per group: half member joins, half messages.
const EVENTS: usize = 5_000;
/// Servers in the room, each with its own key.
const SERVERS: usize = 5;

fn server(i: usize) -> String {
    format!("server{}.example.org", i % SERVERS)
}

/// Event `n` of the room: even numbers are joins of new members, odd ones their messages.
fn event_text(n: usize, rules: &RoomVersionRules) -> String {
    let room_id = if rules.room_id_from_create_event {
        "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM"
    } else {
        "!aBcDeFgHiJkLmNoPqR:server0.example.org"
    };
    let member = n / 2;
    let sender = format!("@user{member}:{}", server(member));
    let depth = 10 + n;
    let ts = 1_700_000_000_000u64 + n as u64 * 37;
    let prev = format!("$prev{n:06}AbCdEfGhIjKlMnOpQrStUvWxYz0123456789ab");
    if n.is_multiple_of(2) {
        format!(
            r#"{{"auth_events":["$Gh7lL7hWZN3cHGm5n8yQz3TfbXI5VP4f_kqrLPj3X3o","$nPSMJaGzOtLsG7O9c3TbJUVw0DYeJQbQKi4zcXBuNiw","$0Zob2ZLwo9dHQn6dhVYu5ipJ9OOnmsRMdUsmX4dWxQk"],"content":{{"avatar_url":"mxc://{srv}/AvAtAr{member}","displayname":"User number {member}","membership":"join"}},"depth":{depth},"origin_server_ts":{ts},"prev_events":["{prev}"],"room_id":"{room_id}","sender":"{sender}","state_key":"{sender}","type":"m.room.member","unsigned":{{"age":12}}}}"#,
            srv = server(member),
        )
    } else {
        format!(
            r#"{{"auth_events":["$Gh7lL7hWZN3cHGm5n8yQz3TfbXI5VP4f_kqrLPj3X3o","$nPSMJaGzOtLsG7O9c3TbJUVw0DYeJQbQKi4zcXBuNiw","$0Zob2ZLwo9dHQn6dhVYu5ipJ9OOnmsRMdUsmX4dWxQk"],"content":{{"body":"Hello from user {member}: the quick brown fox jumps over the lazy dog, ünïcödé 🎉.","m.mentions":{{}},"msgtype":"m.text"}},"depth":{depth},"origin_server_ts":{ts},"prev_events":["{prev}"],"room_id":"{room_id}","sender":"{sender}","type":"m.room.message","unsigned":{{"age":12}}}}"#
        )
    }
}

/// The keys of the room's servers and its events, hashed and signed by their senders' servers,
/// as received: canonical bytes.
fn room(rules: &'static RoomVersionRules) -> (KeyRing, Vec<Vec<u8>>) {
    let keys: Vec<SigningKey> =
        (0..SERVERS).map(|i| SigningKey::from_seed("k1", &[i as u8 + 1; 32])).collect();
    let mut keyring = KeyRing::new();
    for (i, key) in keys.iter().enumerate() {
        keyring.insert(&server(i), key.key_id(), key.public_key());
    }
    let events = (0..EVENTS)
        .map(|n| {
            let value = json::parse_strict(event_text(n, rules).as_bytes()).expect("valid JSON");
            let mut object = value.as_object().expect("object").clone();
            let origin = server(n / 2);
            signing::hash_and_sign_event(&mut object, &origin, &keys[(n / 2) % SERVERS], rules);
            json::to_canonical_vec(&Value::Object(object))
        })
        .collect();
    (keyring, events)
}

/// The CPU time of the calling thread, in nanoseconds, from the scheduler's accounting (updated
/// at least every scheduler tick: the error at each end is under a tick, and unbiased).
fn thread_cpu_ns() -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    text.split_whitespace().next().and_then(|n| n.parse().ok()).expect("schedstat's first field")
}

/// Criterion's measurement of the bench thread's CPU time.
struct CpuTime;

impl Measurement for CpuTime {
    type Intermediate = u64;
    type Value = u64;
    fn start(&self) -> u64 {
        thread_cpu_ns()
    }
    fn end(&self, started: u64) -> u64 {
        thread_cpu_ns().saturating_sub(started)
    }
    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuTimeFormatter
    }
}

/// Formats nanoseconds of CPU time as criterion formats wall time.
struct CpuTimeFormatter;

impl ValueFormatter for CpuTimeFormatter {
    fn scale_values(&self, typical_ns: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = match typical_ns {
            ns if ns < 1e3 => (1.0, "ns (cpu)"),
            ns if ns < 1e6 => (1e-3, "µs (cpu)"),
            ns if ns < 1e9 => (1e-6, "ms (cpu)"),
            _ => (1e-9, "s (cpu)"),
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }
    fn scale_throughputs(
        &self,
        _typical_ns: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let (per_iteration, unit) = match *throughput {
            Throughput::Elements(n) => (n as f64, "Kelem/s (cpu)"),
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) => (n as f64, "KB/s (cpu)"),
        };
        values.iter_mut().for_each(|v| *v = per_iteration * 1e9 / *v / 1e3);
        unit
    }
    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn verification(c: &mut Criterion<CpuTime>, name: &str, rules: &'static RoomVersionRules) {
    let (keyring, bytes) = room(rules);
    let pdus: Vec<Pdu> =
        bytes.iter().map(|b| Pdu::from_slice(b, rules).expect("valid event")).collect();
    let refs: Vec<&Pdu> = pdus.iter().collect();
    for pdu in &pdus {
        assert_eq!(signing::verify_event(pdu, &keyring, rules), Ok(signing::Verified::All));
    }

    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(EVENTS as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(4));
    group.bench_function("one_by_one", |b| {
        b.iter(|| {
            for pdu in &refs {
                signing::verify_event(black_box(*pdu), &keyring, rules).expect("verifies");
            }
        })
    });
    for size in [50, 500, 5_000] {
        group.bench_function(format!("batch_{size}"), |b| {
            b.iter(|| {
                for chunk in refs.chunks(size) {
                    let results = signing::verify_events_batch(black_box(chunk), &keyring, rules);
                    assert!(results.iter().all(|r| *r == Ok(signing::Verified::All)));
                }
            })
        });
    }
    // What verification computes besides ed25519, for every event.
    group.bench_function("signing_input", |b| {
        b.iter(|| {
            for pdu in &refs {
                black_box(signing::event_signing_input(black_box(*pdu), rules));
            }
        })
    });
    group.bench_function("content_hash", |b| {
        b.iter(|| {
            for pdu in &refs {
                black_box(hash::content_hash(black_box(*pdu)));
            }
        })
    });
    // Before verification: bytes to a format-checked event with its id.
    group.bench_function("receive", |b| {
        b.iter(|| {
            for event in &bytes {
                black_box(Pdu::from_slice(black_box(event), rules).expect("valid"));
            }
        })
    });
    group.finish();
}

fn federation(c: &mut Criterion<CpuTime>) {
    verification(c, "verify_room_v11", &RoomVersionRules::V11);
    verification(c, "verify_room_v12", &RoomVersionRules::V12);
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(CpuTime);
    targets = federation
}
criterion_main!(benches);
