//! `homeserver check-federation SERVER_NAME`: the federation tester's checks (see
//! `matrix_federation::check`), printed a line each; the exit status says whether any failed.

use std::path::Path;

use anyhow::{Context, bail};
use matrix_homeserver::matrix_federation::check::{
    CheckOptions, Outcome, Report, check_federation,
};

/// Runs the checks and prints them; `Err` when one failed.
pub(crate) async fn run(
    server_name: &str,
    insecure: bool,
    ca_file: Option<&Path>,
    json: bool,
) -> anyhow::Result<()> {
    let mut options = CheckOptions::default();
    options.insecure = insecure;
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading the CA file {}", path.display()))?;
        options.extra_roots_pem = Some(pem);
    }
    let report = check_federation(server_name, &options).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report).context("the report as JSON")?);
    } else {
        print!("{}", render(&report));
    }
    if !report.ok {
        bail!("federation with {server_name} does not work: see the ✗ lines above");
    }
    Ok(())
}

/// The report as text: a line per check, `✓`, `!` or `✗`, its name, the reason.
pub(crate) fn render(report: &Report) -> String {
    let mut text = format!("federation check of {}\n", report.server_name);
    for check in &report.checks {
        let mark = match check.outcome {
            Outcome::Pass => "✓",
            Outcome::Warn => "!",
            Outcome::Fail => "✗",
        };
        text.push_str(&format!("{mark} {:<10} {}\n", check.name, check.detail));
    }
    text.push_str(if report.ok { "federation works\n" } else { "federation fails\n" });
    text
}
