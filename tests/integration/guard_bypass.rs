//! `guard` against a corpus of bypass attempts ([`corpus`]), through the live proxy in front of
//! real servers: every PostgreSQL attempt in the simple and in the extended protocol, every
//! ClickHouse one through the HTTP frontend. Each attempt is refused by guard (42501 / HTTP 403),
//! or is out of a proxy's reach, listed in `policies/README.md` and harmless here because the
//! database-side control the README names is in place. Afterwards the victim is intact.

mod corpus;

use std::fmt::Write as _;

use switchyard_tests::clickhouse::ClickHouse;
use switchyard_tests::http::{enc, post};
use switchyard_tests::pg::{self, PgConfig};
use switchyard_tests::policies::{policy_wasm, repo_root};
use switchyard_tests::postgres::PgCluster;
use switchyard_tests::proxy::{self, Proxy};

use corpus::Expect;

fn guard_policy() -> String {
    format!(
        "[policy]\npath = \"{}\"\nwatch = false\n[policy.config]\n{}\n",
        policy_wasm("guard").display(),
        corpus::GUARD_CONFIG
    )
}

/// Every out-of-reach phrase of the corpus appears in `policies/README.md`.
fn assert_listed_in_readme(phrases: impl Iterator<Item = &'static str>) {
    let readme = std::fs::read_to_string(repo_root().join("policies/README.md"))
        .expect("read policies/README.md");
    for phrase in phrases {
        assert!(
            readme.contains(phrase),
            "policies/README.md does not list `{phrase}` as out of a proxy's reach"
        );
    }
}

fn out_of_reach_phrase(expect: Expect) -> Option<&'static str> {
    match expect {
        Expect::Blocked => None,
        Expect::OutOfReach(phrase) => Some(phrase),
    }
}

/// What became of one attempt in one protocol.
fn pg_outcome<T>(r: Result<T, tokio_postgres::Error>) -> (bool, String) {
    match r {
        Ok(_) => (false, "ran".to_owned()),
        Err(e) => {
            let blocked = pg::sqlstate(&e) == "42501"
                && e.as_db_error()
                    .is_some_and(|db| db.message().starts_with("blocked by policy: guard:"));
            (blocked, pg::describe(&e))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_refuses_every_postgres_bypass_attempt_in_both_protocols() {
    assert_listed_in_readme(
        corpus::PG_ATTEMPTS
            .iter()
            .filter_map(|(_, e)| out_of_reach_phrase(*e)),
    );
    let pg = PgCluster::start(1);
    pg.psql(pg.primary_port(), corpus::PG_SETUP);
    pg.wait_replicated();
    let victim = "SELECT count(*) || '|' || sum(x) FROM victim";
    assert_eq!(pg.psql(pg.primary_port(), victim), corpus::PG_VICTIM);
    let config = PgConfig::new(&pg).extra(&guard_policy()).build();
    let proxy = Proxy::start(&config).await;
    let mut client = pg::connect(proxy.addr()).await;

    let mut failures = String::new();
    let mut blocked = [0usize; 2];
    let mut reached = Vec::new();
    for &(sql, expect) in corpus::PG_ATTEMPTS {
        for (protocol, extended) in [("simple", false), ("extended", true)] {
            if client.is_closed() {
                client = pg::connect(proxy.addr()).await;
            }
            let (was_blocked, what) = if extended {
                pg_outcome(client.execute(sql, &[]).await)
            } else {
                pg_outcome(client.simple_query(sql).await)
            };
            blocked[usize::from(extended)] += usize::from(was_blocked);
            if !was_blocked {
                reached.push(format!("{protocol}: {sql:?} → {what}"));
            }
            if was_blocked != (expect == Expect::Blocked) {
                let _ = writeln!(
                    failures,
                    "{protocol}: {sql:?}: expected {expect:?}, got {what}"
                );
            }
        }
    }
    eprintln!(
        "guard bypass corpus (PostgreSQL): {} attempts; blocked {} in the simple protocol, {} in the extended one; reached the server:\n  {}",
        corpus::PG_ATTEMPTS.len(),
        blocked[0],
        blocked[1],
        reached.join("\n  ")
    );
    assert!(failures.is_empty(), "\n{failures}");

    // Nothing got through: the victim, the denied table and the catalog are as they were.
    assert_eq!(pg.psql(pg.primary_port(), victim), corpus::PG_VICTIM);
    assert_eq!(
        pg.psql(pg.primary_port(), "SELECT k FROM secrets"),
        "s3cr3t"
    );
    assert_eq!(
        pg.psql(
            pg.primary_port(),
            "SELECT (SELECT count(*) FROM pg_proc WHERE proname LIKE 'wipe%') \
             + (SELECT count(*) FROM pg_rules WHERE tablename = 'victim') \
             + (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'victim'::regclass) \
             + (SELECT count(*) FROM pg_event_trigger)"
        ),
        "0",
        "no function, rule or trigger was created"
    );
    proxy.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_refuses_every_clickhouse_bypass_attempt() {
    assert_listed_in_readme(
        corpus::CH_ATTEMPTS
            .iter()
            .filter_map(|(_, _, e)| out_of_reach_phrase(*e)),
    );
    let ch = ClickHouse::start(1);
    for sql in corpus::CH_SETUP {
        ch.node(0).query(sql);
    }
    let victim = "SELECT count(), sum(x) FROM default.victim";
    assert_eq!(ch.node(0).query(victim), corpus::CH_VICTIM);
    let users = "[[user]]\nname = \"alice\"\npassword = \"alice_pw\"\n";
    let proxy = Proxy::start(&proxy::config(
        &ch,
        "",
        "",
        &format!("{users}\n{}", guard_policy()),
    ))
    .await;
    let url = proxy.url_as("alice", "alice_pw");

    let mut failures = String::new();
    let mut blocked = 0;
    let mut reached = Vec::new();
    for &(param, body, expect) in corpus::CH_ATTEMPTS {
        let target = match param {
            Some(query) => format!("{url}&query={}", enc(query)),
            None => url.clone(),
        };
        let reply = post(&target, body).await;
        let text = reply.text();
        let was_blocked = reply.status == 403 && text.contains("guard:");
        blocked += usize::from(was_blocked);
        let what = format!("HTTP {}: {}", reply.status, text.trim_end());
        if !was_blocked {
            reached.push(format!("{param:?} + {body:?} → {what}"));
        }
        if was_blocked != (expect == Expect::Blocked) {
            let _ = writeln!(
                failures,
                "{param:?} + {body:?}: expected {expect:?}, got {what}"
            );
        }
    }
    eprintln!(
        "guard bypass corpus (ClickHouse HTTP): {} attempts; blocked {blocked}; reached the server:\n  {}",
        corpus::CH_ATTEMPTS.len(),
        reached.join("\n  ")
    );
    assert!(failures.is_empty(), "\n{failures}");
    assert_eq!(ch.node(0).query(victim), corpus::CH_VICTIM);
    proxy.stop().await;
}
