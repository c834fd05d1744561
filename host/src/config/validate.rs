//! Rules that involve more than one key. Each section checks its own keys (`check` in its
//! module); this file walks the sections and checks the references between them.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::SocketAddr;

use super::error::{ConfigError, KeyPath, Reason};
use super::{Config, units};

/// Problems found so far, in document order.
#[derive(Default)]
pub(crate) struct Problems(pub(crate) Vec<ConfigError>);

impl Problems {
    pub(crate) fn add(&mut self, path: KeyPath, reason: Reason) {
        self.0.push(ConfigError::key(path, reason));
    }

    /// `value` must lie within `min..=max`.
    pub(crate) fn range<T: PartialOrd + Display>(
        &mut self,
        path: KeyPath,
        value: T,
        min: T,
        max: T,
    ) {
        if value < min || value > max {
            self.add(
                path,
                Reason::OutOfRange {
                    min: min.to_string(),
                    max: max.to_string(),
                },
            );
        }
    }

    /// A duration must lie within `min..=max`.
    pub(crate) fn duration(
        &mut self,
        path: KeyPath,
        value: std::time::Duration,
        min: std::time::Duration,
        max: std::time::Duration,
    ) {
        if value < min || value > max {
            self.add(
                path,
                Reason::OutOfRange {
                    min: units::format_duration(min),
                    max: units::format_duration(max),
                },
            );
        }
    }

    /// `value` must be at least `min`.
    pub(crate) fn at_least<T: PartialOrd + Display>(&mut self, path: KeyPath, value: T, min: T) {
        if value < min {
            self.add(
                path,
                Reason::AtLeast {
                    min: min.to_string(),
                },
            );
        }
    }

    /// An optional count, when set, must be at least 1.
    pub(crate) fn positive(&mut self, path: KeyPath, value: Option<u32>) {
        if let Some(value) = value {
            self.at_least(path, value, 1);
        }
    }

    /// A name must be non-empty and made of letters, digits, `_`, `-` and `.`, because it
    /// reaches policies, metrics labels and admin URLs.
    pub(crate) fn name(&mut self, path: KeyPath, name: &str) {
        if name.is_empty() {
            self.add(path, Reason::Empty);
        } else if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            self.add(
                path,
                Reason::Format {
                    expected: "made of letters, digits, `_`, `-` and `.`".to_string(),
                },
            );
        }
    }
}

