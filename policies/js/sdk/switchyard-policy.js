// switchyard-policy: helpers for Switchyard policies written in JavaScript (componentize-js).
//
// A port of the parts of the Rust SDK (policies/sdk) that policies need to decide exactly like
// their Rust versions: config helpers, nameMatches, query predicates, the statement facts
// helpers, decision builders and the SQL lexer of sdk/src/sql.rs (for appendLimit only). The rules are Rust's: ASCII-only case folding, Rust's whitespace
// set (String.prototype.trim differs: it strips U+FEFF and keeps U+0085), integers as Rust's
// u64::from_str reads them (BigInt: a Number loses precision past 2^53).
//
// How the WIT types look in JS (jco's mapping): enums are strings ("read", "clickhouse-http"),
// flags an object of booleans ({ hasWhere, hasLimit, volatile, multiStatement }), variants
// { tag, val }, options undefined or the value, tuples arrays, u64 BigInt. A thrown string from
// `init` is its `err`.

const WHITESPACE = new Set([
  "\t", "\n", "\v", "\f", "\r", " ", "\u0085", "\u00a0", "\u1680", "\u2000", "\u2001", "\u2002",
  "\u2003", "\u2004", "\u2005", "\u2006", "\u2007", "\u2008", "\u2009", "\u200a", "\u2028",
  "\u2029", "\u202f", "\u205f", "\u3000",
]);
const ASCII_WS = " \t\n\f\r";

export function trim(s) {
  let a = 0;
  let b = s.length;
  while (a < b && WHITESPACE.has(s[a])) a++;
  while (b > a && WHITESPACE.has(s[b - 1])) b--;
  return s.slice(a, b);
}

function trimEnd(s) {
  let b = s.length;
  while (b > 0 && WHITESPACE.has(s[b - 1])) b--;
  return s.slice(0, b);
}

export function asciiLower(s) {
  return s.replace(/[A-Z]/g, (c) => String.fromCharCode(c.charCodeAt(0) + 32));
}

export function asciiUpper(s) {
  return s.replace(/[a-z]/g, (c) => String.fromCharCode(c.charCodeAt(0) - 32));
}

export function eqIgnoreAsciiCase(a, b) {
  return a.length === b.length && asciiLower(a) === asciiLower(b);
}

// ---- config ---------------------------------------------------------------------------------

export class ConfigError extends Error {
  constructor(key, reason) {
    super(`config key \`${key}\`: ${reason}`);
  }
}

// Rust's BTreeMap<String, _> orders keys by UTF-8 bytes, i.e. by code point (JS's default sort
// compares UTF-16 units, which differs above U+FFFF).
function byCodePoint(a, b) {
  const x = Array.from(a, (c) => c.codePointAt(0));
  const y = Array.from(b, (c) => c.codePointAt(0));
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    if (x[i] !== y[i]) return x[i] - y[i];
  }
  return x.length - y.length;
}

/** The `[policy.config]` pairs; a repeated key keeps its last value, keys iterate sorted. */
export class Config {
  constructor(pairs) {
    const map = new Map();
    for (const [k, v] of pairs) map.set(k, v);
    this.entries = new Map([...map.entries()].sort((a, b) => byCodePoint(a[0], b[0])));
  }

  get(key) {
    return this.entries.get(key);
  }

  require(key) {
    const v = this.entries.get(key);
    if (v === undefined) throw new ConfigError(key, "is required");
    return v;
  }

  getU64(key) {
    const v = this.entries.get(key);
    if (v === undefined) return undefined;
    const text = trim(v);
    if (!/^\+?[0-9]+$/.test(text) || BigInt(text) >= 1n << 64n) {
      throw new ConfigError(key, `expected a whole number, got \`${v}\``);
    }
    return BigInt(text);
  }

  entriesWithPrefix(prefix) {
    const out = [];
    for (const [k, v] of this.entries) if (k.startsWith(prefix)) out.push([k.slice(prefix.length), v]);
    return out;
  }

