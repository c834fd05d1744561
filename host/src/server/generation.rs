//! One generation of what a config builds behind the listeners: a router and backend per cluster,
//! a frontend per listener. A config reload builds the next generation next to the running one
//! and swaps it in; connections that hold the old one finish on it.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{ServerError, cluster_of, health_login, warn_unapplied_pg_keys};
use crate::backend::clickhouse_http::ChBackend;
use crate::backend::mysql::MyBackend;
use crate::backend::postgres::PgBackend;
use crate::config::Config;
use crate::frontend::clickhouse_http::{ChFrontend, Shared};
use crate::frontend::mysql::MyFrontend;
use crate::frontend::postgres::PgFrontend;
use crate::model::Protocol;
use crate::route::Router;

pub(super) struct Generation {
    pub pg: BTreeMap<String, Arc<PgFrontend>>,
    pub ch: BTreeMap<String, Arc<ChFrontend>>,
    pub my: BTreeMap<String, Arc<MyFrontend>>,
    pub pg_backends: Vec<Arc<PgBackend>>,
    pub ch_backends: Vec<Arc<ChBackend>>,
    pub my_backends: Vec<Arc<MyBackend>>,
}

/// TLS acceptors of the PostgreSQL and MySQL listeners, by listener name (built once at start:
/// listener changes need a restart).
pub(super) type PgTls = BTreeMap<String, Option<tokio_rustls::TlsAcceptor>>;

impl Generation {
    /// Builds every backend and frontend of `config`. With `previous`, PostgreSQL and MySQL
    /// frontends are built as successors of the running ones (sessions follow them between
    /// transactions).
    pub fn build(
        config: &Config,
        shared: &Shared,
        tls: &PgTls,
        previous: Option<&Generation>,
    ) -> Result<Generation, ServerError> {
        let mut ch_backends: BTreeMap<String, Arc<ChBackend>> = BTreeMap::new();
        let mut pg_backends: BTreeMap<String, Arc<PgBackend>> = BTreeMap::new();
        let mut my_backends: BTreeMap<String, Arc<MyBackend>> = BTreeMap::new();
        let mut pg = BTreeMap::new();
        let mut ch = BTreeMap::new();
        let mut my = BTreeMap::new();
        for listener in &config.listeners {
            let cluster = cluster_of(config, listener)?;
            match listener.protocol {
                Protocol::Postgres => {
                    let backend = match pg_backends.get(&listener.cluster) {
                        Some(backend) => backend.clone(),
                        None => {
                            let router = Arc::new(Router::new(listener.cluster.clone(), cluster));
                            let backend = PgBackend::start(router, health_login(config, cluster))
                                .map_err(|e| ServerError::BackendTls {
                                cluster: listener.cluster.clone(),
                                reason: e.to_string(),
                            })?;
                            pg_backends.insert(listener.cluster.clone(), backend.clone());
                            backend
                        }
                    };
                    warn_unapplied_pg_keys(config, cluster, &listener.name);
                    let before = previous.and_then(|p| p.pg.get(&listener.name));
                    let frontend = match before {
                        Some(old) => Arc::new(old.successor(
                            listener.clone(),
                            config,
                            backend,
                            shared.clone(),
                        )),
                        None => Arc::new(PgFrontend::new(
                            listener.clone(),
                            config,
                            backend,
                            shared.clone(),
                            tls.get(&listener.name).cloned().flatten(),
                        )),
                    };
                    pg.insert(listener.name.clone(), frontend);
                }
                Protocol::ClickhouseHttp => {
                    let backend = match ch_backends.get(&listener.cluster) {
                        Some(backend) => backend.clone(),
                        None => {
                            let router = Arc::new(Router::new(listener.cluster.clone(), cluster));
                            let backend =
                                ChBackend::start(router).map_err(|e| ServerError::BackendTls {
                                    cluster: listener.cluster.clone(),
                                    reason: e.to_string(),
                                })?;
                            let backend = Arc::new(backend);
                            ch_backends.insert(listener.cluster.clone(), backend.clone());
                            backend
                        }
                    };
                    let frontend =
                        ChFrontend::new(listener.clone(), config, backend, shared.clone());
                    ch.insert(listener.name.clone(), Arc::new(frontend));
                }
                Protocol::Mysql => {
                    let backend = match my_backends.get(&listener.cluster) {
                        Some(backend) => backend.clone(),
                        None => {
                            let router = Arc::new(Router::new(listener.cluster.clone(), cluster));
                            let backend =
                                MyBackend::start(router, mysql_probe_login(config, cluster))
                                    .map_err(|e| ServerError::BackendTls {
                                        cluster: listener.cluster.clone(),
                                        reason: e.to_string(),
                                    })?;
                            my_backends.insert(listener.cluster.clone(), backend.clone());
                            backend
                        }
                    };
                    let before = previous.and_then(|p| p.my.get(&listener.name));
                    let frontend = match before {
                        Some(old) => {
                            old.successor(listener.clone(), config, backend, shared.clone())
                        }
                        None => MyFrontend::new(
                            listener.clone(),
                            config,
                            backend,
                            shared.clone(),
                            tls.get(&listener.name).cloned().flatten(),
                        ),
                    };
                    my.insert(listener.name.clone(), Arc::new(frontend));
                }
            }
        }
        Ok(Generation {
            pg,
            ch,
            my,
            pg_backends: pg_backends.into_values().collect(),
            ch_backends: ch_backends.into_values().collect(),
            my_backends: my_backends.into_values().collect(),
        })
    }

    /// Sends the sessions of `old` to this generation's frontends.
    pub fn take_over(&self, old: &Generation) {
        for (name, frontend) in &old.pg {
            if let Some(next) = self.pg.get(name) {
                frontend.hand_over(next);
            }
        }
        for (name, frontend) in &old.my {
            if let Some(next) = self.my.get(name) {
                frontend.hand_over(next);
            }
        }
    }
}

/// The login MySQL health checks and GTID pollers use where a pool has no `auth`: the first
/// user with a password, as its backend credentials.
fn mysql_probe_login(
    config: &Config,
    cluster: &crate::config::ClusterConfig,
) -> Option<crate::backend::mysql::MyLogin> {
    let (_, primary) = cluster
        .primary()
        .or_else(|| cluster.pools.iter().next().map(|(n, p)| (n.as_str(), p)))?;
    config.users.iter().find_map(|u| {
        let credentials = u.backend_credentials(primary);
        credentials
            .password
            .map(|p| crate::backend::mysql::MyLogin {
                user: credentials.user,
                password: Some(p.expose().to_owned()),
                found_rows: false,
            })
    })
}
