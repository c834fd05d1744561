//! `cache-rules`: caches reads of tables with a configured time-to-live; routes like `rw-split`.
//!
//! A read is cached only when it is not volatile, not inside a transaction, a single
//! statement, reads at least one table, and **every** table it reads has a TTL — its own
//! `ttl.<table>` rule or `default_ttl`. The entry lives for the smallest of those TTLs and is
//! tagged `cache=<rule>` with the key of the rule that gave it (`cache=ttl.orders`,
//! `cache=default_ttl`). A read that is not cached is tagged `cache=off:<why>` (`volatile`,
//! `transaction`, `multi-statement`, `no-tables`, `no-rule`, or the key of a rule with TTL 0).
//! Writes and other statements are not tagged.
//!
//! Table names match as `switchyard_policy::name_matches` says (case and quotes ignored;
//! `ttl.orders` covers `orders` and `shop.orders`); when several rules match a table, the most
//! qualified wins (`ttl.shop.orders` over `ttl.orders`).
//!
//! | key | value | meaning |
//! |-----|-------|---------|
//! | `ttl.<table>` | `"30000"` | cache reads of `<table>` for 30 s; `"0"`: never cache reads of it (even with `default_ttl`) |
//! | `default_ttl` | `"5000"` | TTL for tables without a rule (optional; unset: such reads are not cached) |
//! | `namespace` | `"reports"` | cache namespace of the entries (optional) |
//! | `shared` | `"true"` / `"false"` | share entries between users (default `false`: per user) |

use switchyard_policy::{
    CacheDirective, Config, ConfigError, Decision, Policy, Query, name_matches,
};

#[derive(Debug)]
pub struct CacheRules {
    /// `(table pattern, ttl, rule key)`, most qualified pattern first.
    rules: Vec<(String, u32, String)>,
    default_ttl: Option<u32>,
    namespace: Option<String>,
    shared: bool,
}

impl Policy for CacheRules {
    fn init(config: Config) -> Result<Self, String> {
        config.ensure_known_keys(&["ttl.*", "default_ttl", "namespace", "shared"])?;
        let mut rules = Vec::new();
        for (table, _) in config.entries_with_prefix("ttl.") {
            let key = format!("ttl.{table}");
            let ttl = config.get_u32(&key)?.unwrap_or(0);
            rules.push((table.to_string(), ttl, key));
        }
        // Most qualified first; the sort is stable, so ties keep key order.
        rules.sort_by_key(|(t, _, _)| std::cmp::Reverse(t.matches('.').count()));
        let namespace = match config.get("namespace").map(str::trim) {
            Some("") => return Err(ConfigError::new("namespace", "must not be empty").into()),
            ns => ns.map(str::to_string),
        };
        Ok(CacheRules {
            rules,
            default_ttl: config.get_u32("default_ttl")?,
            namespace,
            shared: config.get_bool("shared")?.unwrap_or(false),
        })
    }

    fn on_query(&self, q: &Query) -> Decision {
        let d = Decision::forward().read_write_split(q);
        if !q.is_read() {
            return d;
        }
        match self.ttl(q) {
            Ok((ttl, rule)) => {
                let mut directive = CacheDirective::new(ttl).shared(self.shared);
                if let Some(ns) = &self.namespace {
                    directive = directive.namespace(ns);
                }
                d.cache_with(directive).tag("cache", rule)
            }
            Err(why) => d.tag("cache", format!("off:{why}")),
        }
    }
}

impl CacheRules {
    /// The TTL for a read and the key of the rule that set it, or why it is not cached.
    fn ttl<'a>(&'a self, q: &Query) -> Result<(u32, &'a str), &'a str> {
        if q.is_volatile() {
            return Err("volatile");
        }
        if q.in_transaction {
            return Err("transaction");
        }
        if q.is_multi_statement() {
            return Err("multi-statement");
        }
        let mut best: Option<(u32, &str)> = None;
        for table in &q.tables_read {
            let (ttl, rule) = self.ttl_of(table).ok_or("no-rule")?;
            if ttl == 0 {
                return Err(rule);
            }
            if best.is_none_or(|(b, _)| ttl < b) {
                best = Some((ttl, rule));
            }
        }
        best.ok_or("no-tables")
    }

    fn ttl_of(&self, table: &str) -> Option<(u32, &str)> {
        self.rules
            .iter()
            .find(|(pattern, _, _)| name_matches(table, pattern))
            .map(|(_, ttl, key)| (*ttl, key.as_str()))
            .or(self.default_ttl.map(|t| (t, "default_ttl")))
    }
}

