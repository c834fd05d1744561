//! `tenant-router`: each tenant's statements — reads and writes alike, a tenant's pool is its
//! shard — go to the tenant's own pool, with the tenant as the consistent-hashing affinity key
//! and a `tenant=<t>` tag.
//!
//! The tenant is read from the query as `tenant_attribute` says: `user` (the proxy user name),
//! `database` (the database name), or the name of a protocol attribute such as
//! `startup.application_name` (PostgreSQL startup parameter) or `tenant` (a ClickHouse HTTP URL
//! parameter `?tenant=acme`). An empty value counts as no tenant.
//!
//! | key | value | meaning |
//! |-----|-------|---------|
//! | `tenant_attribute` | `"user"`, `"database"` or an attribute name | where the tenant comes from (required) |
//! | `pool.<tenant>` | `"<pool name>"` | the tenant's pool |
//! | `default_pool` | `"<pool name>"` | pool for tenants without a `pool.<tenant>` (optional) |
//! | `unknown_tenant` | `"default"` (the default) or `"block"` | what to do when there is no tenant or it has no pool and no `default_pool` is set: route by default (reads to a replica, the rest to the primary) or refuse the statement |
//!
//! Statements of a known tenant are tagged `tenant=<t>` and get the affinity key `<t>` even
//! when they fall back to `default_pool` or the default route.

use std::collections::BTreeMap;

use switchyard_policy::{Config, ConfigError, Decision, Policy, Query};

#[derive(Debug)]
pub struct TenantRouter {
    source: Source,
    pools: BTreeMap<String, String>,
    default_pool: Option<String>,
    block_unknown: bool,
}

/// Where the tenant comes from.
#[derive(Debug, PartialEq, Eq)]
enum Source {
    User,
    Database,
    Attribute(String),
}

impl Policy for TenantRouter {
    fn init(config: Config) -> Result<Self, String> {
        config.ensure_known_keys(&[
            "tenant_attribute",
            "pool.*",
            "default_pool",
            "unknown_tenant",
        ])?;
        let source = match config.require("tenant_attribute")?.trim() {
            "" => return Err(ConfigError::new("tenant_attribute", "must not be empty").into()),
            "user" => Source::User,
            "database" => Source::Database,
            attr => Source::Attribute(attr.to_string()),
        };
        let non_empty = |key: &str, v: &str| -> Result<String, ConfigError> {
            match v.trim() {
                "" => Err(ConfigError::new(key, "must name a pool")),
                pool => Ok(pool.to_string()),
            }
        };
        let mut pools = BTreeMap::new();
        for (tenant, pool) in config.entries_with_prefix("pool.") {
            pools.insert(
                tenant.to_string(),
                non_empty(&format!("pool.{tenant}"), pool)?,
            );
        }
        let default_pool = config
            .get("default_pool")
            .map(|p| non_empty("default_pool", p))
            .transpose()?;
        let block_unknown = match config.get("unknown_tenant").map(str::trim) {
            None | Some("default") => false,
            Some("block") => true,
            Some(other) => {
                return Err(ConfigError::new(
                    "unknown_tenant",
                    format!("expected `default` or `block`, got `{other}`"),
                )
                .into());
            }
        };
        Ok(TenantRouter {
            source,
            pools,
            default_pool,
            block_unknown,
        })
    }

    fn on_query(&self, q: &Query) -> Decision {
        let tenant = self.tenant(q);
        let pool = tenant
            .and_then(|t| self.pools.get(t))
            .or(self.default_pool.as_ref());
        let mut d = match pool {
            Some(pool) => Decision::forward().to_pool(pool),
            None if self.block_unknown => {
                return Decision::forward().block(match tenant {
                    Some(t) => format!("tenant-router: no pool for tenant {t}"),
                    None => "tenant-router: no tenant given".to_string(),
                });
            }
            None => Decision::forward().to_default(),
        };
        if let Some(t) = tenant {
            d = d.affinity(t).tag("tenant", t);
        }
        d
    }
}

impl TenantRouter {
    fn tenant<'q>(&self, q: &'q Query) -> Option<&'q str> {
        let t = match &self.source {
            Source::User => Some(q.user.as_str()),
            Source::Database => Some(q.database.as_str()),
            Source::Attribute(name) => q.attribute(name),
        };
        t.filter(|t| !t.is_empty())
    }
}

