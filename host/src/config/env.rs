//! `${NAME}` / `${NAME:-default}` expansion in string values, with `$$` for a literal `$`.
//!
//! Expansion runs on the parsed document, value by value, so a secret containing quotes or
//! newlines cannot break the TOML around it. A lone `$` not followed by `{` or `$` stays as it
//! is, so SCRAM verifiers (`SCRAM-SHA-256$4096:...`) need no escaping.

use std::borrow::Cow;

use super::error::Reason;

/// Looks up an environment variable; tests pass a map instead of the process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment (a variable that is not valid Unicode counts as unset).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Expands the placeholders in `input`.
pub(crate) fn expand<'a>(input: &'a str, env: EnvLookup<'_>) -> Result<Cow<'a, str>, Reason> {
    if !input.contains('$') {
        return Ok(Cow::Borrowed(input));
    }
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let close = body.find('}').ok_or_else(|| Reason::BadPlaceholder {
                detail: "`${` without a closing `}`".to_string(),
            })?;
            out.push_str(&resolve(&body[..close], env)?);
            rest = &body[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

/// The value of one placeholder body: `NAME` or `NAME:-default`.
fn resolve(body: &str, env: EnvLookup<'_>) -> Result<String, Reason> {
    let (name, default) = match body.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (body, None),
    };
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(Reason::BadPlaceholder {
            detail: format!(
                "`${{{body}}}` does not start with a variable name (letters, digits, _)"
            ),
        });
    }
    match (env(name), default) {
        (Some(value), Some(default)) if value.is_empty() => Ok(default.to_string()),
        (Some(value), _) => Ok(value),
        (None, Some(default)) => Ok(default.to_string()),
        (None, None) => Err(Reason::MissingEnv {
            var: name.to_string(),
        }),
    }
}
