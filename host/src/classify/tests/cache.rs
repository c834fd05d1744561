use std::sync::Arc;

use crate::classify::{Classifier, MAX_CACHED_SQL, classify};
use crate::model::{Protocol, StatementKind};

#[test]
fn cached_answer_equals_direct_answer() {
    let classifier = Classifier::new(64);
    for sql in [
        "SELECT * FROM t",
        "DELETE FROM t WHERE id = 1",
        "BEGIN",
        "garbage (((",
    ] {
        for _ in 0..3 {
            assert_eq!(
                classifier.classify(Protocol::Postgres, sql),
                classify(Protocol::Postgres, sql)
            );
        }
    }
}

#[test]
fn protocol_is_part_of_the_key() {
    let classifier = Classifier::new(64);
    let sql = "SELECT * FROM Events";
    let pg = classifier.classify(Protocol::Postgres, sql);
    let ch = classifier.classify(Protocol::ClickhouseHttp, sql);
    assert_eq!(*pg.tables_read, ["events".to_owned()]);
    assert_eq!(*ch.tables_read, ["Events".to_owned()]);
    assert_eq!(classifier.classify(Protocol::Postgres, sql), pg);
}

#[test]
fn capacity_rounds_up_and_zero_disables() {
    assert_eq!(Classifier::new(100).capacity(), 128);
    let off = Classifier::new(0);
    assert_eq!(off.capacity(), 0);
    assert_eq!(
        off.classify(Protocol::Mysql, "SELECT 1").kind,
        StatementKind::Read
    );
}

#[test]
fn long_texts_bypass_the_cache_but_classify() {
    let classifier = Classifier::new(4);
    let sql = format!("SELECT * FROM t WHERE a = '{}'", "x".repeat(MAX_CACHED_SQL));
    assert_eq!(
        classifier.classify(Protocol::Postgres, &sql).kind,
        StatementKind::Read
    );
}

#[test]
fn concurrent_use_with_evictions_stays_correct() {
    // 4 slots for 40 texts: every thread keeps evicting the others' entries.
    let classifier = Arc::new(Classifier::new(4));
    let texts: Arc<Vec<String>> = Arc::new(
        (0..40)
            .map(|i| match i % 3 {
                0 => format!("SELECT * FROM t{i} WHERE id = {i}"),
                1 => format!("UPDATE t{i} SET a = {i} WHERE id = 1"),
                _ => format!("INSERT INTO t{i} VALUES ({i})"),
            })
            .collect(),
    );
    let expected: Arc<Vec<_>> = Arc::new(
        texts
            .iter()
            .map(|t| classify(Protocol::Postgres, t))
            .collect(),
    );
    let threads: Vec<_> = (0..4)
        .map(|n| {
            let (classifier, texts, expected) =
                (classifier.clone(), texts.clone(), expected.clone());
            std::thread::spawn(move || {
                for round in 0..50 {
                    let i = (round * 7 + n * 13) % texts.len();
                    assert_eq!(
                        classifier.classify(Protocol::Postgres, &texts[i]),
                        expected[i]
                    );
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("worker panicked");
    }
}

#[test]
fn texts_of_one_shape_share_a_classification_and_equal_a_fresh_parse() {
    let classifier = Classifier::new(64);
    for aid in [1, 42, 99_999, 7] {
        let sql = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};");
        assert_eq!(
            classifier.classify(Protocol::Postgres, &sql),
            classify(Protocol::Postgres, &sql)
        );
    }
    // Same tokens but a different structure is a different shape.
    let write = "UPDATE pgbench_accounts SET abalance = 1 WHERE aid = 1";
    let read = "SELECT abalance FROM pgbench_accounts WHERE aid = 1";
    assert_eq!(
        classifier.classify(Protocol::Postgres, read).kind,
        StatementKind::Read
    );
    assert_eq!(
        classifier.classify(Protocol::Postgres, write).kind,
        StatementKind::Write
    );
    // IN lists of any length are one shape, and still classified right.
    let a = classifier.classify(Protocol::Postgres, "DELETE FROM t WHERE id IN (1, 2, 3)");
    let b = classifier.classify(Protocol::Postgres, "DELETE FROM t WHERE id IN (4)");
    assert_eq!(a, b);
    assert_eq!(a.kind, StatementKind::Write);
}

#[test]
fn texts_with_inline_literals_take_a_slot_only_when_they_repeat() {
    let classifier = Classifier::new(1024);
    let pg = Protocol::Postgres;
    // The first text of a shape is parsed and remembered exactly.
    let first = "SELECT abalance FROM pgbench_accounts WHERE aid = 1";
    classifier.classify(pg, first);
    assert!(classifier.remembers(pg, first));
    // Later texts of that shape with other literals come from the shape level and are not
    // stored one by one: they would never be asked for again.
    let later = "SELECT abalance FROM pgbench_accounts WHERE aid = 2";
    assert_eq!(classifier.classify(pg, later), classify(pg, later));
    assert!(!classifier.remembers(pg, later));
    // ... until the same text comes again: a hot key is remembered on its second sighting.
    assert_eq!(classifier.classify(pg, later), classify(pg, later));
    assert!(classifier.remembers(pg, later));
    let listed = "DELETE FROM t WHERE id IN (1, 2)";
    classifier.classify(pg, listed);
    let longer = "DELETE FROM t WHERE id IN (3, 4, 5)";
    assert_eq!(classifier.classify(pg, longer), classify(pg, longer));
    assert!(!classifier.remembers(pg, longer));
    // A parameterised text repeats exactly, so it is remembered even when its shape was known.
    classifier.classify(pg, "SELECT abalance FROM pgbench_accounts WHERE aid = $1");
    let respelled = "select abalance from pgbench_accounts where aid = $1";
    assert_eq!(classifier.classify(pg, respelled), classify(pg, respelled));
    assert!(classifier.remembers(pg, respelled));
}
