//! Config reload (SIGHUP, `POST /config/reload`): the file is read and validated, a new
//! generation of backends and frontends is built next to the running one, the policy is
//! reconfigured, and only then is everything swapped in. Any failure leaves the running config
//! in force and says why. Client connections are never dropped: new connections and requests use
//! the new generation at once; PostgreSQL and MySQL sessions move to it between transactions.
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
use crate::frontend::mysql::MyFrontend;
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
    pub my_slots: BTreeMap<String, Arc<ArcSwap<MyFrontend>>>,
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
        let settings = policy_settings(&new).map_err(|e| format!("config refused: {e}"))?;
        if !needs_new_generation(&old, &new) {
            // Only the policy or logging changed (or nothing: a plain SIGHUP): the pools, and
            // the server connections they hold, stay.
            let policy = shared.policy.clone();
            tokio::task::spawn_blocking(move || policy.reconfigure(settings))
                .await
                .map_err(|e| format!("policy reload task: {e}"))?
                .map_err(|e| format!("config refused: policy: {e}"))?;
            shared
                .metrics
                .set_slow_query_threshold(new.log.slow_query_threshold);
            let changed = changed_sections(&old, &new);
            self.config.store(Arc::new(new));
            tracing::info!(file = %path.display(), changed = ?changed, "config reloaded (pools kept)");
            return Ok(json!({"reloaded": path.display().to_string(), "changed": changed}));
        }
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
        for (name, slot) in &self.my_slots {
            if let Some(frontend) = next.my.get(name) {
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
            .mysql
            .store(Arc::new(next.my_backends.clone()));
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

/// Whether anything the pools, frontends or limits are built from changed (everything but
/// `[policy]` and `[log]`, which apply in place).
fn needs_new_generation(old: &Config, new: &Config) -> bool {
    let mut same_but_policy_and_log = old.clone();
    same_but_policy_and_log.policy = new.policy.clone();
    same_but_policy_and_log.log = new.log.clone();
    same_but_policy_and_log != *new
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[[listener]]\nname = \"pg\"\nprotocol = \"postgres\"\nbind = \"127.0.0.1:6432\"\ncluster = \"main\"\n\
             [cluster.main]\nprotocol = \"postgres\"\ndatabase = \"app\"\n[cluster.main.pool.primary]\nrole = \"primary\"\nnodes = [\"127.0.0.1:5432\"]\n\
             [[user]]\nname = \"app\"\npassword = \"pw\"\n{extra}"
        );
        Config::parse_with_env(&text, &|_| None).expect("valid test config")
    }

    #[test]
    fn only_pool_user_cache_and_limit_changes_rebuild_the_pools() {
        let base = config("");
        assert!(!needs_new_generation(&base, &config("")));
        assert!(!needs_new_generation(
            &base,
            &config("[log]\nslow_query_threshold = \"1s\"\n[policy]\ndeadline = \"5ms\"\n")
        ));
        assert!(needs_new_generation(
            &base,
            &config("max_connections = 3\n")
        ));
        assert!(needs_new_generation(
            &base,
            &config("[cache]\nenabled = true\n")
        ));
    }

    #[test]
    fn listener_admin_and_server_changes_are_refused() {
        let base = config("");
        assert!(restart_only(&base, &config("[server]\ndrain_timeout = \"1s\"\n")).is_err());
        assert!(restart_only(&base, &config("[admin]\nbind = \"127.0.0.1:9000\"\n")).is_err());
        let mut moved = base.clone();
        moved.listeners[0].bind = "127.0.0.1:7000".parse().expect("addr");
        let refused = restart_only(&base, &moved).expect_err("listener moved");
        assert!(refused.contains("[[listener]]"), "{refused}");
        assert!(restart_only(&base, &config("max_connections = 3\n")).is_ok());
    }
}
