//! The document between TOML parsing and typed deserialization. It keeps the byte span of every
//! key and value, which lets us rewrite values in place (`${ENV}` expansion, pool defaults)
//! and still point every later error at the right key path, line and column.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::env::{self, EnvLookup};
use super::error::{ConfigError, KeyPath, Location, Reason, Segment};

pub(crate) type Doc<'i> = Spanned<DeTable<'i>>;

/// Parses TOML text, keeping toml's line and column for syntax errors.
pub(crate) fn parse(source: &str) -> Result<Doc<'_>, ConfigError> {
    DeTable::parse(source).map_err(|err| ConfigError::Syntax {
        message: one_line(err.message()),
        location: err
            .span()
            .map(|span| Box::new(Location::of_offset(source, span.start))),
    })
}

/// Turns a deserialization error into a key error, finding the key from the error's span.
pub(crate) fn deserialize_error(doc: &Doc<'_>, source: &str, err: toml::de::Error) -> ConfigError {
    let (path, location) = match err.span() {
        Some(span) => (
            path_at(doc, &span),
            Some(Box::new(Location::of_offset(source, span.start))),
        ),
        None => (KeyPath::root(), None),
    };
    ConfigError::Key {
        path,
        reason: Reason::Parse(one_line(err.message())),
        location,
    }
}

/// Adds the line and column of the key an error names, when the key is in the text.
pub(crate) fn locate(doc: &Doc<'_>, source: &str, mut err: ConfigError) -> ConfigError {
    if let Some(span) = err.path().and_then(|path| span_of(doc, path)) {
        err.set_location(Location::of_offset(source, span.start));
    }
    err
}

fn one_line(message: &str) -> String {
    message.trim().replace('\n', "; ")
}

// === ${ENV} expansion ===

/// Expands `${NAME}` placeholders in every string value of the document.
pub(crate) fn expand_env(
    doc: &mut Doc<'_>,
    env: EnvLookup<'_>,
    source: &str,
) -> Result<(), ConfigError> {
    expand_table(doc.get_mut(), &KeyPath::root(), env).map_err(|(path, span, reason)| {
        ConfigError::Key {
            path,
            reason,
            location: Some(Box::new(Location::of_offset(source, span.start))),
        }
    })
}

type ExpandError = (KeyPath, Range<usize>, Reason);

fn expand_table(
    table: &mut DeTable<'_>,
    path: &KeyPath,
    env: EnvLookup<'_>,
) -> Result<(), ExpandError> {
    for (key, value) in table.iter_mut() {
        expand_value(value, &path.key(key.get_ref().as_ref()), env)?;
    }
    Ok(())
}

