// guard, in JavaScript: the same rules, block reasons and rewrites as policies/guard (Rust).
//
// Blocks DROP/TRUNCATE and UPDATE/DELETE without WHERE, enforces the per-user table and
// function denylists (deny_tables.<user>, deny_functions.<user>, `*` for everyone), and adds
// `LIMIT n` (limit.<user>, limit.*; 0 switches it off) to unbounded single SELECTs.

import * as sp from "./sdk/switchyard-policy.js";

const EVERYONE = "*";

class Guard {
  constructor(config) {
    config.ensureKnownKeys(["deny_tables.*", "deny_functions.*", "limit.*"]);
    const lists = (prefix) => new Map(config.entriesWithPrefix(prefix).map(([u, v]) => [u, sp.splitList(v)]));
    this.denyTables = lists("deny_tables.");
    this.denyFunctions = lists("deny_functions.");
    this.limits = new Map(config.entriesWithPrefix("limit.").map(([u]) => [u, config.getU64(`limit.${u}`)]));
  }

  onQuery(q) {
    const decision = sp.forward(sp.readWriteRoute(q));
    const reason = this.refusal(q);
    if (reason !== undefined) return sp.block(decision, reason);
    const n = this.limitFor(q.user);
    if (n !== undefined) {
      const sql = limited(q, n);
      if (sql !== undefined) return sp.tag(sp.rewrite(decision, sql), "guard", "limit");
    }
    return decision;
  }

  refusal(q) {
    const d = sp.dialect(q);
    // One statement the host parsed: its flags describe it. Otherwise look at each statement
    // of the text ourselves.
    const parsedSingle = !q.flags.multiStatement && q.kind !== "unknown";
    const stmts = parsedSingle ? [q.sql] : sp.statements(q.sql, d);
    for (const stmt of stmts) {
      const keyword = sp.asciiUpper(sp.firstKeyword(stmt, d) ?? "");
      if ((keyword === "DROP" || keyword === "TRUNCATE") && (q.kind === "ddl" || q.kind === "unknown")) {
        return `guard: ${keyword} is not allowed`;
      }
      if ((keyword === "UPDATE" || keyword === "DELETE") && parsedSingle && sp.isWrite(q) && !q.flags.hasWhere) {
        return `guard: ${keyword} without WHERE is not allowed`;
      }
      const hidden = sp.updateOrDeleteWithoutWhere(stmt, d);
      if (hidden !== undefined) return `guard: ${sp.asciiUpper(hidden)} without WHERE is not allowed`;
    }
    for (const table of sp.tables(q)) {
      if (denied(this.denyTables, q.user, table)) return `guard: table ${table} is denied for user ${q.user}`;
    }
    for (const fn of q.functions) {
      if (denied(this.denyFunctions, q.user, fn)) return `guard: function ${fn} is denied for user ${q.user}`;
    }
    return undefined;
  }

  limitFor(user) {
    const n = this.limits.get(user) ?? this.limits.get(EVERYONE);
    return n === undefined || n === 0n ? undefined : n;
  }
}

function denied(lists, user, name) {
  return [user, EVERYONE].some((u) => (lists.get(u) ?? []).some((p) => sp.nameMatches(name, p)));
}

function limited(q, n) {
  const select = sp.startsWithKeyword(q, "SELECT") || sp.startsWithKeyword(q, "WITH");
  if (!sp.isRead(q) || q.flags.hasLimit || q.flags.multiStatement || !select) return undefined;
  return sp.appendLimit(q.sql, n, sp.dialect(q));
}

// One Guard per Wasm instance: the host calls init once, then onQuery per statement.
let policy;

export function init(config) {
  try {
    policy = new Guard(new sp.Config(config));
  } catch (e) {
    // A thrown string is the `err` of init's result<_, string>.
    throw e instanceof sp.ConfigError ? e.message : String(e);
  }
}

export function onQuery(q) {
  return policy.onQuery(q);
}
