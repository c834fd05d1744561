"""tenant-router, in Python: the same routes, affinity keys, tags and block reasons as
policies/tenant-router (Rust).

The tenant comes from `tenant_attribute` (`user`, `database` or an attribute name); its pool is
`pool.<tenant>`, else `default_pool`, else the default route (or a block with
`unknown_tenant = "block"`). A known tenant is the affinity key and the tag `tenant=<t>`.
"""

import wit_world
from componentize_py_types import Err

import switchyard_policy as sp


class TenantRouter:
    def __init__(self, config):
        config.ensure_known_keys(["tenant_attribute", "pool.*", "default_pool", "unknown_tenant"])
        source = sp.trim(config.require("tenant_attribute"))
        if source == "":
            raise sp.ConfigError("tenant_attribute", "must not be empty")
        self.source = source

        def non_empty(key, v):
            pool = sp.trim(v)
            if pool == "":
                raise sp.ConfigError(key, "must name a pool")
            return pool

        self.pools = {t: non_empty("pool." + t, p) for t, p in config.entries_with_prefix("pool.")}
        default_pool = config.get("default_pool")
        self.default_pool = None if default_pool is None else non_empty("default_pool", default_pool)
        unknown = config.get("unknown_tenant")
        unknown = None if unknown is None else sp.trim(unknown)
        if unknown not in (None, "default", "block"):
            raise sp.ConfigError("unknown_tenant", f"expected `default` or `block`, got `{unknown}`")
        self.block_unknown = unknown == "block"

    def tenant(self, q):
        if self.source == "user":
            t = q.user
        elif self.source == "database":
            t = q.database
        else:
            t = sp.attribute(q, self.source)
        return t or None

    def on_query(self, q):
        tenant = self.tenant(q)
        pool = self.pools.get(tenant) if tenant is not None else None
        if pool is None:
            pool = self.default_pool
        if pool is not None:
            d = sp.forward(sp.to_pool(pool))
        elif self.block_unknown:
            reason = "tenant-router: no tenant given" if tenant is None else f"tenant-router: no pool for tenant {tenant}"
            return sp.block(sp.forward(), reason)
        else:
            d = sp.forward()
        if tenant is not None:
            d.affinity_key = tenant
            sp.tag(d, "tenant", tenant)
        return d


_policy = None


class WitWorld(wit_world.WitWorld):
    def init(self, config):
        global _policy
        try:
            _policy = TenantRouter(sp.Config(config))
        except sp.ConfigError as e:
            raise Err(str(e))

    def on_query(self, q):
        return _policy.on_query(q)
