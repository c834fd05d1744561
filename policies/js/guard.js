// guard, in JavaScript: the same rules, block reasons and rewrites as policies/guard (Rust).
//
// Judges only the host's per-statement facts (q.statements), never the SQL text: blocks
// denied commands (deny_commands.<user>, deny_commands.*, else DROP *, TRUNCATE TABLE, DO) in
// statements that run now or at a later EXECUTE, statements that did not parse (unknown =
// "block", the default), UPDATE/DELETE without WHERE at any depth that runs, and names on the
// per-user table and function denylists (deny_tables.<user>, deny_functions.<user>, `*` for
// everyone) in any statement; adds `LIMIT n` (limit.<user>, limit.*; 0 switches it off) to a
// single unbounded SELECT.

import * as sp from "./sdk/switchyard-policy.js";

const EVERYONE = "*";
const DEFAULT_DENY_COMMANDS = "DROP *,TRUNCATE TABLE,DO";
const UNPARSED = 'guard: a statement that could not be parsed is blocked (unknown = "block")';

class Guard {
  constructor(config) {
    config.ensureKnownKeys(["deny_commands.*", "unknown", "deny_tables.*", "deny_functions.*", "limit.*"]);
    const lists = (prefix) => new Map(config.entriesWithPrefix(prefix).map(([u, v]) => [u, sp.splitList(v)]));
    const unknown = config.get("unknown");
    if (unknown !== undefined && unknown !== "block" && unknown !== "allow") {
      throw new sp.ConfigError("unknown", `expected \`block\` or \`allow\`, got \`${unknown}\``);
    }
    this.allowUnknown = unknown === "allow";
    this.limits = new Map(config.entriesWithPrefix("limit.").map(([u]) => [u, config.getU64(`limit.${u}`)]));
    this.denyCommands = lists("deny_commands.");
    this.defaultDenyCommands = sp.splitList(DEFAULT_DENY_COMMANDS);
    this.denyTables = lists("deny_tables.");
    this.denyFunctions = lists("deny_functions.");
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
    const denied = this.deniedCommands(q.user);
    const running = sp.statementsThatRun(q);
    for (const s of running) {
      if (denied.some((p) => sp.commandMatches(s.command, p))) return `guard: ${s.command} is not allowed`;
    }
    const unparsed = q.statements.some((s) => !s.parsed) || (q.statements.length === 0 && q.kind === "unknown");
    if (unparsed && !this.allowUnknown) return UNPARSED;
    const everyRow = running.find(sp.changesEveryRow);
    if (everyRow !== undefined) return `guard: ${everyRow.command} without WHERE is not allowed`;
    const table = firstDenied(this.denyTables, q, sp.relations);
    if (table !== undefined) return `guard: table ${sp.qualifiedName(table)} is denied for user ${q.user}`;
    const fn = firstDenied(this.denyFunctions, q, sp.routines);
    if (fn !== undefined) return `guard: function ${sp.qualifiedName(fn)} is denied for user ${q.user}`;
    return undefined;
  }

  deniedCommands(user) {
    return this.denyCommands.get(user) ?? this.denyCommands.get(EVERYONE) ?? this.defaultDenyCommands;
  }

  limitFor(user) {
    const n = this.limits.get(user) ?? this.limits.get(EVERYONE);
    return n === undefined || n === 0n ? undefined : n;
  }
}

function firstDenied(lists, q, objects) {
  const patterns = [...(lists.get(q.user) ?? []), ...(lists.get(EVERYONE) ?? [])];
  if (patterns.length === 0) return undefined;
  for (const s of q.statements) {
    const hit = objects(s).find((o) => patterns.some((p) => sp.objectMatches(o, p)));
    if (hit !== undefined) return hit;
  }
  return undefined;
}

function limited(q, n) {
  if (q.statements.length !== 1) return undefined;
  const s = q.statements[0];
  if (!sp.isRead(q) || !sp.statementIs(s, "SELECT") || !s.parsed || !s.runs || s.hasLimit) return undefined;
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
