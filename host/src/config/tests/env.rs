//! `${NAME}`, `${NAME:-default}` and `$$` in string values.

use super::{BASE, fails_at, parse, parse_env, with};
use crate::config::Reason;
use crate::config::env::expand;

fn expand_with(input: &str, vars: &[(&str, &str)]) -> Result<String, Reason> {
    let lookup = |name: &str| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    };
    expand(input, &lookup).map(|s| s.into_owned())
}

#[test]
fn placeholders_expand() {
    let vars = [("USER", "alice"), ("EMPTY", ""), ("PORT", "5432")];
    let cases = [
        ("plain", "plain"),
        ("${USER}", "alice"),
        ("u=${USER}:${PORT}!", "u=alice:5432!"),
        ("${MISSING:-fallback}", "fallback"),
        ("${EMPTY:-fallback}", "fallback"),
        ("${EMPTY}", ""),
        ("${USER:-fallback}", "alice"),
        ("${MISSING:-}", ""),
        ("$$", "$"),
        ("$${USER}", "${USER}"),
        ("a$b $ c$", "a$b $ c$"),
        (
            "SCRAM-SHA-256$4096:abc$def:ghi",
            "SCRAM-SHA-256$4096:abc$def:ghi",
        ),
    ];
    for (input, want) in cases {
        assert_eq!(expand_with(input, &vars).as_deref(), Ok(want), "{input}");
    }
}

#[test]
fn expanded_values_are_not_expanded_again() {
    let vars = [("A", "${B}"), ("B", "nope")];
    assert_eq!(expand_with("${A}", &vars).as_deref(), Ok("${B}"));
}

#[test]
fn bad_placeholders_are_errors() {
    assert!(matches!(
        expand_with("${USER", &[]),
        Err(Reason::BadPlaceholder { .. })
    ));
    assert!(matches!(
        expand_with("${}", &[]),
        Err(Reason::BadPlaceholder { .. })
    ));
    assert!(matches!(
        expand_with("${1X}", &[]),
        Err(Reason::BadPlaceholder { .. })
    ));
    assert!(matches!(
        expand_with("${A B}", &[]),
        Err(Reason::BadPlaceholder { .. })
    ));
    assert_eq!(
        expand_with("${NOPE}", &[]),
        Err(Reason::MissingEnv {
            var: "NOPE".to_string()
        })
    );
}

#[test]
fn missing_variable_names_the_key_path_and_variable() {
    let text = BASE.replace("password = \"secret\"", "password = \"${APP_PASSWORD}\"");
    let err = parse(&text).expect_err("APP_PASSWORD unset");
    let line = text
        .lines()
        .position(|l| l.contains("${APP_PASSWORD}"))
        .expect("line")
        + 1;
    assert_eq!(
        err.to_string(),
        format!(
            "config error at user[0].password: environment variable `APP_PASSWORD` is not set \
             (write ${{APP_PASSWORD:-default}} to give a default) (line {line}, column 12)"
        )
    );
    let config = parse_env(&text, &[("APP_PASSWORD", "s3cr\"et\nwith newline")]).expect("set");
    assert_eq!(
        config.users[0].password.as_ref().map(|p| p.expose()),
        Some("s3cr\"et\nwith newline"),
        "values with quotes and newlines cannot break the TOML"
    );
}

#[test]
fn expansion_reaches_inline_tables_and_arrays() {
    let text = with(
        "[cache.redis]\nurl = \"redis://${REDIS_HOST:-localhost}:6379\"\n\
         [[user]]\nname = \"b\"\npassword = \"x\"\nallowed_networks = [\"127.0.0.1\", \"${OFFICE_NET}\"]\n\
         backend = { user = \"${BACKEND_USER:-b_ro}\", password = \"${BACKEND_PASSWORD}\" }\n",
    );
    let config = parse_env(
        &text,
        &[("OFFICE_NET", "192.168.0.0/16"), ("BACKEND_PASSWORD", "pw")],
    )
    .expect("valid");
    let user = &config.users[1];
    assert_eq!(user.allowed_networks[1].to_string(), "192.168.0.0/16");
    let backend = user.backend.as_ref().expect("backend");
    assert_eq!(backend.user, "b_ro");
    assert_eq!(backend.password.as_ref().map(|p| p.expose()), Some("pw"));
    assert_eq!(
        config.cache.redis.as_ref().map(|r| r.url.expose()),
        Some("redis://localhost:6379")
    );

    let err = parse_env(&text, &[("BACKEND_PASSWORD", "pw")]).expect_err("OFFICE_NET unset");
    assert_eq!(
        err.path().map(ToString::to_string).as_deref(),
        Some("user[1].allowed_networks[1]")
    );
    let err = parse_env(&text, &[("OFFICE_NET", "10.0.0.0/8")]).expect_err("no password");
    assert_eq!(
        err.path().map(ToString::to_string).as_deref(),
        Some("user[1].backend.password")
    );
}

#[test]
fn expanded_values_are_then_type_checked() {
    let text = with("[policy]\ndeadline = \"${DEADLINE:-5ms}\"\n");
    assert_eq!(
        parse(&text).expect("default").policy.deadline,
        std::time::Duration::from_millis(5)
    );
    let err = parse_env(&text, &[("DEADLINE", "soon")]).expect_err("not a duration");
    assert_eq!(
        err.path().map(ToString::to_string).as_deref(),
        Some("policy.deadline")
    );
    fails_at(&with("[policy]\npath = \"${\"\n"), "policy.path", |r| {
        matches!(r, Reason::BadPlaceholder { .. })
    });
}
