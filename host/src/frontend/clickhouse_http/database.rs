//! The database a request runs in, and whether its user may open it (`databases` in the config).
//!
//! ClickHouse takes the `X-ClickHouse-Database` header first, else the first non-empty `database`
//! parameter. The proxy resolves it the same way and names it to the backend as the `database`
//! parameter, so servers that predate the header run the request where a current one would, and
//! the policy and the cache keys see that database. Every database the request names is checked,
//! not only the one that wins, so no spelling of the request gets past the list.

use http::HeaderMap;

use super::error::{ChError, code};
use super::params::Params;
use crate::config::{DatabaseAccess, UserConfig};

const HEADER: &str = "x-clickhouse-database";

/// The databases a request names, in ClickHouse's order of precedence (empty values left out).
pub(super) fn named<'a>(params: &'a Params, headers: &'a HeaderMap) -> Vec<String> {
    let header = headers
        .get_all(HEADER)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let param = params.all("database").map(str::to_owned);
    header.chain(param).filter(|d| !d.is_empty()).collect()
}

/// `Err` when `user` may not open one of `named`: answered as ClickHouse answers a database that
/// does not exist, so the list's contents do not leak.
pub(super) fn check(
    access: &DatabaseAccess,
    user: &UserConfig,
    named: &[String],
) -> Result<(), ChError> {
    match named.iter().find(|d| !access.allows(user, d)) {
        Some(refused) => Err(unknown_database(refused)),
        None => Ok(()),
    }
}

fn unknown_database(name: &str) -> ChError {
    ChError::new(
        http::StatusCode::NOT_FOUND,
        code::UNKNOWN_DATABASE,
        format!("Database {} does not exist", back_quote_if_needed(name)),
    )
}

/// ClickHouse's `backQuoteIfNeed`: plain identifiers as they are, anything else in backquotes.
fn back_quote_if_needed(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        name.to_owned()
    } else {
        format!("`{}`", name.replace('\\', "\\\\").replace('`', "\\`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(database: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(d) = database {
            h.insert(HEADER, d.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn the_header_comes_first_then_every_parameter() {
        let params = Params::parse(Some("database=&database=a&database=b"));
        assert_eq!(named(&params, &headers(Some("h"))), ["h", "a", "b"]);
        assert_eq!(named(&params, &headers(None)), ["a", "b"]);
        assert!(named(&Params::parse(None), &headers(Some(""))).is_empty());
    }

    #[test]
    fn a_refusal_reads_like_an_unknown_database() {
        let mut cluster: crate::config::ClusterConfig = toml::from_str(
            "protocol = \"clickhouse-http\"\n[pool.p]\nrole = \"primary\"\nnodes = [\"h\"]\n",
        )
        .expect("cluster");
        cluster.databases = Some(vec!["default".into()]);
        let access = DatabaseAccess::of(&cluster);
        let user = UserConfig::new("u", Some("pw"));
        assert!(check(&access, &user, &["default".into()]).is_ok());
        let e = check(&access, &user, &["default".into(), "my db".into()]).expect_err("refused");
        assert_eq!(e.status, http::StatusCode::NOT_FOUND);
        assert_eq!(e.code, 81);
        assert_eq!(e.message, "Database `my db` does not exist");
    }
}
