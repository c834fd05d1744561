use std::path::Path;

use super::*;
use crate::model::{Action, CacheDirective, Route};

fn parse(text: &str) -> Result<CaseFile, CaseError> {
    CaseFile::parse(text, Path::new("cases.toml"))
}

fn one_case(expect: &str) -> Expect {
    let file = parse(&format!(
        "[[case]]\nsql = \"SELECT 1\"\nexpect = {expect}\n"
    ))
    .unwrap();
    file.cases[0].expect.clone()
}

fn decision() -> Decision {
    Decision {
        action: Action::Rewrite("SELECT 1 LIMIT 5".into()),
        route: Route::Pool("shard_a".into()),
        cache: Some(CacheDirective {
            ttl_ms: 1000,
            namespace: None,
            shared: false,
        }),
        affinity_key: Some("acme".into()),
        tags: vec![
            ("tenant".into(), "acme".into()),
            ("guard".into(), "limit".into()),
        ],
        mirror: None,
    }
}

#[test]
fn a_full_file_parses_with_defaults_and_flattened_keys() {
    let file = parse(
        r#"
        [config]
        limit.alice = 100
        "pool.acme" = "shard_a"

        [[case]]
        name = "n"
        sql = "SELECT 1"
        protocol = "clickhouse-http"
        attributes = { startup.application_name = "acme" }
        expect = { action = "forward" }

        [[config_error]]
        config = { x = 1 }
        error = "nope"
        "#,
    )
    .unwrap();
    assert_eq!(
        file.config,
        vec![
            ("limit.alice".to_owned(), "100".to_owned()),
            ("pool.acme".to_owned(), "shard_a".to_owned())
        ]
    );
    let q = query(&file.cases[0]);
    assert_eq!(&*q.user, "postgres");
    assert_eq!(q.protocol, crate::model::Protocol::ClickhouseHttp);
    assert_eq!(
        q.attributes.to_vec(),
        vec![("startup.application_name".to_owned(), "acme".to_owned())]
    );
    assert_eq!(file.config_errors[0].error, "nope");
}

#[test]
fn bad_files_are_refused_with_the_reason() {
    let err = |text: &str| parse(text).unwrap_err().to_string();
    assert!(err("").contains("no [[case]]"));
    assert!(err("[[case]]\nsql = \"x\"\nexpect = { action = \"allow\" }").contains("allow"));
    assert!(err("[[case]]\nsql = \"x\"\nexpekt = {}").contains("expekt"));
    assert!(
        err("[[case]]\nsql = \"x\"\nexpect = { action = \"forward\", route = \"pool:\" }")
            .contains("pool:<name>")
    );
    assert!(
        err("[[case]]\nsql = \"x\"\nexpect = { action = \"forward\", reason = \"r\" }")
            .contains("`reason` only goes with")
    );
    assert!(
        err("[[case]]\nsql = \"x\"\nexpect = { action = \"forward\", affinity_key = true }")
            .contains("`true` is not an expectation")
    );
    // One line, for the CLI's one-line errors.
    assert!(!err("[[case]]\nsql = 1\nexpect = {}").contains('\n'));
}

#[test]
fn a_matching_expectation_has_no_mismatch() {
    let e = one_case(
        r#"{ action = "rewrite", sql = "SELECT 1 LIMIT 5", route = "pool:shard_a", cache = { ttl_ms = 1000 }, affinity_key = "acme", tags = { guard = "limit", tenant = "acme" }, mirror = false }"#,
    );
    assert_eq!(compare(&e, &decision()), vec![]);
    // Fields left out are not checked.
    assert_eq!(
        compare(&one_case(r#"{ action = "rewrite" }"#), &decision()),
        vec![]
    );
}

#[test]
fn every_differing_field_is_reported() {
    let e = one_case(
        r#"{ action = "block", reason = "no", route = "replica", cache = false, affinity_key = false, tags = {}, mirror = "m" }"#,
    );
    let fields: Vec<_> = compare(&e, &decision()).iter().map(|m| m.field).collect();
    assert_eq!(
        fields,
        ["action", "route", "cache", "affinity_key", "tags", "mirror"]
    );
    let m = &compare(
        &one_case(r#"{ action = "rewrite", sql = "SELECT 2" }"#),
        &decision(),
    )[0];
    assert_eq!(m.expected, "rewrite \"SELECT 2\"");
    assert_eq!(m.actual, "rewrite \"SELECT 1 LIMIT 5\"");
}

#[test]
fn duplicate_tags_never_match_a_table() {
    let mut d = decision();
    d.tags = vec![("a".into(), "1".into()), ("a".into(), "1".into())];
    assert_eq!(
        compare(
            &one_case(r#"{ action = "rewrite", tags = { a = "1" } }"#),
            &d
        )
        .len(),
        1
    );
}

#[test]
fn the_report_shows_each_difference_and_a_summary() {
    let report = Report {
        policy: "guard.wasm".into(),
        outcomes: vec![
            Outcome {
                label: "good".into(),
                decision: None,
                mismatches: vec![],
            },
            Outcome {
                label: "bad".into(),
                decision: None,
                mismatches: vec![Mismatch {
                    field: "route",
                    expected: "replica".into(),
                    actual: "primary".into(),
                }],
            },
        ],
    };
    let text = report.render();
    assert!(text.contains("  ok    good\n"), "{text}");
    assert!(
        text.contains(
            "  FAIL  bad\n          route: expected replica\n                 got      primary\n"
        ),
        "{text}"
    );
    assert!(text.ends_with("1 passed, 1 failed\n"), "{text}");
}