  ensureKnownKeys(known) {
    const matches = (key) =>
      known.some((pat) =>
        pat.endsWith("*")
          ? key.startsWith(pat.slice(0, -1)) && key.length > pat.length - 1
          : key === pat,
      );
    for (const key of this.entries.keys()) {
      if (!matches(key)) throw new ConfigError(key, `unknown key (known keys: ${known.join(", ")})`);
    }
  }
}

export function splitList(value) {
  return value.split(",").map(trim).filter((s) => s !== "");
}

/** Like the Rust SDK's: ASCII case and quotes ignored, an unqualified pattern matches the last
 * part of a qualified name, `*` matches anything. */
export function nameMatches(name, pattern) {
  pattern = trim(pattern);
  if (pattern === "*") return true;
  name = name.replace(/["`]/g, "");
  pattern = pattern.replace(/["`]/g, "");
  if (name.length < pattern.length) return false;
  const split = name.length - pattern.length;
  return eqIgnoreAsciiCase(name.slice(split), pattern) && (split === 0 || name[split - 1] === ".");
}

// ---- queries --------------------------------------------------------------------------------

export const isRead = (q) => q.kind === "read";
export const isWrite = (q) => q.kind === "write";
export const isReplicaSafe = (q) => isRead(q) && !q.inTransaction;
export const tables = (q) => [...q.tablesRead, ...q.tablesWritten];

export const readsTable = (q, pattern) => q.tablesRead.some((t) => nameMatches(t, pattern));
export const touchesTable = (q, pattern) => tables(q).some((t) => nameMatches(t, pattern));
/** A read outside a transaction, not volatile, a single statement. */
export const isCacheable = (q) => isReplicaSafe(q) && !q.flags.volatile && !q.flags.multiStatement;

export function attribute(q, name) {
  const hit = q.attributes.find(([k]) => k === name);
  return hit === undefined ? undefined : hit[1];
}

export const dialect = (q) => DIALECTS[q.protocol];

// ---- statement facts (sdk/src/facts.rs) ------------------------------------------------------
// Judge these, never the SQL text: the host's parser has read through the comments, quoting and
// stray semicolons that hide a statement from a policy re-reading the text. A statement is
// { command, kind, parsed, runs, depth, objects, hasWhere, hasLimit }; an object
// { kind ("relation", "table", "function", ...), schema (undefined or a string), name,
// access ("read", "write", "define", "call"), guessed }.

const RELATIONS = new Set(["relation", "table", "view", "materialized-view"]);
const ROUTINES = new Set(["function", "procedure"]);

/** `command` (`DROP TABLE`) matches `pattern`: equal ignoring ASCII case, or with a pattern
 * ending in ` *`, starting with its words (`DROP *`); `*` alone matches any non-empty command. */
export function commandMatches(command, pattern) {
  pattern = trim(pattern);
  if (pattern === "*") return command !== "";
  if (pattern.endsWith("*")) {
    const prefix = trimEnd(pattern.slice(0, -1));
    const n = prefix.length;
    return eqIgnoreAsciiCase(command.slice(0, n), prefix) && command.slice(n, n + 1) === " ";
  }
  return eqIgnoreAsciiCase(command, pattern);
}

export const statementIs = (s, command) => eqIgnoreAsciiCase(s.command, command);

/** An UPDATE or DELETE without a WHERE clause. */
export const changesEveryRow = (s) => (statementIs(s, "UPDATE") || statementIs(s, "DELETE")) && !s.hasWhere;

/** Every statement that runs now or at a later EXECUTE: all but those inside an EXPLAIN without
 * ANALYZE (a PREPARE's body is included). */
export function statementsThatRun(q) {
  const out = [];
  const parents = [];
  let dormantBelow;
  for (const s of q.statements) {
    if (dormantBelow !== undefined && s.depth <= dormantBelow) dormantBelow = undefined;
    parents.length = Math.min(parents.length, s.depth);
    const parent = s.depth > 0 ? parents[s.depth - 1] : undefined;
    const explained = !s.runs && parent !== undefined && statementIs(parent, "EXPLAIN");
    if (explained && dormantBelow === undefined) dormantBelow = parent.depth;
    parents.push(s);
    if (dormantBelow === undefined) out.push(s);
  }
  return out;
}

export const objectsByAccess = (s, access) => s.objects.filter((o) => o.access === access);
export const isRelation = (o) => RELATIONS.has(o.kind);
export const isRoutine = (o) => ROUTINES.has(o.kind);
export const relations = (s) => s.objects.filter(isRelation);
export const routines = (s) => s.objects.filter(isRoutine);
export const qualifiedName = (o) => (o.schema === undefined || o.schema === null ? o.name : `${o.schema}.${o.name}`);
export const objectMatches = (o, pattern) => nameMatches(qualifiedName(o), pattern);

// ---- decisions ------------------------------------------------------------------------------

export const DEFAULT = { tag: "default" };
export const PRIMARY = { tag: "primary" };
export const REPLICA = { tag: "replica" };
export const pool = (name) => ({ tag: "pool", val: name });

export function forward(route = DEFAULT) {
  return { action: { tag: "forward" }, route, cache: undefined, affinityKey: undefined, tags: [], mirror: undefined };
}

export const readWriteRoute = (q) => (isReplicaSafe(q) ? REPLICA : PRIMARY);

export function cache(d, ttlMs, namespace = undefined, shared = false) {
  return { ...d, cache: { ttlMs, namespace, shared } };
}

export function block(d, reason) {
  return { ...d, action: { tag: "block", val: reason }, cache: undefined };
}

export function rewrite(d, sql) {
  return { ...d, action: { tag: "rewrite", val: sql } };
}

export function tag(d, key, value) {
  return { ...d, tags: [...d.tags, [key, value]] };
}

// ---- SQL lexer (sdk/src/sql.rs) -------------------------------------------------------------
// Works on UTF-16 units where Rust works on bytes: every character the rules look at is ASCII,
// and a non-ASCII character is a word character in both (bytes >= 0x80 / units >= 0x80).

const dia = (backslash, dollar, nested, hash, executable, chTail) => ({
  backslash, dollar, nested, hash, executable, chTail,
});
export const DIALECTS = {
  postgres: dia(false, true, true, false, false, false),
  "clickhouse-http": dia(true, false, false, true, false, true),
  mysql: dia(true, false, false, true, true, false),
};

const WORD = 0, QUOTED_IDENT = 1, STRING = 2, NUMBER = 3, PUNCT = 4;
const alpha = (c) => (c >= "a" && c <= "z") || (c >= "A" && c <= "Z");
const digit = (c) => c >= "0" && c <= "9";
const wordStart = (c) => alpha(c) || c === "_" || c >= "\x80";
const wordChar = (c, d) => alpha(c) || digit(c) || c === "_" || c >= "\x80" || (c === "$" && d.dollar);

class Token {
  constructor(kind, text, start, end, depth) {
    Object.assign(this, { kind, text, start, end, depth });
  }
  isKeyword(k) {
    return this.kind === WORD && eqIgnoreAsciiCase(this.text, k);
  }
  isPunct(c) {
    return this.kind === PUNCT && this.text === c;
  }
}

function skipTrivia(s, pos, d) {
  const n = s.length;
  while (pos < n) {
    const c = s[pos];
    const next = s[pos + 1];
    if (ASCII_WS.includes(c)) {
      pos++;
    } else if ((c === "-" && next === "-") || (c === "#" && d.hash)) {
      const nl = s.indexOf("\n", pos);
      pos = nl < 0 ? n : nl + 1;
    } else if (c === "/" && next === "*") {
      if (d.executable && s[pos + 2] === "!") {
        pos += 3;
        while (pos < n && digit(s[pos])) pos++;
        continue;
      }
      pos = blockCommentEnd(s, pos + 2, d);
    } else if (c === "*" && next === "/" && d.executable) {
      pos += 2;
    } else {
      return pos;
    }
  }
  return pos;
}

function blockCommentEnd(s, i, d) {
  let level = 1;
  while (i < s.length) {
    if (s[i] === "*" && s[i + 1] === "/") {
      level--;
      i += 2;
      if (level === 0) return i;
    } else if (d.nested && s[i] === "/" && s[i + 1] === "*") {
      level++;
      i += 2;
    } else {
      i++;
    }
  }
  return s.length;
}

function quotedEnd(s, open, quote, backslash) {
  let i = open + 1;
  while (i < s.length) {
    if (backslash && s[i] === "\\") {
      i += 2;
    } else if (s[i] === quote) {
      if (s[i + 1] === quote) i += 2;
      else return i + 1;
    } else {
      i++;
    }
  }
  return s.length;
}

function dollarStringEnd(s, open) {
  let i = open + 1;
  if (i < s.length && wordStart(s[i])) {
    while (i < s.length && (alpha(s[i]) || digit(s[i]) || s[i] === "_" || s[i] >= "\x80")) i++;
  }
  if (s[i] !== "$") return undefined;
  const tagText = s.slice(open, i + 1);
  const found = s.indexOf(tagText, i + 1);
  return found < 0 ? s.length : found + tagText.length;
}

// A generator, like the Rust iterator: callers that stop early lex only what they read.
export function* tokens(s, d) {
  let pos = 0;
  let depth = 0;
  const n = s.length;
  for (;;) {
    pos = skipTrivia(s, pos, d);
    if (pos >= n) return;
    const start = pos;
    const c = s[pos];
    let tokDepth = depth;
    let kind = PUNCT;
    let end = start + 1;
    if (c === "'") {
      [kind, end] = [STRING, quotedEnd(s, start, "'", d.backslash)];
    } else if (c === '"' || c === "`") {
      [kind, end] = [QUOTED_IDENT, quotedEnd(s, start, c, d.backslash)];
    } else if (c === "$" && d.dollar) {
      if (start + 1 < n && digit(s[start + 1])) {
        end = start + 1;
        while (end < n && digit(s[end])) end++;
        kind = NUMBER;
      } else {
        const e = dollarStringEnd(s, start);
        if (e !== undefined) [kind, end] = [STRING, e];
      }
    } else if (wordStart(c)) {
      if ((c === "e" || c === "E") && s[start + 1] === "'") {
        [kind, end] = [STRING, quotedEnd(s, start + 1, "'", true)];
      } else {
        while (end < n && wordChar(s[end], d)) end++;
        kind = WORD;
      }
    } else if (digit(c) || (c === "." && start + 1 < n && digit(s[start + 1]))) {
      while (end < n && (alpha(s[end]) || digit(s[end]) || s[end] === "_" || s[end] === ".")) end++;
      kind = NUMBER;
    } else if (c === "(") {
      depth++;
    } else if (c === ")") {
      depth = Math.max(depth - 1, 0);
      tokDepth = depth;
    }
    pos = end;
    yield new Token(kind, s.slice(start, end), start, end, tokDepth);
  }
}

/** `s` with `LIMIT n` appended (ClickHouse: before a trailing SETTINGS/FORMAT), or undefined
 * when it is not one statement. */
export function appendLimit(s, n, d) {
  const toks = [...tokens(s, d)];
  let last = toks.length - 1;
  while (last >= 0 && toks[last].isPunct(";")) last--;
  if (last < 0 || toks.slice(0, last).some((x) => x.isPunct(";"))) return undefined;
  const end = toks[last].end;
  let insertAt = end;
  if (d.chTail) {
    const ident = (x) => x.kind === WORD || x.kind === QUOTED_IDENT;
    if (last >= 1 && toks[last - 1].depth === 0 && toks[last - 1].isKeyword("FORMAT") && ident(toks[last])) {
      insertAt = toks[last - 1].start;
    }
    for (let i = 1; i < last - 1; i++) {
      if (toks[i].depth === 0 && toks[i].isKeyword("SETTINGS") && ident(toks[i + 1]) && toks[i + 2].isPunct("=")) {
        insertAt = Math.min(insertAt, toks[i].start);
        break;
      }
    }
  }
  const head = trimEnd(s.slice(0, insertAt));
  const tail = s.slice(insertAt, end);
  return tail === "" ? `${head} LIMIT ${n}` : `${head} LIMIT ${n} ${tail}`;
}
