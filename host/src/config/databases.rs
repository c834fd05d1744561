//! Which databases clients may open: the cluster's `databases` (or its one `database`), narrowed
//! by a user's `databases`. A database the config does not name is refused, so what the backend
//! credentials could reach (`postgres`, `template1`, other applications' databases) is not the
//! client's to choose.

use super::cluster::ClusterConfig;
use super::error::{KeyPath, Reason};
use super::user::UserConfig;
use super::validate::Problems;

/// In a list: any database (an explicit opt-out of the allow-list).
pub const ANY_DATABASE: &str = "*";

/// The databases clients of one cluster may open.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatabaseAccess {
    /// `None`: the cluster names no database, so only users' own lists can open one.
    cluster: Option<Vec<String>>,
}

impl DatabaseAccess {
    pub fn of(cluster: &ClusterConfig) -> DatabaseAccess {
        DatabaseAccess {
            cluster: cluster.allowed_databases().map(<[String]>::to_vec),
        }
    }

    /// Whether `user` may open `database` on this cluster.
    pub fn allows(&self, user: &UserConfig, database: &str) -> bool {
        match (&self.cluster, &user.databases) {
            (None, None) => false,
            (Some(cluster), None) => listed(cluster, database),
            (None, Some(own)) => listed(own, database),
            (Some(cluster), Some(own)) => listed(cluster, database) && listed(own, database),
        }
    }
}

fn listed(list: &[String], database: &str) -> bool {
    list.iter().any(|d| d == ANY_DATABASE || d == database)
}

/// A `databases` list: at least one entry, none empty.
pub(crate) fn check_list(list: Option<&[String]>, path: &KeyPath, problems: &mut Problems) {
    let Some(list) = list else { return };
    if list.is_empty() {
        problems.add(
            path.clone(),
            Reason::Format {
                expected: "a list of at least one database (`[\"*\"]` allows any)".to_string(),
            },
        );
    }
    for (i, name) in list.iter().enumerate() {
        if name.is_empty() {
            problems.add(path.index(i), Reason::Empty);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(toml: &str) -> ClusterConfig {
        toml::from_str(&format!(
            "protocol = \"postgres\"\n{toml}\n[pool.p]\nrole = \"primary\"\nnodes = [\"h\"]\n"
        ))
        .expect("cluster")
    }

    fn user(databases: Option<&[&str]>) -> UserConfig {
        let mut user = UserConfig::new("u", Some("pw"));
        user.databases = databases.map(|d| d.iter().map(|s| s.to_string()).collect());
        user
    }

    #[test]
    fn only_named_databases_open_and_a_user_list_narrows_the_cluster_list() {
        let pinned = DatabaseAccess::of(&cluster("database = \"app\""));
        assert!(pinned.allows(&user(None), "app"));
        assert!(!pinned.allows(&user(None), "postgres"));
        assert!(!pinned.allows(&user(Some(&["other"])), "other"));

        let listed = DatabaseAccess::of(&cluster(
            "database = \"app\"\ndatabases = [\"app\", \"reports\"]",
        ));
        assert!(listed.allows(&user(None), "reports"));
        assert!(listed.allows(&user(Some(&["reports"])), "reports"));
        assert!(!listed.allows(&user(Some(&["reports"])), "app"));
        assert!(!listed.allows(&user(None), "template1"));

        let unnamed = DatabaseAccess::of(&cluster(""));
        assert!(!unnamed.allows(&user(None), "app"));
        assert!(unnamed.allows(&user(Some(&["app"])), "app"));
        assert!(!unnamed.allows(&user(Some(&["app"])), "postgres"));

        let any = DatabaseAccess::of(&cluster("databases = [\"*\"]"));
        assert!(any.allows(&user(None), "postgres"));
        assert!(!any.allows(&user(Some(&["app"])), "postgres"));
    }
}
