"""guard, in Python: the same rules, block reasons and rewrites as policies/guard (Rust).

Blocks DROP/TRUNCATE and UPDATE/DELETE without WHERE, enforces the per-user table and function
denylists (`deny_tables.<user>`, `deny_functions.<user>`, `*` for everyone), and adds
`LIMIT n` (`limit.<user>`, `limit.*`; 0 switches it off) to unbounded single SELECTs.
"""

import wit_world
from componentize_py_types import Err

import switchyard_policy as sp
from switchyard_policy import F, K

EVERYONE = "*"


class Guard:
    def __init__(self, config):
        config.ensure_known_keys(["deny_tables.*", "deny_functions.*", "limit.*"])

        def lists(prefix):
            return {user: sp.split_list(v) for user, v in config.entries_with_prefix(prefix)}

        self.deny_tables = lists("deny_tables.")
        self.deny_functions = lists("deny_functions.")
        self.limits = {u: config.get_u64("limit." + u) for u, _ in config.entries_with_prefix("limit.")}

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
        d = sp.dialect(q)
        # One statement the host parsed: its flags describe it. Otherwise look at each
        # statement of the text ourselves.
        parsed_single = not sp.has_flag(q, F.MULTI_STATEMENT) and q.kind != K.UNKNOWN
        stmts = [q.sql] if parsed_single else sp.statements(q.sql, d)
        for stmt in stmts:
            keyword = sp.sql_first_keyword(stmt, d) or ""
            keyword = keyword.translate(_UPPER)
            if keyword in ("DROP", "TRUNCATE") and q.kind in (K.DDL, K.UNKNOWN):
                return f"guard: {keyword} is not allowed"
            if (keyword in ("UPDATE", "DELETE") and parsed_single and sp.is_write(q)
                    and not sp.has_flag(q, F.HAS_WHERE)):
                return f"guard: {keyword} without WHERE is not allowed"
            hidden = sp.update_or_delete_without_where(stmt, d)
            if hidden is not None:
                return f"guard: {hidden.translate(_UPPER)} without WHERE is not allowed"
        for table in sp.tables(q):
            if self.denied(self.deny_tables, q.user, table):
                return f"guard: table {table} is denied for user {q.user}"
        for function in q.functions:
            if self.denied(self.deny_functions, q.user, function):
                return f"guard: function {function} is denied for user {q.user}"
        return None

    def limit_for(self, user):
        n = self.limits.get(user)
        if n is None:
            n = self.limits.get(EVERYONE)
        return n if n else None

    @staticmethod
    def denied(lists, user, name):
        return any(
            sp.name_matches(name, pattern)
            for u in (user, EVERYONE)
            for pattern in lists.get(u, ())
        )


_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def limited(q, n):
    select = sp.starts_with_keyword(q, "SELECT") or sp.starts_with_keyword(q, "WITH")
    if not sp.is_read(q) or sp.has_flag(q, F.HAS_LIMIT) or sp.has_flag(q, F.MULTI_STATEMENT) or not select:
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