fn expand_value(
    value: &mut Spanned<DeValue<'_>>,
    path: &KeyPath,
    env: EnvLookup<'_>,
) -> Result<(), ExpandError> {
    let span = value.span();
    match value.get_mut() {
        DeValue::String(s) => {
            let expanded = env::expand(s, env).map_err(|reason| (path.clone(), span, reason))?;
            if let std::borrow::Cow::Owned(expanded) = expanded {
                *s = std::borrow::Cow::Owned(expanded);
            }
        }
        DeValue::Table(table) => expand_table(table, path, env)?,
        DeValue::Array(array) => {
            for (i, item) in array.iter_mut().enumerate() {
                expand_value(item, &path.index(i), env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

// === [cluster.<name>.defaults] ===

/// Merges each cluster's `defaults` table into each of its pools (keys a pool sets win; nested
/// tables such as `health` merge key by key), then removes `defaults`.
pub(crate) fn inherit_pool_defaults(doc: &mut Doc<'_>, source: &str) -> Result<(), ConfigError> {
    let Some(DeValue::Table(clusters)) = doc.get_mut().get_mut("cluster").map(Spanned::get_mut)
    else {
        return Ok(());
    };
    for (name, cluster) in clusters.iter_mut() {
        let DeValue::Table(cluster) = cluster.get_mut() else {
            continue;
        };
        let Some(defaults) = cluster.remove("defaults") else {
            continue;
        };
        let span = defaults.span();
        let DeValue::Table(defaults) = defaults.into_inner() else {
            return Err(ConfigError::Key {
                path: KeyPath::root()
                    .key("cluster")
                    .key(name.get_ref().as_ref())
                    .key("defaults"),
                reason: Reason::Parse("must be a table of pool settings".to_string()),
                location: Some(Box::new(Location::of_offset(source, span.start))),
            });
        };
        let Some(DeValue::Table(pools)) = cluster.get_mut("pool").map(Spanned::get_mut) else {
            continue;
        };
        for (_, pool) in pools.iter_mut() {
            if let DeValue::Table(pool) = pool.get_mut() {
                merge(pool, &defaults);
            }
        }
    }
    Ok(())
}

fn merge<'i>(target: &mut DeTable<'i>, defaults: &DeTable<'i>) {
    for (key, value) in defaults.iter() {
        match target.get_mut(key.get_ref().as_ref()).map(Spanned::get_mut) {
            None => {
                target.insert(key.clone(), value.clone());
            }
            Some(DeValue::Table(inner)) => {
                if let DeValue::Table(default_inner) = value.get_ref() {
                    merge(inner, default_inner);
                }
            }
            Some(_) => {}
        }
    }
}

// === spans ↔ key paths ===

/// The innermost key whose key or value span contains `span`.
pub(crate) fn path_at(doc: &Doc<'_>, span: &Range<usize>) -> KeyPath {
    let mut best: Option<(usize, KeyPath)> = None;
    visit_table(doc.get_ref(), &KeyPath::root(), &mut |path, candidate| {
        let contains = candidate.start <= span.start && span.end <= candidate.end;
        let len = candidate.end - candidate.start;
        if contains && best.as_ref().is_none_or(|(best_len, _)| len <= *best_len) {
            best = Some((len, path.clone()));
        }
    });
    best.map(|(_, path)| path).unwrap_or_default()
}

fn visit_table(table: &DeTable<'_>, path: &KeyPath, f: &mut dyn FnMut(&KeyPath, Range<usize>)) {
    for (key, value) in table.iter() {
        let child = path.key(key.get_ref().as_ref());
        f(&child, key.span());
        visit_value(value, child, f);
    }
}

fn visit_value(
    value: &Spanned<DeValue<'_>>,
    path: KeyPath,
    f: &mut dyn FnMut(&KeyPath, Range<usize>),
) {
    f(&path, value.span());
    match value.get_ref() {
        DeValue::Table(table) => visit_table(table, &path, f),
        DeValue::Array(array) => {
            for (i, item) in array.iter().enumerate() {
                visit_value(item, path.index(i), f);
            }
        }
        _ => {}
    }
}

/// The span of the deepest part of `path` present in the document: the key itself when it is
/// there, else its nearest ancestor (a rule about a missing key points at its table).
pub(crate) fn span_of(doc: &Doc<'_>, path: &KeyPath) -> Option<Range<usize>> {
    let mut found = None;
    // `None` stands for the document root.
    let mut current: Option<&DeValue<'_>> = None;
    for segment in path.segments() {
        let next = match (segment, current) {
            (Segment::Key(key), None) => doc.get_ref().get_key_value(key.as_str()),
            (Segment::Key(key), Some(DeValue::Table(table))) => table.get_key_value(key.as_str()),
            (Segment::Index(i), Some(DeValue::Array(array))) => match array.get(*i) {
                Some(item) => {
                    found = Some(item.span());
                    current = Some(item.get_ref());
                    continue;
                }
                None => None,
            },
            _ => None,
        };
        let Some((key, value)) = next else {
            break;
        };
        found = Some(key.span());
        current = Some(value.get_ref());
    }
    found
}
