//! Config reload (SIGHUP, `POST /config/reload`): the file is read and validated, a new
//! generation of backends and frontends is built next to the running one, the policy is
//! reconfigured, and only then is everything swapped in. Any failure leaves the running config
//! in force and says why. Client connections are never dropped: new connections and requests use
//! the new generation at once; PostgreSQL sessions move to it between transactions.
//!
//! Listeners, `[admin]` and `[server]` cannot change without a restart (sockets, TLS and the
//! runtime are set up once); a reload that changes them is refused.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde_json::json;

use super::generation::{Generation, PgTls};
use super::{cache_settings, policy_settings};
use crate::admin::{ReloadResult, Reloader};
use crate::cache::QueryCache;
use crate::config::Config;
use crate::frontend::clickhouse_http::{ChFrontend, Shared};
use crate::frontend::postgres::PgFrontend;
use crate::limits::Admission;

/// What the listeners and the admin API share, and a reload replaces.
pub(super) struct Live {
    pub config: Arc<ArcSwap<Config>>,
    /// The limits in force (also in `shared`), readable without the reload lock.
    pub admission: ArcSwap<Admission>,
    /// The config file, for reloads (`None`: the server was started from text; no reload).
    pub path: Option<PathBuf>,
    pub tls: PgTls,
    pub generation: ArcSwap<Generation>,
    pub pg_slots: BTreeMap<String, Arc<ArcSwap<PgFrontend>>>,
    pub ch_slots: BTreeMap<String, Arc<ArcSwap<ChFrontend>>>,
    /// The `Shared` of the current generation; held across a reload, so reloads run one at a
    /// time.
    pub shared: tokio::sync::Mutex<Shared>,
}

impl Live {
    pub async fn reload(&self) -> ReloadResult {
        let Some(path) = &self.path else {
            return Err("the server was not started from a config file".to_owned());
        };
        let mut shared = self.shared.lock().await;
        let old = self.config.load_full();
        let new = Config::load(path).map_err(|e| format!("config refused: {e}"))?;
        restart_only(&old, &new)?;
        let mut next_shared = shared.clone();
        next_shared.admission =
            Arc::new(shared.admission.reconfigured(&new.users, &new.tag_limits));
        if new.cache != old.cache {
            next_shared.cache = if new.cache.enabled {
                let cache = QueryCache::new(cache_settings(&new.cache))
                    .await
                    .map_err(|e| format!("config refused: cache: {e}"))?;
                Some(cache)
            } else {
                None
            };
        }
        let current = self.generation.load_full();
        let next = Generation::build(&new, &next_shared, &self.tls, Some(&current))
            .map_err(|e| format!("config refused: {e}"))?;
        let settings = policy_settings(&new).map_err(|e| format!("config refused: {e}"))?;
        let policy = next_shared.policy.clone();
        tokio::task::spawn_blocking(move || policy.reconfigure(settings))
            .await
            .map_err(|e| format!("policy reload task: {e}"))?
            .map_err(|e| format!("config refused: policy: {e}"))?;

        // Commit.
        for (name, slot) in &self.pg_slots {
            if let Some(frontend) = next.pg.get(name) {
                slot.store(frontend.clone());
            }
        }
        for (name, slot) in &self.ch_slots {
            if let Some(frontend) = next.ch.get(name) {
                slot.store(frontend.clone());
            }
        }
        next.take_over(&current);
        let metrics = &next_shared.metrics;
        metrics
            .sources
            .postgres
            .store(Arc::new(next.pg_backends.clone()));
        metrics
            .sources
            .clickhouse
            .store(Arc::new(next.ch_backends.clone()));
        metrics
            .sources
            .cache
            .store(next_shared.cache.clone().map(Arc::new));
        metrics.set_slow_query_threshold(new.log.slow_query_threshold);
        metrics
            .sources
            .admission
            .store(Some(next_shared.admission.clone()));
        self.generation.store(Arc::new(next));
        self.admission.store(next_shared.admission.clone());
        let changed = changed_sections(&old, &new);
        self.config.store(Arc::new(new));
        *shared = next_shared;
        tracing::info!(file = %path.display(), changed = ?changed, "config reloaded");
        let mut report = json!({"reloaded": path.display().to_string(), "changed": changed});
        if old.log.level != self.config.load().log.level
            || old.log.format != self.config.load().log.format
        {
            report["note"] = json!("log.level and log.format apply at the next restart");
        }
        Ok(report)
    }
}

impl Reloader for Live {
    fn reload(&self) -> Pin<Box<dyn Future<Output = ReloadResult> + Send + '_>> {
        Box::pin(Live::reload(self))
    }
}

/// Refuses changes a running server cannot apply.
fn restart_only(old: &Config, new: &Config) -> Result<(), String> {
    let refuse = |what: &str| {
        Err(format!(
            "config refused: {what} changed; that needs a restart (the running config stays)"
        ))
    };
    if old.listeners != new.listeners {
        return refuse("[[listener]]");
    }
    if old.admin != new.admin {
        return refuse("[admin]");
    }
    if old.server != new.server {
        return refuse("[server]");
    }
    Ok(())
}

/// Top-level sections whose values differ.
fn changed_sections(old: &Config, new: &Config) -> Vec<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return Vec::new();
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}
