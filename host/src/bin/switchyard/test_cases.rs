//! `switchyard policy test`: runs a policy over a case file and reports every difference.

use std::path::PathBuf;

use clap::Args;
use switchyard::policy::PolicyRuntime;
use switchyard::policy::cases::{CaseFile, Runner};

use crate::check::parse_key_value;

#[derive(Args)]
pub struct PolicyTestArgs {
    /// The policy component (.wasm).
    #[arg(long)]
    policy: PathBuf,
    /// The case file (TOML): [config], [[case]] and [[config_error]] entries.
    cases: PathBuf,
    /// A policy config entry merged over the file's [config], repeatable: --set limit.alice=100
    #[arg(long = "set", visible_alias = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    config: Vec<(String, String)>,
    /// Keep compiled modules in DIR between runs (as `[policy] artifact_dir` does): a Python or
    /// JavaScript policy then loads in milliseconds instead of compiling for seconds. The
    /// directory must not be writable by others (its files are loaded as native code).
    #[arg(long, value_name = "DIR")]
    artifact_dir: Option<PathBuf>,
}

/// Exit code 1 when a case does not match, 2 (an `Err`) when the files cannot be used.
pub fn policy_test(args: PolicyTestArgs) -> anyhow::Result<u8> {
    if !args.policy.is_file() {
        anyhow::bail!("policy file {} does not exist", args.policy.display());
    }
    let file = CaseFile::load(&args.cases)?;
    let runtime = PolicyRuntime::new(args.artifact_dir)?;
    let report = Runner::new(&runtime, &args.policy)?.run(&file, &args.config)?;
    print!("{}", report.render());
    Ok(if report.failed() == 0 { 0 } else { 1 })
}
