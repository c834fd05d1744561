//! Classification never panics and never overflows the stack, whatever the input.

use super::{clickhouse, mysql, postgres};
use crate::classify::{classify, fingerprint};
use crate::model::{Protocol, StatementKind};

const PROTOCOLS: [Protocol; 3] = [
    Protocol::Postgres,
    Protocol::ClickhouseHttp,
    Protocol::Mysql,
];

/// A 2 MiB stack, the size of a tokio worker thread's.
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .expect("spawn test thread")
        .join()
        .expect("classification panicked or overflowed");
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(0x5eed_1234_abcd_0001);
    for _ in 0..1500 {
        let len = rng.below(120);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let text = String::from_utf8_lossy(&bytes);
        for protocol in PROTOCOLS {
            let _ = classify(protocol, &text);
        }
    }
}

#[test]
fn random_token_soup_never_panics() {
    const VOCAB: &[&str] = &[
        "SELECT",
        "FROM",
        "WHERE",
        "INSERT",
        "INTO",
        "VALUES",
        "UPDATE",
        "SET",
        "DELETE",
        "WITH",
        "AS",
        "(",
        ")",
        ",",
        ";",
        "'",
        "\"",
        "`",
        "$$",
        "$1",
        "$a$",
        "--",
        "/*",
        "*/",
        "#",
        "?",
        "{x:UInt8}",
        "{",
        "}",
        "t",
        "\"T\"",
        "1",
        "1.5e",
        "0x",
        "E'",
        "\\",
        "FORMAT",
        "CSV",
        "JOIN",
        "ON",
        "IN",
        "FOR",
        "UPDATE",
        "LIMIT",
        "EXPLAIN",
        "ANALYZE",
        "COPY",
        "STDIN",
        "BEGIN",
        "SYSTEM",
        "OPTIMIZE",
        "TABLE",
        "nextval(",
        "now()",
        ".",
        "::",
        "[",
        "]",
        "é",
        "\n",
        "@",
        "@@",
        "*",
        "=",
        "-",
        "+",
        "OR",
        "AND",
        "CASE",
        "WHEN",
        "END",
        "EXISTS",
    ];
    let mut rng = XorShift(0xdead_beef_0bad_f00d);
    for _ in 0..1500 {
        let len = rng.below(40);
        let text: Vec<&str> = (0..len).map(|_| VOCAB[rng.below(VOCAB.len())]).collect();
        let text = text.join(if rng.below(2) == 0 { " " } else { "" });
        for protocol in PROTOCOLS {
            let _ = classify(protocol, &text);
        }
    }
}

#[test]
fn truncated_statements_never_panic() {
    let dialects: [(Protocol, Vec<&str>); 3] = [
        (Protocol::Postgres, postgres::sql().collect()),
        (Protocol::ClickhouseHttp, clickhouse::sql().collect()),
        (Protocol::Mysql, mysql::sql().collect()),
    ];
    for (protocol, statements) in dialects {
        for sql in statements {
            for (end, _) in sql.char_indices() {
                let _ = classify(protocol, &sql[..end]);
            }
        }
    }
}

#[test]
fn unterminated_quotes_and_comments_never_panic() {
    let texts = [
        "SELECT 'abc",
        "SELECT \"abc",
        "SELECT `abc",
        "SELECT $tag$ abc",
        "SELECT $$",
        "SELECT /*",
        "SELECT /* /* */",
        "SELECT E'\\",
        "SELECT 'a\\",
        "SELECT {x:",
        "SELECT 1e",
        "SELECT 0x",
        "INSERT INTO t FORMAT",
        "INSERT INTO",
        "INSERT",
        "--",
        "#",
        "/",
        "$",
        "'",
        "",
        "   ",
        ";;;",
        "/* only a comment */",
        "SELECT $1$2$",
        "COPY",
        "EXPLAIN",
        "WITH",
        "DELETE FROM",
    ];
    for protocol in PROTOCOLS {
        for text in texts {
            let got = classify(protocol, text);
            assert_eq!(got.fingerprint, fingerprint(protocol, text));
        }
    }
}

fn deep_inputs(n: usize) -> Vec<(&'static str, String)> {
    vec![
        (
            "parens",
            format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n)),
        ),
        (
            "subqueries",
            format!("SELECT {}1{}", "(SELECT ".repeat(n), ")".repeat(n)),
        ),
        ("unclosed", format!("SELECT {}", "(".repeat(n))),
        ("not", format!("SELECT {} true", "NOT ".repeat(n))),
        ("minus", format!("SELECT {}1", "-".repeat(n))),
        (
            "case",
            format!(
                "SELECT {}1{}",
                "CASE WHEN true THEN ".repeat(n),
                " END".repeat(n)
            ),
        ),
        ("plus", format!("SELECT 1{}", "+1".repeat(n))),
        (
            "or",
            format!("SELECT * FROM t WHERE {}", vec!["a = 1"; n].join(" OR ")),
        ),
        ("subscript", format!("SELECT a{}", "[1]".repeat(n))),
        ("cast", format!("SELECT 1{}", "::int".repeat(n))),
        ("union", format!("SELECT 1{}", " UNION SELECT 1".repeat(n))),
        ("is null", format!("SELECT a{}", " IS NULL".repeat(n))),
    ]
}

#[test]
fn deep_nesting_is_unknown_not_a_stack_overflow() {
    on_small_stack(|| {
        for (name, sql) in deep_inputs(30_000) {
            for protocol in PROTOCOLS {
                let got = classify(protocol, &sql);
                // A ClickHouse SELECT is a read even unparsed; elsewhere it must stay unknown.
                if protocol != Protocol::ClickhouseHttp {
                    assert_eq!(got.kind, StatementKind::Unknown, "{name} {protocol:?}");
                }
            }
        }
    });
}

#[test]
fn big_but_shallow_statements_still_classify() {
    on_small_stack(|| {
        let rows = vec!["(1, 'a', now())"; 10_000].join(", ");
        let insert = format!("INSERT INTO t (a, b, c) VALUES {rows}");
        let got = classify(Protocol::Postgres, &insert);
        assert_eq!(got.kind, StatementKind::Write);
        assert_eq!(*got.tables_written, ["t".to_owned()]);

        let ids: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
        let select = format!("SELECT * FROM t WHERE id IN ({})", ids.join(","));
        let got = classify(Protocol::Mysql, &select);
        assert_eq!(got.kind, StatementKind::Read);
        assert_eq!(*got.tables_read, ["t".to_owned()]);
        let short = classify(Protocol::Mysql, "SELECT * FROM t WHERE id IN (1)");
        assert_eq!(got.fingerprint, short.fingerprint);

        // Too deep for sqlparser, but the keyword fallback still sees a write to t.
        let chained = format!("INSERT INTO t SELECT 1{}", "+1".repeat(20_000));
        let got = classify(Protocol::Postgres, &chained);
        assert_eq!(got.kind, StatementKind::Write);
        assert_eq!(*got.tables_written, ["t".to_owned()]);

        let ctes = vec!["a AS (SELECT 1)"; 2_000].join(", ");
        let got = classify(
            Protocol::Postgres,
            &format!("WITH {ctes} SELECT * FROM a, b"),
        );
        assert_eq!(got.kind, StatementKind::Read);
        assert_eq!(*got.tables_read, ["b".to_owned()]);
    });
}
