//! Comparing a decision with a case's expectation, field by field.

use std::collections::BTreeMap;
use std::fmt;

use super::file::{Expect, ExpectedAction, ExpectedCache};
use crate::model::{Action, CacheDirective, Decision, Route};

/// One field that differs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub field: &'static str,
    pub expected: String,
    pub actual: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: expected {}\n{:width$}  got      {}",
            self.field,
            self.expected,
            "",
            self.actual,
            width = self.field.len()
        )
    }
}

pub(crate) fn parse_route(text: &str) -> Result<Route, String> {
    match text {
        "default" => Ok(Route::Default),
        "primary" => Ok(Route::Primary),
        "replica" => Ok(Route::Replica),
        _ => match text.strip_prefix("pool:") {
            Some(name) if !name.is_empty() => Ok(Route::Pool(name.to_owned())),
            _ => Err(format!(
                "route `{text}`: expected default, primary, replica or pool:<name>"
            )),
        },
    }
}

pub fn show_route(route: &Route) -> String {
    match route {
        Route::Default => "default".to_owned(),
        Route::Primary => "primary".to_owned(),
        Route::Replica => "replica".to_owned(),
        Route::Pool(name) => format!("pool:{name}"),
    }
}

pub fn show_action(action: &Action) -> String {
    match action {
        Action::Forward => "forward".to_owned(),
        Action::Block(reason) => format!("block {reason:?}"),
        Action::Rewrite(sql) => format!("rewrite {sql:?}"),
    }
}

fn show_cache(cache: Option<&CacheDirective>) -> String {
    match cache {
        None => "no cache".to_owned(),
        Some(c) => format!(
            "ttl_ms {} namespace {} shared {}",
            c.ttl_ms,
            c.namespace
                .as_deref()
                .map_or("none".to_owned(), |n| format!("{n:?}")),
            c.shared
        ),
    }
}

fn show_opt(value: Option<&String>) -> String {
    value.map_or("none".to_owned(), |v| format!("{v:?}"))
}

fn show_tags(tags: &[(String, String)]) -> String {
    if tags.is_empty() {
        return "{}".to_owned();
    }
    let inner: Vec<String> = tags.iter().map(|(k, v)| format!("{k} = {v:?}")).collect();
    format!("{{ {} }}", inner.join(", "))
}

/// Every way `actual` differs from `expect`.
pub fn compare(expect: &Expect, actual: &Decision) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let mut check = |field: &'static str, ok: bool, expected: String, actual: String| {
        if !ok {
            out.push(Mismatch {
                field,
                expected,
                actual,
            });
        }
    };

    let action_ok = match (&expect.action, &actual.action) {
        (ExpectedAction::Forward, Action::Forward) => true,
        (ExpectedAction::Block, Action::Block(r)) => expect.reason.as_ref().is_none_or(|e| e == r),
        (ExpectedAction::Rewrite, Action::Rewrite(s)) => expect.sql.as_ref().is_none_or(|e| e == s),
        _ => false,
    };
    let expected_action = match expect.action {
        ExpectedAction::Forward => "forward".to_owned(),
        ExpectedAction::Block => expect
            .reason
            .as_ref()
            .map_or("block".to_owned(), |r| format!("block {r:?}")),
        ExpectedAction::Rewrite => expect
            .sql
            .as_ref()
            .map_or("rewrite".to_owned(), |s| format!("rewrite {s:?}")),
    };
    check(
        "action",
        action_ok,
        expected_action,
        show_action(&actual.action),
    );

    if let Some(route) = &expect.route {
        // Validated when the file was loaded; an invalid one here can only mismatch.
        let ok = parse_route(route).is_ok_and(|r| r == actual.route);
        check("route", ok, route.clone(), show_route(&actual.route));
    }
    if let Some(cache) = &expect.cache {
        let want: Option<CacheDirective> =
            cache.as_option().map(|c: &ExpectedCache| CacheDirective {
                ttl_ms: c.ttl_ms,
                namespace: c.namespace.clone(),
                shared: c.shared,
            });
        check(
            "cache",
            want.as_ref() == actual.cache.as_ref(),
            show_cache(want.as_ref()),
            show_cache(actual.cache.as_ref()),
        );
    }
    if let Some(key) = &expect.affinity_key {
        let want = key.as_option();
        check(
            "affinity_key",
            want == actual.affinity_key.as_ref(),
            show_opt(want),
            show_opt(actual.affinity_key.as_ref()),
        );
    }
    if let Some(tags) = &expect.tags {
        let want: Vec<(String, String)> =
            tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut got = actual.tags.clone();
        got.sort();
        // A duplicated key in the decision never equals a TOML table (keys are unique there).
        let unique: BTreeMap<_, _> = got.iter().cloned().collect();
        let ok = unique.len() == got.len() && want == got;
        check("tags", ok, show_tags(&want), show_tags(&actual.tags));
    }
    if let Some(mirror) = &expect.mirror {
        let want = mirror.as_option();
        check(
            "mirror",
            want == actual.mirror.as_ref(),
            show_opt(want),
            show_opt(actual.mirror.as_ref()),
        );
    }
    out
}
