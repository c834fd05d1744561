//! `switchyard config check` and `switchyard policy check`: offline tools that never touch a
//! database.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use switchyard::classify::Classifier;
use switchyard::config::Config;
use switchyard::model::{Protocol, QueryContext};
use switchyard::pipeline;
use switchyard::policy::{PolicyHandle, PolicyRuntime, PolicySettings};

#[derive(Args)]
pub struct PolicyCheckArgs {
    /// The policy component (.wasm). Without it, the built-in default decides.
    #[arg(long)]
    policy: Option<PathBuf>,
    /// The statement to classify and decide.
    #[arg(long)]
    sql: String,
    #[arg(long, default_value = "postgres")]
    user: String,
    #[arg(long, default_value = "postgres")]
    database: String,
    /// postgres, clickhouse-http or mysql.
    #[arg(long, default_value = "postgres")]
    protocol: Protocol,
    /// Whether the statement runs inside an open transaction.
    #[arg(long)]
    in_transaction: bool,
    /// A policy config entry (as in `[policy.config]`), repeatable: --set limit.alice=100
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    config: Vec<(String, String)>,
    /// A protocol attribute, repeatable: --attr startup.application_name=billing
    #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    attributes: Vec<(String, String)>,
    /// The client address the policy sees.
    #[arg(long, default_value = "127.0.0.1:50000")]
    client_addr: String,
}

pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

pub fn policy_check(args: PolicyCheckArgs) -> anyhow::Result<()> {
    if let Some(path) = &args.policy
        && !path.is_file()
    {
        bail!("policy file {} does not exist", path.display());
    }
    let runtime = PolicyRuntime::new(None)?;
    let settings = PolicySettings {
        path: args.policy.clone(),
        config: args.config,
        instances: 1,
        ..PolicySettings::default()
    };
    let handle = PolicyHandle::new(runtime, settings)?;
    let classifier = Classifier::new(16);
    let classification = classifier.classify(args.protocol, &args.sql);
    let query = QueryContext {
        protocol: args.protocol,
        sql: args.sql,
        classification,
        user: args.user.into(),
        database: args.database.into(),
        client_addr: args.client_addr.into(),
        in_transaction: args.in_transaction,
        attributes: args.attributes.into(),
    };
    let verdict = pipeline::decide(&classifier, &handle, &query, None)?;
    let policy = match handle.current() {
        Some(p) => serde_json::json!({ "name": p.name(), "sha256": p.sha256() }),
        None => serde_json::json!("built-in default"),
    };
    let rewritten = !std::ptr::eq(verdict.sql(&query.sql), query.sql.as_str());
    let output = serde_json::json!({
        "policy": policy,
        "classification": query.classification,
        "decision": verdict.decision,
        "effective_classification": if rewritten { Some(&verdict.effective) } else { None },
    });
    println!("{}", serde_json::to_string_pretty(&output)?);
    Ok(())
}

pub fn config_check(file: &Path) -> anyhow::Result<()> {
    let config = Config::load(file)?;
    let settings = switchyard::server::policy_settings(&config)?;
    let runtime = PolicyRuntime::new(None)?;
    let handle = PolicyHandle::new(runtime, settings).context("the configured policy")?;
    let policy = handle
        .current()
        .map(|p| {
            format!(
                "policy {} (sha256 {})",
                p.path().display(),
                &p.sha256()[..12]
            )
        })
        .unwrap_or_else(|| "built-in default policy".to_owned());
    println!("{}: ok ({policy})", file.display());
    Ok(())
}
