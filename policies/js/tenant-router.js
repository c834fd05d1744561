// tenant-router, in JavaScript: the same routes, affinity keys, tags and block reasons as
// policies/tenant-router (Rust).
//
// The tenant comes from tenant_attribute (`user`, `database` or an attribute name); its pool is
// pool.<tenant>, else default_pool, else the default route (or a block with
// unknown_tenant = "block"). A known tenant is the affinity key and the tag tenant=<t>.

import * as sp from "./sdk/switchyard-policy.js";

class TenantRouter {
  constructor(config) {
    config.ensureKnownKeys(["tenant_attribute", "pool.*", "default_pool", "unknown_tenant"]);
    this.source = sp.trim(config.require("tenant_attribute"));
    if (this.source === "") throw new sp.ConfigError("tenant_attribute", "must not be empty");
    const nonEmpty = (key, v) => {
      const pool = sp.trim(v);
      if (pool === "") throw new sp.ConfigError(key, "must name a pool");
      return pool;
    };
    this.pools = new Map(config.entriesWithPrefix("pool.").map(([t, p]) => [t, nonEmpty(`pool.${t}`, p)]));
    const defaultPool = config.get("default_pool");
    this.defaultPool = defaultPool === undefined ? undefined : nonEmpty("default_pool", defaultPool);
    const unknownRaw = config.get("unknown_tenant");
    const unknown = unknownRaw === undefined ? undefined : sp.trim(unknownRaw);
    if (unknown !== undefined && unknown !== "default" && unknown !== "block") {
      throw new sp.ConfigError("unknown_tenant", `expected \`default\` or \`block\`, got \`${unknown}\``);
    }
    this.blockUnknown = unknown === "block";
  }

  tenant(q) {
    let t;
    if (this.source === "user") t = q.user;
    else if (this.source === "database") t = q.database;
    else t = sp.attribute(q, this.source);
    return t === undefined || t === "" ? undefined : t;
  }

  onQuery(q) {
    const tenant = this.tenant(q);
    const pool = (tenant !== undefined ? this.pools.get(tenant) : undefined) ?? this.defaultPool;
    let d;
    if (pool !== undefined) {
      d = sp.forward(sp.pool(pool));
    } else if (this.blockUnknown) {
      const reason =
        tenant === undefined ? "tenant-router: no tenant given" : `tenant-router: no pool for tenant ${tenant}`;
      return sp.block(sp.forward(), reason);
    } else {
      d = sp.forward();
    }
    if (tenant !== undefined) d = sp.tag({ ...d, affinityKey: tenant }, "tenant", tenant);
    return d;
  }
}

let policy;

export function init(config) {
  try {
    policy = new TenantRouter(new sp.Config(config));
  } catch (e) {
    // A thrown string is the `err` of init's result<_, string>.
    throw e instanceof sp.ConfigError ? e.message : String(e);
  }
}

export function onQuery(q) {
  return policy.onQuery(q);
}