impl Config {
    /// Every problem with this configuration, in document order (empty when it is valid).
    pub fn validate_all(&self) -> Vec<ConfigError> {
        let mut problems = Problems::default();
        let root = KeyPath::root();

        let mut listener_names = BTreeMap::new();
        let mut binds: BTreeMap<SocketAddr, KeyPath> = BTreeMap::new();
        for (i, listener) in self.listeners.iter().enumerate() {
            let path = root.key("listener").index(i);
            listener.check(&path, &mut problems);
            unique(
                &mut problems,
                &mut listener_names,
                "listener",
                &listener.name,
                path.key("name"),
            );
            unique_bind(&mut problems, &mut binds, listener.bind, path.key("bind"));
            match self.clusters.get(&listener.cluster) {
                None => problems.add(
                    path.key("cluster"),
                    Reason::Unknown {
                        kind: "cluster",
                        name: listener.cluster.clone(),
                        known: self.clusters.keys().cloned().collect(),
                    },
                ),
                Some(cluster) if cluster.protocol != listener.protocol => problems.add(
                    path.key("protocol"),
                    Reason::ProtocolMismatch {
                        listener: listener.protocol,
                        cluster: listener.cluster.clone(),
                        cluster_protocol: cluster.protocol,
                    },
                ),
                Some(_) => {}
            }
        }
        if self.listeners.is_empty() {
            problems.add(
                root.key("listener"),
                Reason::NoneDefined {
                    what: "[[listener]] table",
                },
            );
        }

        for (name, cluster) in &self.clusters {
            let path = root.key("cluster").key(name.as_str());
            problems.name(path.clone(), name);
            cluster.check(&path, &mut problems);
        }

        let mut user_names = BTreeMap::new();
        for (i, user) in self.users.iter().enumerate() {
            let path = root.key("user").index(i);
            user.check(&path, &mut problems);
            unique(
                &mut problems,
                &mut user_names,
                "user",
                &user.name,
                path.key("name"),
            );
            for (j, cluster) in user.clusters.iter().enumerate() {
                if !self.clusters.contains_key(cluster) {
                    problems.add(
                        path.key("clusters").index(j),
                        Reason::Unknown {
                            kind: "cluster",
                            name: cluster.clone(),
                            known: self.clusters.keys().cloned().collect(),
                        },
                    );
                }
            }
        }

        self.check_databases_reachable(&root, &mut problems);

        if self.users.is_empty() {
            problems.add(
                root.key("user"),
                Reason::NoneDefined {
                    what: "[[user]] table (nobody could log in)",
                },
            );
        }

        let mut limited_tags = BTreeMap::new();
        for (i, rule) in self.tag_limits.iter().enumerate() {
            let path = root.key("limit").index(i);
            rule.check(&path, &mut problems);
            unique(
                &mut problems,
                &mut limited_tags,
                "limited tag",
                &rule.tag,
                path.key("tag"),
            );
        }

        self.cache.check(&root.key("cache"), &mut problems);
        self.policy.check(&root.key("policy"), &mut problems);
        if let Some(admin) = &self.admin {
            let path = root.key("admin");
            admin.check(&path, &mut problems);
            unique_bind(&mut problems, &mut binds, admin.bind, path.key("bind"));
        }
        self.log.check(&root.key("log"), &mut problems);
        self.server.check(&root.key("server"), &mut problems);
        problems.0
    }

    /// A PostgreSQL cluster that names no database opens one only to users with `databases` of
    /// their own: with none of those among the users who may use it, no client could log in.
    fn check_databases_reachable(&self, root: &KeyPath, problems: &mut Problems) {
        for (name, cluster) in &self.clusters {
            if cluster.protocol != crate::model::Protocol::Postgres
                || cluster.allowed_databases().is_some()
                || self.users.is_empty()
            {
                continue;
            }
            let reachable = self
                .users
                .iter()
                .any(|u| u.databases.is_some() && u.allows_cluster(name));
            if !reachable {
                problems.add(
                    root.key("cluster").key(name.as_str()).key("databases"),
                    Reason::Required {
                        when: "the cluster sets no `database` and no user who may use it has \
                               `databases` of its own (no client could open a database; \
                               `[\"*\"]` allows any)"
                            .to_string(),
                    },
                );
            }
        }
    }

    /// Checks the rules that involve several keys; the error names the first offending key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.validate_all().into_iter().next() {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

fn unique(
    problems: &mut Problems,
    seen: &mut BTreeMap<String, KeyPath>,
    kind: &'static str,
    name: &str,
    path: KeyPath,
) {
    // An empty name is reported by the section's own check.
    if name.is_empty() {
        return;
    }
    if let Some(first) = seen.get(name) {
        problems.add(
            path,
            Reason::Duplicate {
                kind,
                name: name.to_string(),
                first: first.clone(),
            },
        );
    } else {
        seen.insert(name.to_string(), path);
    }
}

fn unique_bind(
    problems: &mut Problems,
    seen: &mut BTreeMap<SocketAddr, KeyPath>,
    bind: SocketAddr,
    path: KeyPath,
) {
    // Port 0 asks the OS for a free port, so several such binds never clash.
    if bind.port() == 0 {
        return;
    }
    if let Some(first) = seen.get(&bind) {
        problems.add(
            path,
            Reason::Duplicate {
                kind: "bind address",
                name: bind.to_string(),
                first: first.clone(),
            },
        );
    } else {
        seen.insert(bind, path);
    }
}
