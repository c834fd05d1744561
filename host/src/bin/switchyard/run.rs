//! `switchyard run`: load the config and the policy, then serve until SIGTERM/SIGINT.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use switchyard::config::{Config, LogConfig, LogFormat};
use switchyard::policy::{PolicyHandle, PolicyRuntime, PolicyWatcher};
use switchyard::server::{self, Deps};
use tokio::signal::unix::{SignalKind, signal};

pub fn run(file: &Path) -> anyhow::Result<()> {
    let config = Config::load(file)?;
    init_tracing(&config.log)?;
    let settings = server::policy_settings(&config)?;

    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .enable_all()
        .thread_name("switchyard")
        .on_thread_park(crate::alloc::on_park);
    if let Some(threads) = config.server.worker_threads {
        builder.worker_threads(threads as usize);
    }
    let runtime = builder.build().context("cannot start the async runtime")?;

    let policy_runtime = PolicyRuntime::new(Some(config.policy.artifact_dir.clone()))?;
    let handle =
        Arc::new(PolicyHandle::new(policy_runtime, settings).context("the configured policy")?);
    match handle.current() {
        Some(p) => tracing::info!(policy = p.name(), sha256 = p.sha256(), "policy loaded"),
        None => tracing::info!("no policy configured: the built-in default decides"),
    }

    runtime.block_on(async move {
        let _watcher = if config.policy.watch {
            PolicyWatcher::spawn(handle.clone())?
        } else {
            None
        };
        let mut hangup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
        let (reload, reloads) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading the config and the policy");
                // A reload already queued covers this signal too.
                let _ = reload.try_send(());
            }
        });
        let mut deps = Deps::new(&config, handle).await?;
        deps.config_path = Some(file.to_path_buf());
        let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let shutdown = async move {
            tokio::select! {
                _ = terminate.recv() => tracing::info!("SIGTERM received"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
            }
        };
        server::run(&config, deps, shutdown, reloads).await?;
        anyhow::Ok(())
    })
}

fn init_tracing(log: &LogConfig) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(value) if !value.trim().is_empty() => EnvFilter::try_new(value),
        _ => EnvFilter::try_new(&log.level),
    }
    .context("log.level is not a valid tracing filter")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}
