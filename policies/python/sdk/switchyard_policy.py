"""switchyard_policy: helpers for Switchyard policies written in Python (componentize-py).

A port of the parts of the Rust SDK (policies/sdk) that policies need to decide exactly like
their Rust versions: the config helpers, `name_matches`, query predicates, the statement facts
helpers, decision builders and the SQL lexer of `sdk/src/sql.rs` (for `append_limit` only). The rules are Rust's, byte for byte: ASCII-only case folding,
Rust's whitespace sets (`str.isspace()` and `str.strip()` differ from Rust's `trim`), integers
as Rust's `u64::from_str` reads them.
"""

import re

from wit_world.imports import types as t

# Rust's `char::is_whitespace` (the Unicode White_Space property): Python's `str.strip()` also
# strips U+001C..U+001F, which Rust keeps.
_WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(
    chr(c) for c in range(0x2000, 0x200B)
) + "\u2028\u2029\u202f\u205f\u3000"
# Rust's `u8::is_ascii_whitespace` (no vertical tab).
_ASCII_WS = " \t\n\x0c\r"
_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_U64 = re.compile(r"\+?[0-9]+\Z", re.ASCII)


def trim(s):
    return s.strip(_WHITESPACE)


def ascii_lower(s):
    return s.translate(_LOWER)


def eq_ignore_ascii_case(a, b):
    return len(a) == len(b) and ascii_lower(a) == ascii_lower(b)


# ---- config -------------------------------------------------------------------------------


class ConfigError(Exception):
    def __init__(self, key, reason):
        super().__init__(f"config key `{key}`: {reason}")


class Config:
    """The `[policy.config]` pairs; a repeated key keeps its last value, keys iterate sorted."""

    def __init__(self, pairs):
        self.entries = dict(sorted(dict(pairs).items()))

    def get(self, key):
        return self.entries.get(key)

    def require(self, key):
        value = self.entries.get(key)
        if value is None:
            raise ConfigError(key, "is required")
        return value

    def get_u64(self, key):
        value = self.entries.get(key)
        if value is None:
            return None
        text = trim(value)
        if not _U64.match(text) or int(text) >= 1 << 64:
            raise ConfigError(key, f"expected a whole number, got `{value}`")
        return int(text)

    def entries_with_prefix(self, prefix):
        return [(k[len(prefix):], v) for k, v in self.entries.items() if k.startswith(prefix)]

    def ensure_known_keys(self, known):
        def matches(key):
            for pat in known:
                if pat.endswith("*"):
                    if key.startswith(pat[:-1]) and len(key) > len(pat) - 1:
                        return True
                elif key == pat:
                    return True
            return False

        for key in self.entries:
            if not matches(key):
                raise ConfigError(key, "unknown key (known keys: " + ", ".join(known) + ")")


def split_list(value):
    return [s for s in (trim(x) for x in value.split(",")) if s]


def name_matches(name, pattern):
    """Like the Rust SDK's: ASCII case and quotes ignored, unqualified patterns match the last
    part of a qualified name, `*` matches anything."""
    pattern = trim(pattern)
    if pattern == "*":
        return True
    name = name.replace('"', "").replace("`", "")
    pattern = pattern.replace('"', "").replace("`", "")
    if len(name) < len(pattern):
        return False
    split = len(name) - len(pattern)
    return eq_ignore_ascii_case(name[split:], pattern) and (split == 0 or name[split - 1] == ".")


# ---- query predicates ---------------------------------------------------------------------

F = t.QueryFlags
K = t.StatementKind


def is_read(q):
    return q.kind == K.READ


def is_write(q):
    return q.kind == K.WRITE


def has_flag(q, flag):
    return bool(q.flags & flag)


def is_replica_safe(q):
    return is_read(q) and not q.in_transaction


def attribute(q, name):
    for k, v in q.attributes:
        if k == name:
            return v
    return None


def tables(q):
    return list(q.tables_read) + list(q.tables_written)


def reads_table(q, pattern):
    return any(name_matches(x, pattern) for x in q.tables_read)


def touches_table(q, pattern):
    return any(name_matches(x, pattern) for x in tables(q))


def is_cacheable(q):
    """A read outside a transaction, not volatile, a single statement."""
    return is_replica_safe(q) and not has_flag(q, F.VOLATILE) and not has_flag(q, F.MULTI_STATEMENT)


def dialect(q):
    return DIALECTS[q.protocol]


# ---- statement facts (sdk/src/facts.rs) ---------------------------------------------------
#
# Judge these, never the SQL text: the host's parser has read through the comments, quoting and
# stray semicolons that hide a statement from a policy re-reading the text.

OK = t.ObjectKind
A = t.Access
_RELATIONS = (OK.RELATION, OK.TABLE, OK.VIEW, OK.MATERIALIZED_VIEW)
_ROUTINES = (OK.FUNCTION, OK.PROCEDURE)


