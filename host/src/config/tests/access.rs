//! Rules about the databases clients may open.

use super::{BASE, fails_at, parse};
use crate::config::{DatabaseAccess, Reason};

#[test]
fn databases_lists_are_checked() {
    let config = parse(&BASE.replace(
        "protocol = \"postgres\"\n\n[cluster.main.pool.primary]",
        "protocol = \"postgres\"\ndatabases = [\"app\", \"reports\"]\n\n[cluster.main.pool.primary]",
    ))
    .expect("a cluster list");
    let access = DatabaseAccess::of(config.cluster("main").expect("main"));
    let app = config.user("app").expect("app");
    assert!(access.allows(app, "app"));
    // The user's own list narrows the cluster's.
    assert!(!access.allows(app, "reports"));
    assert!(!access.allows(app, "postgres"));

    fails_at(
        &BASE.replace(
            "protocol = \"postgres\"\n\n[cluster.main.pool.primary]",
            "protocol = \"postgres\"\ndatabases = []\n\n[cluster.main.pool.primary]",
        ),
        "cluster.main.databases",
        |r| matches!(r, Reason::Format { .. }),
    );
    fails_at(
        &BASE.replace(
            "protocol = \"postgres\"\n\n[cluster.main.pool.primary]",
            "protocol = \"postgres\"\ndatabase = \"app\"\ndatabases = [\"reports\"]\n\n[cluster.main.pool.primary]",
        ),
        "cluster.main.database",
        |r| r.to_string().contains("not in `databases`"),
    );
    fails_at(
        &BASE.replace("databases = [\"app\"]", "databases = [\"app\", \"\"]"),
        "user[0].databases[1]",
        |r| matches!(r, Reason::Empty),
    );
}

#[test]
fn a_postgres_cluster_must_name_a_database_someone_may_open() {
    let unnamed = BASE.replace("databases = [\"app\"]\n", "");
    fails_at(&unnamed, "cluster.main.databases", |r| {
        matches!(r, Reason::Required { .. })
    });
    parse(&unnamed.replace(
        "protocol = \"postgres\"\n\n[cluster.main.pool.primary]",
        "protocol = \"postgres\"\ndatabase = \"app\"\n\n[cluster.main.pool.primary]",
    ))
    .expect("the cluster names its database");
    parse(&unnamed.replace(
        "protocol = \"postgres\"\n\n[cluster.main.pool.primary]",
        "protocol = \"postgres\"\ndatabases = [\"*\"]\n\n[cluster.main.pool.primary]",
    ))
    .expect("any database, explicitly");
    // A user whose `clusters` leaves this cluster out does not count.
    fails_at(
        &format!(
            "{unnamed}\n[cluster.other]\nprotocol = \"clickhouse-http\"\n[cluster.other.pool.p]\n\
             role = \"primary\"\nnodes = [\"h\"]\n[[user]]\nname = \"ch\"\npassword = \"p\"\n\
             clusters = [\"other\"]\ndatabases = [\"default\"]\n"
        ),
        "cluster.main.databases",
        |r| matches!(r, Reason::Required { .. }),
    );
}
