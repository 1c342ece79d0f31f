#!/bin/sh
# The search bench (benches/search.rs) built as measured in benches/README.md's "Search":
# the crates whose code a search runs optimised, the rest (the homeserver, ruma, HTTP) at
# opt-level 0 so the build takes minutes, not half an hour, on a small machine. Arguments go
# to `cargo bench` (e.g. `--no-run`); SEARCH_MESSAGES and DATABASE_URL as the bench says.
cd "$(dirname "$0")/../.." || exit 1
exec cargo bench -p benches --bench search \
 --config 'profile.bench.package."*".opt-level=0' \
 --config 'profile.bench.package.matrix-homeserver.opt-level=0' \
 --config 'profile.bench.package.matrix-federation.opt-level=0' \
 --config 'profile.bench.package.matrix-stateres.opt-level=0' \
 --config 'profile.bench.package.matrix-storage.opt-level=3' \
 --config 'profile.bench.package.matrix-core.opt-level=3' \
 --config 'profile.bench.package.sled.opt-level=3' \
 --config 'profile.bench.package.sqlx-core.opt-level=3' \
 --config 'profile.bench.package.sqlx-postgres.opt-level=3' \
 --config 'profile.bench.package.tokio.opt-level=3' \
 --config 'profile.bench.package.crossbeam-epoch.opt-level=3' \
 --config 'profile.bench.package.crossbeam-utils.opt-level=3' \
 --config 'profile.bench.package.parking_lot.opt-level=3' \
 --config 'profile.bench.package.parking_lot_core.opt-level=3' \
 --config 'profile.bench.package.fxhash.opt-level=3' \
 --config 'profile.bench.package.benches.opt-level=3' "$@"
