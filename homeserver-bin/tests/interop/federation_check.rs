//! `homeserver check-federation` against Synapse: its well-known step is skipped (an IP:port
//! name), its self-signed certificate is accepted with `--insecure` (a warning), its keys are
//! self-signed and current, and its version endpoint names it.

use std::process::Command;

use crate::synapse::Synapse;

#[test]
fn check_federation_passes_against_synapse() {
    let Some(synapse) = Synapse::from_env() else { return };
    let output = Command::new(env!("CARGO_BIN_EXE_homeserver"))
        .args(["check-federation", "--insecure", &synapse.server_name])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    for line in ["✓ resolution", "! tls", "✓ version    Synapse", "✓ keys       ed25519:"] {
        assert!(stdout.contains(line), "{line:?} in {stdout}");
    }
    // Without --insecure the self-signed certificate fails the check, and the exit status
    // says so.
    let output = Command::new(env!("CARGO_BIN_EXE_homeserver"))
        .args(["check-federation", &synapse.server_name])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("✗ tls"), "{stdout}");
}
