//! Builders for [`Decision`] and [`CacheDirective`].
//!
//! Start from [`Decision::forward()`] (forward, default route, no cache, no tags) and chain:
//! `Decision::forward().to_replica().cache(30_000).tag("rule", "reports")`.

use crate::{Action, CacheDirective, Decision, Query, Route};

impl Default for Decision {
    fn default() -> Self {
        Decision::forward()
    }
}

impl Decision {
    /// Run the statement as sent, on the host's default route, uncached, with no tags.
    pub fn forward() -> Decision {
        Decision {
            action: Action::Forward,
            route: Route::Default,
            cache: None,
            affinity_key: None,
            tags: Vec::new(),
            mirror: None,
        }
    }

    /// Refuse the statement; the client gets `reason` as the error. Drops any cache directive.
    pub fn block(mut self, reason: impl Into<String>) -> Decision {
        self.action = Action::Block(reason.into());
        self.cache = None;
        self
    }
    /// Run `sql` instead (the host classifies it again before routing and caching).
    pub fn rewrite(mut self, sql: impl Into<String>) -> Decision {
        self.action = Action::Rewrite(sql.into());
        self
    }

    /// Set the route.
    pub fn route(mut self, route: Route) -> Decision {
        self.route = route;
        self
    }
    /// Let the host decide (reads outside a transaction to a replica, the rest to the primary).
    pub fn to_default(self) -> Decision {
        self.route(Route::Default)
    }
    /// The cluster's primary pool.
    pub fn to_primary(self) -> Decision {
        self.route(Route::Primary)
    }
    /// The cluster's replica pool (the host falls back to the primary when no replica is up).
    pub fn to_replica(self) -> Decision {
        self.route(Route::Replica)
    }
    /// A named pool of the cluster.
    pub fn to_pool(self, pool: impl Into<String>) -> Decision {
        self.route(Route::Pool(pool.into()))
    }
    /// The read/write split, spelled out: replica for a read outside a transaction, primary for
    /// everything else ([`Query::read_write_route`]).
    pub fn read_write_split(self, q: &Query) -> Decision {
        self.route(q.read_write_route())
    }

    /// Cache the result for `ttl_ms` milliseconds, private to the user, in no namespace.
    pub fn cache(self, ttl_ms: u32) -> Decision {
        self.cache_with(CacheDirective::new(ttl_ms))
    }
    /// Cache with a full directive (`CacheDirective::new(60_000).namespace("reports").shared(true)`).
    pub fn cache_with(mut self, directive: CacheDirective) -> Decision {
        self.cache = Some(directive);
        self
    }
    /// Do not cache.
    pub fn no_cache(mut self) -> Decision {
        self.cache = None;
        self
    }

    /// Attach a key/value to the query's log line and metrics (keep the values few).
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Decision {
        self.tags.push((key.into(), value.into()));
        self
    }
    /// A consistent-hashing key inside the chosen pool (a tenant id, a user, ...).
    pub fn affinity(mut self, key: impl Into<String>) -> Decision {
        self.affinity_key = Some(key.into());
        self
    }
    /// Also send this read to the named pool and discard the answer (shadow traffic).
    pub fn mirror(mut self, pool: impl Into<String>) -> Decision {
        self.mirror = Some(pool.into());
        self
    }

    /// The block reason, if the decision blocks.
    pub fn block_reason(&self) -> Option<&str> {
        match &self.action {
            Action::Block(r) => Some(r),
            _ => None,
        }
    }
    /// The replacement SQL, if the decision rewrites.
    pub fn rewritten_sql(&self) -> Option<&str> {
        match &self.action {
            Action::Rewrite(s) => Some(s),
            _ => None,
        }
    }
    /// True when the decision blocks.
    pub fn is_blocked(&self) -> bool {
        matches!(self.action, Action::Block(_))
    }
    /// The value of the first tag named `key`.
    pub fn tag_value(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl CacheDirective {
    /// Cache for `ttl_ms` milliseconds, private to the user, in no namespace.
    pub fn new(ttl_ms: u32) -> CacheDirective {
        CacheDirective {
            ttl_ms,
            namespace: None,
            shared: false,
        }
    }
    /// Put the entry in a namespace (entries of different namespaces never match; a namespace
    /// can be purged at once).
    pub fn namespace(mut self, namespace: impl Into<String>) -> CacheDirective {
        self.namespace = Some(namespace.into());
        self
    }
    /// Share the entry between all users issuing the same query in the same database and
    /// namespace (`false`, the default: private to the user).
    pub fn shared(mut self, shared: bool) -> CacheDirective {
        self.shared = shared;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StatementKind;

    #[test]
    fn builders() {
        let d = Decision::forward()
            .to_pool("eu")
            .cache_with(CacheDirective::new(500).namespace("n").shared(true))
            .tag("tenant", "acme")
            .affinity("acme")
            .mirror("shadow");
        assert_eq!(d.route, Route::Pool("eu".into()));
        assert_eq!(
            d.cache,
            Some(CacheDirective {
                ttl_ms: 500,
                namespace: Some("n".into()),
                shared: true
            })
        );
        assert_eq!(d.tag_value("tenant"), Some("acme"));
        assert_eq!(d.affinity_key.as_deref(), Some("acme"));
        assert_eq!(d.mirror.as_deref(), Some("shadow"));
        assert_eq!(d.action, Action::Forward);

        let b = d.clone().block("no");
        assert!(b.is_blocked() && b.cache.is_none());
        assert_eq!(b.block_reason(), Some("no"));
        assert_eq!(
            Decision::forward().rewrite("SELECT 1").rewritten_sql(),
            Some("SELECT 1")
        );
        assert_eq!(Decision::default(), Decision::forward());
        let q = Query::new("SELECT 1", StatementKind::Read);
        assert_eq!(
            Decision::forward().read_write_split(&q).route,
            Route::Replica
        );
    }
}
