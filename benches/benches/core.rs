//! matrix-core against ruma, on the same inputs in the same run: canonical serialisation,
//! content hash, reference hash, signing and verification of a 1 KB message event and of a
//! power-levels event of a 10,000-member room; and batch against one-by-one verification.
//!
//! Run: `cargo bench -p benches --bench core`. The ratios go in benches/README.md.

use std::hint::black_box;

use benches::events::{self, Event};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use matrix_core::{KeyRing, Pdu, RoomVersionRules, b64, hash, json, signing};
use ruma::signatures as rs;

fn group_for(c: &mut Criterion, event: &Event) {
    let rules = &RoomVersionRules::V11;
    let ruma_rules = ruma::RoomVersionId::V11.rules().expect("rules");
    let ours = &event.ours;
    let theirs = &event.theirs;
    let key = events::signing_key();
    let ruma_key = events::ruma_signing_key();
    let mut keyring = KeyRing::new();
    keyring.insert("example.org", key.key_id(), key.public_key());
    let ruma_keys = events::ruma_public_keys(&key);

    let mut group = c.benchmark_group(event.name);
    group.throughput(Throughput::Elements(1));

    group.bench_function("canonical/ours", |b| b.iter(|| json::to_canonical_vec(black_box(ours))));
    group.bench_function("canonical/ruma", |b| {
        b.iter(|| serde_json::to_vec(black_box(theirs)).expect("serialises"))
    });

    let ours_obj = ours.as_object().expect("object");
    let theirs_obj = match theirs {
        ruma::CanonicalJsonValue::Object(o) => o,
        _ => unreachable!("events are objects"),
    };
    // Our event type keeps its canonical bytes (made once on receipt, for the size check).
    let pdu = Pdu::new_unchecked(ours_obj.clone(), rules);
    group.bench_function("content_hash/ours", |b| b.iter(|| hash::content_hash(black_box(&pdu))));
    // The floor: SHA-256 alone over the bytes the content hash covers.
    let input = hash::content_hash_input(&pdu);
    group.bench_function("content_hash/sha256_floor", |b| {
        b.iter(|| <sha2::Sha256 as sha2::Digest>::digest(black_box(&input)))
    });
    group.bench_function("content_hash/ruma", |b| {
        b.iter(|| events::ruma_content_hash(black_box(theirs_obj)))
    });
    group.bench_function("reference_hash/ours", |b| {
        b.iter(|| b64::encode_url_safe(hash::reference_hash(black_box(&pdu), rules)))
    });
    group.bench_function("reference_hash/ruma", |b| {
        b.iter(|| events::ruma_reference_hash(black_box(theirs_obj), &ruma_rules))
    });

    // A PDU-sized event is signed as an event; the 10k-member power levels (beyond the PDU size
    // limit, which ruma's event functions enforce) as JSON.
    let as_event = event.is_pdu;
    group.bench_function("sign/ours", |b| {
        b.iter_batched(
            || ours_obj.clone(),
            |mut o| {
                if as_event {
                    signing::hash_and_sign_event(&mut o, "example.org", &key, rules);
                } else {
                    signing::sign_json(&mut o, "example.org", &key);
                }
                o
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("sign/ruma", |b| {
        b.iter_batched(
            || theirs_obj.clone(),
            |mut o| {
                if as_event {
                    rs::hash_and_sign_event(
                        "example.org",
                        &ruma_key,
                        &mut o,
                        &ruma_rules.redaction,
                    )
                    .expect("signs");
                } else {
                    rs::sign_json("example.org", &ruma_key, &mut o).expect("signs");
                }
                o
            },
            BatchSize::SmallInput,
        )
    });

    let (signed_ours, signed_theirs) = events::signed_pair(ours_obj, as_event);
    let signed_pdu = Pdu::new_unchecked(signed_ours.clone(), rules);
    group.bench_function("verify/ours", |b| {
        b.iter(|| {
            if as_event {
                signing::verify_event(black_box(&signed_pdu), &keyring, rules).map(drop)
            } else {
                signing::verify_json(black_box(&signed_ours), "example.org", &keyring)
            }
            .expect("verifies")
        })
    });
    group.bench_function("verify/ruma", |b| {
        b.iter(|| {
            if as_event {
                rs::verify_event(&ruma_keys, black_box(&signed_theirs), &ruma_rules).map(drop)
            } else {
                rs::verify_json(&ruma_keys, black_box(&signed_theirs))
            }
            .expect("verifies")
        })
    });

    // Receipt: bytes to a format-checked event with its id.
    let bytes = json::to_canonical_vec(ours);
    if as_event {
        group.bench_function("receive/ours", |b| {
            b.iter(|| Pdu::from_slice(black_box(&bytes), rules).expect("valid"))
        });
        group.bench_function("receive/ruma", |b| {
            b.iter(|| {
                let object: ruma::CanonicalJsonObject =
                    serde_json::from_slice(black_box(&bytes)).expect("valid");
                ruma::state_res::check_pdu_format(&object, &ruma_rules.event_format)
                    .expect("valid");
                let id = rs::reference_hash(&object, &ruma_rules).expect("hash");
                (object, id)
            })
        });
    }
    group.finish();
}

fn core(c: &mut Criterion) {
    group_for(c, &events::message_1k());
    group_for(c, &events::power_levels("power_levels_10k", 10_000));

    // Batch verification of 1,000 signed events against one-by-one verification.
    let rules = &RoomVersionRules::V11;
    let key = events::signing_key();
    let mut keyring = KeyRing::new();
    keyring.insert("example.org", key.key_id(), key.public_key());
    let batch: Vec<Pdu> = events::signed_messages(1_000)
        .into_iter()
        .map(|event| Pdu::new_unchecked(event, rules))
        .collect();
    let refs: Vec<&Pdu> = batch.iter().collect();
    let mut group = c.benchmark_group("verify_1000_events");
    group.throughput(Throughput::Elements(1_000));
    group.sample_size(20);
    group.bench_function("batch", |b| {
        b.iter(|| {
            let results = signing::verify_events_batch(black_box(&refs), &keyring, rules);
            assert!(results.iter().all(Result::is_ok));
        })
    });
    group.bench_function("one_by_one", |b| {
        b.iter(|| {
            for event in &refs {
                signing::verify_event(black_box(*event), &keyring, rules).expect("verifies");
            }
        })
    });
    group.finish();
}

criterion_group!(benches, core);
criterion_main!(benches);