switchyard_policy::export!(CacheRules);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_policy::testing::{init, init_err};
    use switchyard_policy::{QueryFlags as F, Route, StatementKind as K};

    fn rules() -> CacheRules {
        init(&[
            ("ttl.orders", "30000"),
            ("ttl.shop.orders", "60000"),
            ("ttl.products", "10000"),
            ("ttl.audit", "0"),
        ])
    }

    fn read(tables: &[&str]) -> Query {
        Query::new("SELECT ...", K::Read).with_tables_read(tables.iter().copied())
    }

    #[test]
    fn reads_of_tables_with_a_ttl_are_cached() {
        let d = rules().on_query(&read(&["orders"]));
        assert_eq!(d.route, Route::Replica);
        assert_eq!(d.cache, Some(CacheDirective::new(30000)));
        assert_eq!(d.tag_value("cache"), Some("ttl.orders"));
    }

    #[test]
    fn the_smallest_ttl_wins() {
        let d = rules().on_query(&read(&["orders", "products"]));
        assert_eq!(d.cache.as_ref().map(|c| c.ttl_ms), Some(10000));
        assert_eq!(d.tag_value("cache"), Some("ttl.products"));
    }

    #[test]
    fn the_most_qualified_rule_wins() {
        let d = rules().on_query(&read(&["shop.orders"]));
        assert_eq!(d.cache.as_ref().map(|c| c.ttl_ms), Some(60000));
        assert_eq!(d.tag_value("cache"), Some("ttl.shop.orders"));
        let d = rules().on_query(&read(&["other.orders"]));
        assert_eq!(d.cache.as_ref().map(|c| c.ttl_ms), Some(30000));
    }

    #[test]
    fn every_table_needs_a_ttl() {
        let d = rules().on_query(&read(&["orders", "customers"]));
        assert_eq!(d.cache, None);
        assert_eq!(d.tag_value("cache"), Some("off:no-rule"));
        assert_eq!(d.route, Route::Replica);
        let d = rules().on_query(&read(&["orders", "audit"]));
        assert_eq!(d.cache, None);
        assert_eq!(d.tag_value("cache"), Some("off:ttl.audit"));
        let d = rules().on_query(&read(&[]));
        assert_eq!(d.tag_value("cache"), Some("off:no-tables"));
    }

    #[test]
    fn default_ttl_covers_tables_without_a_rule() {
        let p: CacheRules = init(&[("ttl.orders", "30000"), ("default_ttl", "5000")]);
        let d = p.on_query(&read(&["orders", "customers"]));
        assert_eq!(d.cache.as_ref().map(|c| c.ttl_ms), Some(5000));
        assert_eq!(d.tag_value("cache"), Some("default_ttl"));
        let d = p.on_query(&read(&["orders"]));
        assert_eq!(d.cache.as_ref().map(|c| c.ttl_ms), Some(30000));
    }

    #[test]
    fn volatile_transactional_and_multi_statement_reads_are_not_cached() {
        let cases = [
            (
                read(&["orders"]).with_flags(F::VOLATILE),
                "off:volatile",
                Route::Replica,
            ),
            (
                read(&["orders"]).inside_transaction(),
                "off:transaction",
                Route::Primary,
            ),
            (
                read(&["orders"]).with_flags(F::MULTI_STATEMENT),
                "off:multi-statement",
                Route::Replica,
            ),
        ];
        for (q, tag, route) in cases {
            let d = rules().on_query(&q);
            assert_eq!(d.cache, None);
            assert_eq!(d.tag_value("cache"), Some(tag));
            assert_eq!(d.route, route);
        }
    }

    #[test]
    fn writes_are_routed_to_the_primary_untouched() {
        let q = Query::new("UPDATE orders SET a = 1 WHERE id = 1", K::Write)
            .with_tables_written(["orders"]);
        let d = rules().on_query(&q);
        assert_eq!(d, Decision::forward().to_primary());
    }

    #[test]
    fn namespace_and_sharing() {
        let p: CacheRules = init(&[
            ("ttl.orders", "1000"),
            ("namespace", "reports"),
            ("shared", "true"),
        ]);
        assert_eq!(
            p.on_query(&read(&["orders"])).cache,
            Some(CacheDirective::new(1000).namespace("reports").shared(true))
        );
    }

    #[test]
    fn bad_config_is_refused() {
        assert!(
            init_err::<CacheRules>(&[("ttl.orders", "30s")]).starts_with("config key `ttl.orders`")
        );
        assert!(init_err::<CacheRules>(&[("shared", "maybe")]).starts_with("config key `shared`"));
        assert!(
            init_err::<CacheRules>(&[("default_ttl", "-1")])
                .starts_with("config key `default_ttl`")
        );
        assert!(init_err::<CacheRules>(&[("ttl_orders", "1")]).contains("unknown key"));
    }
}