switchyard_policy::export!(TenantRouter);

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_policy::testing::{init, init_err};
    use switchyard_policy::{Action, Route, StatementKind as K};

    fn by_app_name() -> TenantRouter {
        init(&[
            ("tenant_attribute", "startup.application_name"),
            ("pool.acme", "shard_a"),
            ("pool.globex", "shard_b"),
        ])
    }

    fn read(app: &str) -> Query {
        Query::new("SELECT * FROM orders", K::Read).with_attribute("startup.application_name", app)
    }

    #[test]
    fn tenants_go_to_their_pool_with_affinity_and_a_tag() {
        let d = by_app_name().on_query(&read("acme"));
        assert_eq!(d.action, Action::Forward);
        assert_eq!(d.route, Route::Pool("shard_a".into()));
        assert_eq!(d.affinity_key.as_deref(), Some("acme"));
        assert_eq!(d.tags, vec![("tenant".to_string(), "acme".to_string())]);
        assert_eq!(d.cache, None);
    }

    #[test]
    fn writes_stay_on_the_tenant_pool() {
        let q = Query::new("INSERT INTO orders VALUES (1)", K::Write)
            .with_attribute("startup.application_name", "globex")
            .inside_transaction();
        assert_eq!(
            by_app_name().on_query(&q).route,
            Route::Pool("shard_b".into())
        );
    }

    #[test]
    fn unknown_tenants_use_the_default_route_or_pool() {
        let d = by_app_name().on_query(&read("initech"));
        assert_eq!(d.route, Route::Default);
        assert_eq!(d.affinity_key.as_deref(), Some("initech"));
        assert_eq!(d.tag_value("tenant"), Some("initech"));

        let d = by_app_name().on_query(&Query::new("SELECT 1", K::Read));
        assert_eq!(d.route, Route::Default);
        assert_eq!(d.affinity_key, None);
        assert!(d.tags.is_empty());
        // An empty attribute is no tenant.
        assert_eq!(by_app_name().on_query(&read("")).affinity_key, None);

        let p: TenantRouter = init(&[
            ("tenant_attribute", "startup.application_name"),
            ("pool.acme", "shard_a"),
            ("default_pool", "shared"),
        ]);
        assert_eq!(
            p.on_query(&read("initech")).route,
            Route::Pool("shared".into())
        );
        assert_eq!(
            p.on_query(&read("acme")).route,
            Route::Pool("shard_a".into())
        );
    }

    #[test]
    fn unknown_tenants_can_be_blocked() {
        let p: TenantRouter = init(&[
            ("tenant_attribute", "user"),
            ("pool.acme", "shard_a"),
            ("unknown_tenant", "block"),
        ]);
        let q = Query::new("SELECT 1", K::Read);
        assert_eq!(
            p.on_query(&q.clone().with_user("mallory")).block_reason(),
            Some("tenant-router: no pool for tenant mallory")
        );
        assert_eq!(
            p.on_query(&q.clone()).block_reason(),
            Some("tenant-router: no tenant given")
        );
        assert_eq!(
            p.on_query(&q.with_user("acme")).route,
            Route::Pool("shard_a".into())
        );
    }

    #[test]
    fn tenant_sources() {
        let by_user: TenantRouter = init(&[("tenant_attribute", "user"), ("pool.alice", "a")]);
        let q = Query::new("SELECT 1", K::Read).with_user("alice");
        assert_eq!(by_user.on_query(&q).route, Route::Pool("a".into()));

        let by_db: TenantRouter = init(&[("tenant_attribute", "database"), ("pool.crm", "c")]);
        let q = Query::new("SELECT 1", K::Read).with_database("crm");
        assert_eq!(by_db.on_query(&q).route, Route::Pool("c".into()));

        let by_http: TenantRouter = init(&[("tenant_attribute", "tenant"), ("pool.acme", "a")]);
        let q = Query::new("SELECT 1", K::Read)
            .with_protocol(switchyard_policy::Protocol::ClickhouseHttp)
            .with_attribute("tenant", "acme");
        assert_eq!(by_http.on_query(&q).route, Route::Pool("a".into()));
    }

    #[test]
    fn bad_config_is_refused() {
        assert_eq!(
            init_err::<TenantRouter>(&[]),
            "config key `tenant_attribute`: is required"
        );
        assert!(
            init_err::<TenantRouter>(&[("tenant_attribute", "user"), ("pool.a", " ")])
                .starts_with("config key `pool.a`")
        );
        assert!(
            init_err::<TenantRouter>(&[("tenant_attribute", "user"), ("unknown_tenant", "x")])
                .starts_with("config key `unknown_tenant`")
        );
        assert!(
            init_err::<TenantRouter>(&[("tenant_attribute", "user"), ("pools.a", "x")])
                .contains("unknown key")
        );
    }
}
