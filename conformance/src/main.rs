//! `signet-conformance`: checks any registry URL against the OCI Distribution
//! Spec v1.1 and against what real clients need. It speaks only HTTP.
//!
//! Modules: `client` (HTTP helpers), `fixtures` (what gets pushed), `context`
//! (shared run state, cleanup), `checks::*` (one module per area), `expected`
//! (known-failure files), `report` (table, JUnit, JSON).

#![forbid(unsafe_code)]

mod checks;
mod client;
mod context;
mod expected;
mod fixtures;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::client::Registry;
use crate::context::{Area, Ctx, Features, Skip};
use crate::report::{CheckResult, Status, Summary};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "OCI Distribution Spec v1.1 conformance runner for any registry URL"
)]
struct Args {
    /// Base URL of the registry, e.g. http://127.0.0.1:5000
    #[arg(long, env = "SIGNET_CONFORMANCE_URL")]
    url: String,

    /// Repository namespace to push under; each run adds a random component.
    #[arg(long, default_value = "conformance")]
    namespace: String,

    /// Run only these areas (pull, push, discovery, management, clients).
    #[arg(long = "only", value_name = "AREA")]
    only: Vec<String>,

    /// Expected-results file (TOML) listing checks this registry is known to fail.
    #[arg(long, value_name = "FILE")]
    expected: Option<PathBuf>,

    /// Write a JUnit XML report here.
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,

    /// Write a JSON report here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,

    /// Leave what the run pushed in place.
    #[arg(long)]
    no_cleanup: bool,

    /// Also fail when a check listed as expected to fail now passes.
    #[arg(long)]
    fail_on_fixed: bool,

    /// List the checks and exit.
    #[arg(long)]
    list: bool,
}

fn valid_namespace(ns: &str) -> bool {
    !ns.is_empty()
        && ns.split('/').all(|comp| {
            !comp.is_empty()
                && comp.split(['.', '_', '-']).all(|p| {
                    !p.is_empty()
                        && p.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                })
        })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("signet-conformance: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<ExitCode> {
    let mut areas = Vec::new();
    for a in &args.only {
        match Area::parse(a) {
            Some(area) => areas.push(area),
            None => bail!("unknown area {a:?}: use pull, push, discovery, management or clients"),
        }
    }
    let selected: Vec<_> = checks::all()
        .into_iter()
        .filter(|c| areas.is_empty() || areas.contains(&c.area))
        .collect();
    if args.list {
        for c in &selected {
            println!("{:<48} {}", c.id(), c.about);
        }
        println!("{} checks", selected.len());
        return Ok(ExitCode::SUCCESS);
    }
    if !valid_namespace(&args.namespace) {
        bail!(
            "--namespace {:?} is not a valid repository path",
            args.namespace
        );
    }

    let expectations = match &args.expected {
        Some(p) => expected::load(p)?,
        None => Default::default(),
    };
    let known: std::collections::HashSet<String> = checks::all().iter().map(|c| c.id()).collect();
    if let (Some(p), Some(name)) = (&args.expected, &expectations.registry) {
        println!("expected results: {} ({name})", p.display());
    }
    for id in expectations.failures.keys() {
        if !known.contains(id) {
            eprintln!("warning: the expected file names an unknown check {id}");
        }
    }

    let reg = Registry::new(&args.url, Duration::from_secs(args.timeout))?;
    let base = reg
        .get("v2/")
        .await
        .with_context(|| format!("cannot reach {}", reg.base()))?;
    let features = Features {
        signatures_extension: base.header("x-registry-supports-signatures") == Some("1"),
    };
    let run_id = fixtures::random_hex(4);
    let prefix = format!("{}/{run_id}", args.namespace);
    println!(
        "signet-conformance: {} (GET /v2/ -> {}), repositories under {prefix}/",
        reg.base(),
        base.status
    );
    println!(
        "signatures extension advertised: {}",
        if features.signatures_extension {
            "yes"
        } else {
            "no"
        }
    );

    let ctx = Arc::new(Ctx::new(reg, prefix, features));
    let mut results = Vec::with_capacity(selected.len());
    for check in &selected {
        let id = check.id();
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            Duration::from_secs(args.timeout * 3),
            (check.run)(ctx.clone()),
        )
        .await;
        let (status, message) = match outcome {
            Err(_) => (
                Status::Fail,
                Some(format!("timed out after {}s", args.timeout * 3)),
            ),
            Ok(Ok(())) => (Status::Pass, None),
            Ok(Err(e)) => match e.downcast_ref::<Skip>() {
                Some(s) => (Status::Skip, Some(s.0.clone())),
                None => (Status::Fail, Some(one_line(&format!("{e:#}")))),
            },
        };
        results.push(CheckResult {
            expected: expectations.failures.get(&id).cloned(),
            id,
            area: check.area,
            about: check.about.to_owned(),
            status,
            message,
            duration: started.elapsed(),
        });
    }

    if !args.no_cleanup {
        let (ok, tried) = ctx.cleanup().await;
        println!("cleanup: {ok} of {tried} pushed manifests and blobs deleted");
    }

    print!("{}", report::table(&results));
    let registry = args.url.clone();
    if let Some(p) = &args.junit {
        std::fs::write(p, report::junit(&results, &registry))
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &args.json {
        let text = serde_json::to_string_pretty(&report::json(&results, &registry, &run_id))?;
        std::fs::write(p, text + "\n").with_context(|| format!("writing {}", p.display()))?;
    }

    let s = Summary::of(&results);
    println!();
    if args.expected.is_some() {
        println!(
            "expected failures: {}; unexpected failures: {}; expected failures that now pass: {}",
            s.expected_failures, s.unexpected_failures, s.fixed
        );
        for r in results.iter().filter(|r| r.is_fixed()) {
            println!("  now passing (remove from the expected file): {}", r.id);
        }
    }
    println!("{}", s.line());
    let red = s.unexpected_failures > 0 || (args.fail_on_fixed && s.fixed > 0);
    Ok(if red {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Keeps a failure reason on one line of the table.
fn one_line(s: &str) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 300 {
        flat.chars().take(297).collect::<String>() + "..."
    } else {
        flat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces() {
        assert!(valid_namespace("conformance"));
        assert!(valid_namespace("a/b-c/d.e_f"));
        assert!(!valid_namespace("A"));
        assert!(!valid_namespace("a//b"));
        assert!(!valid_namespace("a/-b"));
        assert!(!valid_namespace(""));
    }

    #[test]
    fn one_line_flattens() {
        assert_eq!(one_line("a\n  b\tc"), "a b c");
    }
}
