use crate::cache::CacheKey;
use crate::model::Protocol;

fn base() -> crate::cache::CacheKeyBuilder {
    CacheKey::builder(Protocol::ClickhouseHttp, "db", "alice").sql("SELECT 1")
}

#[test]
fn equal_inputs_give_equal_keys_and_hex_display() {
    let a = base().setting("format", "JSON").build();
    let b = base().setting("format", "JSON").build();
    assert_eq!(a, b);
    let hex = a.to_string();
    assert_eq!(hex.len(), 32);
    assert!(
        hex.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    );
    assert_eq!(u128::from_str_radix(&hex, 16).unwrap(), a.digest());
}

#[test]
fn settings_order_does_not_matter_but_values_do() {
    let a = base().setting("a", "1").setting("b", "2").build();
    let b = base().setting("b", "2").setting("a", "1").build();
    let c = base().setting("a", "1").setting("b", "3").build();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_ne!(a, base().build());
}

#[test]
fn every_field_is_part_of_the_key() {
    let k = base().build();
    assert_ne!(k, base().sql("SELECT 2").build());
    assert_ne!(
        k,
        CacheKey::builder(Protocol::Postgres, "db", "alice")
            .sql("SELECT 1")
            .build()
    );
    assert_ne!(
        k,
        CacheKey::builder(Protocol::ClickhouseHttp, "db2", "alice")
            .sql("SELECT 1")
            .build()
    );
    assert_ne!(
        k,
        CacheKey::builder(Protocol::ClickhouseHttp, "db", "bob")
            .sql("SELECT 1")
            .build()
    );
    assert_ne!(k, base().namespace(Some("reports")).build());
}

#[test]
fn field_boundaries_are_unambiguous() {
    let a = CacheKey::builder(Protocol::Postgres, "ab", "u")
        .sql("c")
        .build();
    let b = CacheKey::builder(Protocol::Postgres, "a", "u")
        .sql("bc")
        .build();
    assert_ne!(a, b);
    let a = base().setting("ab", "c").build();
    let b = base().setting("a", "bc").build();
    assert_ne!(a, b);
}

#[test]
fn shared_drops_the_user_and_is_not_the_empty_user() {
    let alice = base().shared(true).build();
    let bob = CacheKey::builder(Protocol::ClickhouseHttp, "db", "bob")
        .sql("SELECT 1")
        .shared(true)
        .build();
    assert_eq!(alice, bob);
    let empty_user = CacheKey::builder(Protocol::ClickhouseHttp, "db", "")
        .sql("SELECT 1")
        .build();
    assert_ne!(alice, empty_user);
    assert_ne!(alice, base().build());
}

#[test]
fn tables_are_sorted_deduplicated_and_not_hashed() {
    let k = base()
        .table("db", "b")
        .table("db", "a")
        .table("db", "b")
        .build();
    let names: Vec<_> = k.tables().iter().map(|t| t.table.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(k, base().build());
}

/// The encoding is what entries in a shared Redis are found by: it must not drift (digests
/// computed independently from the documented layout, with Python's hashlib).
#[test]
fn the_encoding_is_stable() {
    let simple = CacheKey::builder(Protocol::Postgres, "db", "alice")
        .sql("SELECT 1")
        .setting("set:application_name", "SET application_name = 'x'")
        .setting("protocol", "simple")
        .build();
    assert_eq!(simple.to_string(), "29caf5f95704318d88857a665cff676d");
    let extended = CacheKey::builder(Protocol::Postgres, "db", "alice")
        .shared(true)
        .namespace(Some("reports"))
        .sql("SELECT $1")
        .setting("protocol", "extended")
        .setting("bind", "00ff10")
        .build();
    assert_eq!(extended.to_string(), "f1b22b06045e8553249a8bd0fdd84606");
    let mut encoder = crate::cache::KeyEncoder::new(
        Protocol::Postgres,
        "db",
        "alice",
        true,
        Some("reports"),
        "SELECT $1",
        2,
    );
    encoder.setting_hex("bind", &[0x00, 0xff, 0x10]);
    encoder.setting(&["proto", "col"], b"extended");
    let key = encoder.finish(Some("reports"), Vec::new().into());
    assert_eq!(key, extended);
    assert_eq!(key.namespace(), Some("reports"));
}