def command_matches(command, pattern):
    """`command` (`DROP TABLE`) matches `pattern`: equal ignoring ASCII case, or with a pattern
    ending in ` *`, starting with its words (`DROP *`); `*` alone matches any non-empty command."""
    pattern = trim(pattern)
    if pattern == "*":
        return command != ""
    if pattern.endswith("*"):
        prefix = pattern[:-1].rstrip(_WHITESPACE)
        n = len(prefix)
        return eq_ignore_ascii_case(command[:n], prefix) and command[n : n + 1] == " "
    return eq_ignore_ascii_case(command, pattern)


def statement_is(s, command):
    return eq_ignore_ascii_case(s.command, command)


def changes_every_row(s):
    """An UPDATE or DELETE without a WHERE clause."""
    return (statement_is(s, "UPDATE") or statement_is(s, "DELETE")) and not s.has_where


def statements_that_run(q):
    """Every statement that runs now or at a later EXECUTE: all but those inside an EXPLAIN
    without ANALYZE (a PREPARE's body is included)."""
    dormant_below = None
    parents = []
    for s in q.statements:
        if dormant_below is not None and s.depth <= dormant_below:
            dormant_below = None
        del parents[s.depth :]
        parent = parents[s.depth - 1] if 0 < s.depth <= len(parents) else None
        explained = not s.runs and parent is not None and statement_is(parent, "EXPLAIN")
        if explained and dormant_below is None:
            dormant_below = parent.depth
        parents.append(s)
        if dormant_below is None:
            yield s


def objects_by_access(s, access):
    return [o for o in s.objects if o.access == access]


def is_relation(o):
    return o.kind in _RELATIONS


def is_routine(o):
    return o.kind in _ROUTINES


def relations(s):
    return [o for o in s.objects if is_relation(o)]


def routines(s):
    return [o for o in s.objects if is_routine(o)]


def qualified_name(o):
    return o.name if o.schema is None else f"{o.schema}.{o.name}"


def object_matches(o, pattern):
    return name_matches(qualified_name(o), pattern)


# ---- decisions ----------------------------------------------------------------------------


def forward(route=None):
    return t.Decision(t.Action_Forward(), route or t.Route_Default(), None, None, [], None)


def read_write_route(q):
    return t.Route_Replica() if is_replica_safe(q) else t.Route_Primary()


def to_pool(name):
    return t.Route_Pool(name)


def cache(d, ttl_ms, namespace=None, shared=False):
    d.cache = t.CacheDirective(ttl_ms, namespace, shared)
    return d


def block(d, reason):
    d.action = t.Action_Block(reason)
    d.cache = None
    return d


def rewrite(d, sql):
    d.action = t.Action_Rewrite(sql)
    return d


def tag(d, key, value):
    d.tags.append((key, value))
    return d


# ---- SQL lexer (sdk/src/sql.rs) ------------------------------------------------------------


class Dialect:
    def __init__(self, backslash, dollar, nested, hash_comments, executable, clickhouse_tail):
        self.backslash_escapes = backslash
        self.dollar_quotes = dollar
        self.nested_comments = nested
        self.hash_comments = hash_comments
        self.executable_comments = executable
        self.clickhouse_tail = clickhouse_tail


POSTGRES = Dialect(False, True, True, False, False, False)
CLICKHOUSE = Dialect(True, False, False, True, False, True)
MYSQL = Dialect(True, False, False, True, True, False)
DIALECTS = {t.Protocol.POSTGRES: POSTGRES, t.Protocol.CLICKHOUSE_HTTP: CLICKHOUSE, t.Protocol.MYSQL: MYSQL}

WORD, QUOTED_IDENT, STRING, NUMBER, PUNCT = range(5)


def _alpha(c):
    return "a" <= c <= "z" or "A" <= c <= "Z"


def _digit(c):
    return "0" <= c <= "9"


def _word_start(c):
    # Non-ASCII characters are word characters, as the Rust lexer's bytes >= 0x80 are.
    return _alpha(c) or c == "_" or c >= "\x80"


def _word_char(c, d):
    return _alpha(c) or _digit(c) or c == "_" or c >= "\x80" or (c == "$" and d.dollar_quotes)


class Token:
    __slots__ = ("kind", "text", "start", "end", "depth")

    def __init__(self, kind, text, start, end, depth):
        self.kind, self.text, self.start, self.end, self.depth = kind, text, start, end, depth

    def is_keyword(self, keyword):
        return self.kind == WORD and eq_ignore_ascii_case(self.text, keyword)

    def is_punct(self, c):
        return self.kind == PUNCT and self.text == c


