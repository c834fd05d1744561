//! Rules about who may do what: the admin API's tokens and the databases clients may open.

use super::{BASE, fails_at, parse, with};
use crate::config::{DatabaseAccess, Reason};

#[test]
fn admin_tokens_are_non_empty_and_distinct() {
    let config = parse(&with(
        "[admin]\nbind = \"127.0.0.1:9930\"\ntoken = \"adm\"\nread_token = \"rd\"\n",
    ))
    .expect("both tokens");
    let admin = config.admin.expect("[admin]");
    assert_eq!(admin.read_token.as_ref().map(|t| t.expose()), Some("rd"));
    // A read token alone is enough beyond loopback: it protects the reads, and nothing can be
    // changed without the admin token.
    parse(&with(
        "[admin]\nbind = \"0.0.0.0:9930\"\nread_token = \"rd\"\n",
    ))
    .expect("read token beyond loopback");
    fails_at(
        &with("[admin]\nbind = \"127.0.0.1:9930\"\nread_token = \"\"\n"),
        "admin.read_token",
        |r| matches!(r, Reason::Empty),
    );
    fails_at(
        &with("[admin]\nbind = \"127.0.0.1:9930\"\ntoken = \"same\"\nread_token = \"same\"\n"),
        "admin.read_token",
        |r| r.to_string() == "must differ from admin.token",
    );
}

#[test]
fn the_read_token_is_redacted_when_shown() {
    let config = parse(&with(
        "[admin]\nbind = \"127.0.0.1:9930\"\ntoken = \"adm-secret\"\nread_token = \"rd-secret\"\n",
    ))
    .expect("valid");
    let shown = serde_json::to_string(&config).expect("serialize");
    assert!(
        !shown.contains("rd-secret") && !shown.contains("adm-secret"),
        "{shown}"
    );
    assert!(!format!("{config:?}").contains("rd-secret"));
}

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
