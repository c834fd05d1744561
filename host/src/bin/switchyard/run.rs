//! `switchyard run`: load the config and the policy, then serve until SIGTERM/SIGINT.

use std::path::Path;

use anyhow::Context;
use switchyard::config::Config;
use switchyard::policy::PolicySettings;

/// Maps `[policy]` to the engine's settings.
pub fn policy_settings(config: &Config, _file: &Path) -> anyhow::Result<PolicySettings> {
    let p = &config.policy;
    Ok(PolicySettings {
        path: p.path.clone(),
        fail_mode: p.fail_mode,
        deadline: p.deadline,
        memory_limit: usize::try_from(p.memory_limit).context("policy.memory_limit")?,
        instances: p.instance_count() as usize,
        config: p.config.to_pairs(),
    })
}

pub fn run(file: &Path) -> anyhow::Result<()> {
    let config = Config::load(file)?;
    let _settings = policy_settings(&config, file)?;
    anyhow::bail!("no frontend is built yet")
}
