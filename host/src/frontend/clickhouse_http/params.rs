//! URL parameters of a ClickHouse HTTP request, sorted into what the proxy consumes, what only
//! shapes the transport, and settings (which change results, so they are part of the cache key).

/// Parameters the proxy consumes and never forwards as given.
const PROXY_ONLY: &[&str] = &[
    "user",
    "password",
    "query",
    "query_id",
    "no_cache",
    "cache_namespace",
    // The proxy compresses responses itself: a readonly=1 backend user may not set it (Code 164).
    "enable_http_compression",
    "http_zlib_compression_level",
];

/// Forwarded, but not part of the result: left out of the cache key.
const TRANSPORT: &[&str] = &[
    "database",
    "session_id",
    "session_timeout",
    "session_check",
    "wait_end_of_query",
    "buffer_size",
    "send_progress_in_http_headers",
    "http_headers_progress_interval_ms",
    "quota_key",
];

/// The request's parameters, in order, decoded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub fn parse(query: Option<&str>) -> Params {
        let pairs = query
            .map(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        Params { pairs }
    }

    /// The last value of `name` (ClickHouse takes the last one too).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn has(&self, name: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == name)
    }

    /// Whether `name` is set to a true value (`1`, `true`).
    pub fn flag(&self, name: &str) -> bool {
        matches!(self.get(name), Some("1" | "true" | "True" | "TRUE"))
    }

    /// Settings: what changes a result (everything not consumed by the proxy or transport-only).
    pub fn settings(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs
            .iter()
            .filter(|(k, _)| !PROXY_ONLY.contains(&k.as_str()) && !TRANSPORT.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// What the policy sees as attributes: every parameter but the password and the query text,
    /// as `param.<name>`.
    pub fn attributes(&self) -> Vec<(String, String)> {
        self.pairs
            .iter()
            .filter(|(k, _)| k != "password" && k != "query")
            .map(|(k, v)| (format!("param.{k}"), v.clone()))
            .collect()
    }

    /// The query string for the backend: every forwarded parameter, then `extra` (which the
    /// proxy sets: `query_id`, `query`, `database`, `wait_end_of_query`), an extra replacing a
    /// client parameter of the same name.
    pub fn backend_query_string(&self, extra: &[(&str, &str)]) -> String {
        let mut out = form_urlencoded::Serializer::new(String::with_capacity(128));
        for (k, v) in &self.pairs {
            if PROXY_ONLY.contains(&k.as_str()) || extra.iter().any(|(name, _)| name == k) {
                continue;
            }
            out.append_pair(k, v);
        }
        for (k, v) in extra {
            out.append_pair(k, v);
        }
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_sorted_into_their_roles() {
        let p = Params::parse(Some(
            "user=bob&password=s%26cret&query=SELECT%201&database=db&max_threads=2\
             &enable_http_compression=1&session_id=s&no_cache=1&default_format=JSON",
        ));
        assert_eq!(p.get("password"), Some("s&cret"));
        assert_eq!(p.get("query"), Some("SELECT 1"));
        assert!(p.flag("no_cache"));
        let settings: Vec<_> = p.settings().collect();
        assert_eq!(settings, [("max_threads", "2"), ("default_format", "JSON")]);
        let attrs = p.attributes();
        assert!(
            attrs
                .iter()
                .all(|(k, _)| k != "param.password" && k != "param.query")
        );
        assert!(attrs.contains(&("param.database".into(), "db".into())));
        assert_eq!(
            p.backend_query_string(&[("query_id", "q1"), ("database", "other")]),
            "max_threads=2&session_id=s&default_format=JSON&query_id=q1&database=other"
        );
    }

    #[test]
    fn the_last_value_wins() {
        let p = Params::parse(Some("a=1&a=2"));
        assert_eq!(p.get("a"), Some("2"));
        assert_eq!(Params::parse(None).get("a"), None);
    }
}
