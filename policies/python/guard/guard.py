"""guard, in Python: the same rules, block reasons and rewrites as policies/guard (Rust).

Judges only the host's per-statement facts (`q.statements`), never the SQL text: blocks
denied commands (`deny_commands.<user>`, `deny_commands.*`, else DROP *, TRUNCATE TABLE, DO) in
statements that run now or at a later EXECUTE, statements that did not parse (`unknown =
"block"`, the default), UPDATE/DELETE without WHERE at any depth that runs, and names on
the per-user table and function denylists (`deny_tables.<user>`, `deny_functions.<user>`, `*` for
everyone) in any statement; adds `LIMIT n` (`limit.<user>`, `limit.*`; 0 switches it off) to a
single unbounded SELECT.
"""

import wit_world
from componentize_py_types import Err

import switchyard_policy as sp
from switchyard_policy import K

EVERYONE = "*"
DEFAULT_DENY_COMMANDS = "DROP *,TRUNCATE TABLE,DO"
UNPARSED = 'guard: a statement that could not be parsed is blocked (unknown = "block")'


class Guard:
    def __init__(self, config):
        config.ensure_known_keys(["deny_commands.*", "unknown", "deny_tables.*", "deny_functions.*", "limit.*"])

        def lists(prefix):
            return {user: sp.split_list(v) for user, v in config.entries_with_prefix(prefix)}

        unknown = config.get("unknown")
        if unknown not in (None, "block", "allow"):
            raise sp.ConfigError("unknown", f"expected `block` or `allow`, got `{unknown}`")
        self.allow_unknown = unknown == "allow"
        limits = {}
        for u, _ in config.entries_with_prefix("limit."):
            limits[u] = config.get_u64("limit." + u)
        self.deny_commands = lists("deny_commands.")
        self.default_deny_commands = sp.split_list(DEFAULT_DENY_COMMANDS)
        self.deny_tables = lists("deny_tables.")
        self.deny_functions = lists("deny_functions.")
        self.limits = limits

    def on_query(self, q):
        decision = sp.forward(sp.read_write_route(q))
        reason = self.refusal(q)
        if reason is not None:
            return sp.block(decision, reason)
        n = self.limit_for(q.user)
        if n:
            sql = limited(q, n)
            if sql is not None:
                return sp.tag(sp.rewrite(decision, sql), "guard", "limit")
        return decision

    def refusal(self, q):
        denied = self.denied_commands(q.user)
        for s in sp.statements_that_run(q):
            if any(sp.command_matches(s.command, p) for p in denied):
                return f"guard: {s.command} is not allowed"
        unparsed = any(not s.parsed for s in q.statements) or (not q.statements and q.kind == K.UNKNOWN)
        if unparsed and not self.allow_unknown:
            return UNPARSED
        for s in sp.statements_that_run(q):
            if sp.changes_every_row(s):
                return f"guard: {s.command} without WHERE is not allowed"
        table = first_denied(self.deny_tables, q, sp.relations)
        if table is not None:
            return f"guard: table {sp.qualified_name(table)} is denied for user {q.user}"
        function = first_denied(self.deny_functions, q, sp.routines)
        if function is not None:
            return f"guard: function {sp.qualified_name(function)} is denied for user {q.user}"
        return None

    def denied_commands(self, user):
        if user in self.deny_commands:
            return self.deny_commands[user]
        return self.deny_commands.get(EVERYONE, self.default_deny_commands)

    def limit_for(self, user):
        n = self.limits.get(user)
        if n is None:
            n = self.limits.get(EVERYONE)
        return n if n else None


def first_denied(lists, q, objects):
    patterns = list(lists.get(q.user, ())) + list(lists.get(EVERYONE, ()))
    if not patterns:
        return None
    for s in q.statements:
        for o in objects(s):
            if any(sp.object_matches(o, p) for p in patterns):
                return o
    return None


def limited(q, n):
    if len(q.statements) != 1:
        return None
    s = q.statements[0]
    if not sp.is_read(q) or not sp.statement_is(s, "SELECT") or not s.parsed or not s.runs or s.has_limit:
        return None
    return sp.append_limit(q.sql, n, sp.dialect(q))


# One Guard per Wasm instance: the host calls init once, then on_query per statement.
_policy = None


class WitWorld(wit_world.WitWorld):
    def init(self, config):
        global _policy
        try:
            _policy = Guard(sp.Config(config))
        except sp.ConfigError as e:
            raise Err(str(e))

    def on_query(self, q):
        return _policy.on_query(q)