def _skip_trivia(s, pos, d):
    n = len(s)
    while pos < n:
        c = s[pos]
        nxt = s[pos + 1] if pos + 1 < n else ""
        if c in _ASCII_WS:
            pos += 1
        elif (c == "-" and nxt == "-") or (c == "#" and d.hash_comments):
            nl = s.find("\n", pos)
            pos = n if nl < 0 else nl + 1
        elif c == "/" and nxt == "*":
            if d.executable_comments and s[pos + 2 : pos + 3] == "!":
                pos += 3
                while pos < n and _digit(s[pos]):
                    pos += 1
                continue
            pos = _block_comment_end(s, pos + 2, d)
        elif c == "*" and nxt == "/" and d.executable_comments:
            pos += 2
        else:
            return pos
    return pos


def _block_comment_end(s, i, d):
    n, level = len(s), 1
    while i < n:
        if s[i] == "*" and s[i + 1 : i + 2] == "/":
            level -= 1
            i += 2
            if level == 0:
                return i
        elif d.nested_comments and s[i] == "/" and s[i + 1 : i + 2] == "*":
            level += 1
            i += 2
        else:
            i += 1
    return n


def _quoted_end(s, open_, quote, backslash):
    n, i = len(s), open_ + 1
    while i < n:
        if backslash and s[i] == "\\":
            i += 2
        elif s[i] == quote:
            if s[i + 1 : i + 2] == quote:
                i += 2
            else:
                return i + 1
        else:
            i += 1
    return n


def _dollar_string_end(s, open_):
    n, i = len(s), open_ + 1
    if i < n and _word_start(s[i]):
        while i < n and (_alpha(s[i]) or _digit(s[i]) or s[i] == "_" or s[i] >= "\x80"):
            i += 1
    if s[i : i + 1] != "$":
        return None
    tag_ = s[open_ : i + 1]
    found = s.find(tag_, i + 1)
    return n if found < 0 else found + len(tag_)


def tokens(s, d):
    """A generator, like the Rust iterator: callers that stop early lex only what they read."""
    pos, depth, n = 0, 0, len(s)
    while True:
        pos = _skip_trivia(s, pos, d)
        if pos >= n:
            return
        start, c = pos, s[pos]
        tok_depth = depth
        if c == "'":
            kind, end = STRING, _quoted_end(s, start, "'", d.backslash_escapes)
        elif c in "\"`":
            kind, end = QUOTED_IDENT, _quoted_end(s, start, c, d.backslash_escapes)
        elif c == "$" and d.dollar_quotes:
            if start + 1 < n and _digit(s[start + 1]):
                end = start + 1
                while end < n and _digit(s[end]):
                    end += 1
                kind = NUMBER
            else:
                end = _dollar_string_end(s, start)
                kind = STRING
                if end is None:
                    kind, end = PUNCT, start + 1
        elif _word_start(c):
            if c in "eE" and s[start + 1 : start + 2] == "'":
                kind, end = STRING, _quoted_end(s, start + 1, "'", True)
            else:
                end = start + 1
                while end < n and _word_char(s[end], d):
                    end += 1
                kind = WORD
        elif _digit(c) or (c == "." and start + 1 < n and _digit(s[start + 1])):
            end = start + 1
            while end < n and (_alpha(s[end]) or _digit(s[end]) or s[end] in "_."):
                end += 1
            kind = NUMBER
        elif c == "(":
            depth += 1
            kind, end = PUNCT, start + 1
        elif c == ")":
            depth = max(depth - 1, 0)
            tok_depth = depth
            kind, end = PUNCT, start + 1
        else:
            kind, end = PUNCT, start + 1
        pos = end
        yield Token(kind, s[start:end], start, end, tok_depth)


def _trim_end(s):
    return s.rstrip(_WHITESPACE)


def append_limit(s, n, d):
    """`s` with `LIMIT n` appended (ClickHouse: before a trailing SETTINGS/FORMAT), or None
    when it is not one statement."""
    toks = list(tokens(s, d))
    last = next((i for i in range(len(toks) - 1, -1, -1) if not toks[i].is_punct(";")), None)
    if last is None or any(x.is_punct(";") for x in toks[:last]):
        return None
    end = toks[last].end
    insert_at = end
    if d.clickhouse_tail:
        def ident(x):
            return x.kind in (WORD, QUOTED_IDENT)

        if last >= 1 and toks[last - 1].depth == 0 and toks[last - 1].is_keyword("FORMAT") and ident(toks[last]):
            insert_at = toks[last - 1].start
        for i in range(1, max(last - 1, 0)):
            if toks[i].depth == 0 and toks[i].is_keyword("SETTINGS") and ident(toks[i + 1]) and toks[i + 2].is_punct("="):
                insert_at = min(insert_at, toks[i].start)
                break
    head = _trim_end(s[:insert_at])
    tail = s[insert_at:end]
    return f"{head} LIMIT {n}" if not tail else f"{head} LIMIT {n} {tail}"
