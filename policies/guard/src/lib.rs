//! `guard`: refuses dangerous statements, enforces per-user denylists and bounds unbounded
//! SELECTs. Everything it lets through is routed like `rw-split`.
//!
//! It judges only the host's per-statement facts (`Query::statements`), never the SQL text: a
//! leading `;`, a comment or odd quoting cannot hide a statement from the host's parser, while
//! they easily hide one from a policy that re-reads the text. Rules, in order (the first that
//! applies wins; its reason is the client's error):
//!
//! 1. **Denied commands** — a statement that runs (now, or at a later `EXECUTE`: the body of a
//!    `PREPARE` counts, a PREPARE of a DROP is a DROP; what a plain `EXPLAIN` contains does not)
//!    whose command matches the user's deny list: `guard: DROP TABLE is not allowed`. The host
//!    names the command from its leading keywords also when it cannot parse the rest (`DO`).
//! 2. **Unparsed** — a statement the host could not parse is blocked while `unknown = "block"`
//!    (the default): `guard: a statement that could not be parsed is blocked (unknown =
//!    "block")`. With `unknown = "allow"` it is judged by the rules below on what the host
//!    guessed from its tokens (its leading keywords, names after FROM/JOIN/INTO/UPDATE/TABLE).
//! 3. **UPDATE / DELETE without WHERE**, at any depth that runs (a writable CTE, `EXPLAIN
//!    ANALYZE`, a PREPARE's body): `guard: DELETE without WHERE is not allowed`.
//! 4. **Denied tables** — any statement (also one that does not run) naming a table, view or
//!    relation that matches `deny_tables.<user>` or `deny_tables.*`, guessed names included:
//!    `guard: table payroll is denied for user alice`.
//! 5. **Denied functions** — likewise functions and procedures, `deny_functions.<user>` /
//!    `deny_functions.*`: `guard: function pg_sleep is denied for user alice`.
//! 6. **LIMIT** — with `limit.<user> = "n"` (or `limit.*`), a text that is one parsed SELECT
//!    that runs, has no LIMIT and is a read gets `LIMIT n` appended (ClickHouse: before a
//!    trailing `SETTINGS`/`FORMAT` clause), tagged `guard=limit`.
//!
//! `EXECUTE name` is not judged: the host does not see the statement it runs. It was judged when
//! it was prepared with SQL `PREPARE` (a PREPARE of a refused statement is refused, so no such
//! EXECUTE can exist); statements prepared with the extended protocol's Parse are judged at Parse.
//!
//! Config keys (anything else is refused, so a typo cannot silently disable a rule):
//!
//! | key | value | meaning |
//! |-----|-------|---------|
//! | `deny_commands.<user>` | `"DROP *,TRUNCATE TABLE,DO"` | commands `<user>` may not run (`DROP *`: every command starting with DROP); `*`: everyone. A user's own list replaces `*`'s; without either, [`DEFAULT_DENY_COMMANDS`]; `""`: none |
//! | `unknown` | `"block"` / `"allow"` | what to do with a statement that did not parse (default `block`) |
//! | `deny_tables.<user>` | `"payroll,secrets.keys"` | tables `<user>` may not name; `<user>` = `*`: everyone |
//! | `deny_functions.<user>` | `"pg_read_file,pg_sleep"` | functions and procedures `<user>` may not call; `*`: everyone |
//! | `limit.<user>` | `"1000"` | add `LIMIT 1000` to `<user>`'s unbounded SELECTs; `*`: everyone; `0`: never (overrides `*`) |

mod rules;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use switchyard_policy::{Config, Decision, Policy, Query, split_list};

/// Commands refused when no `deny_commands` key applies: whatever drops or empties objects, and
/// `DO`, whose body is code the host cannot see into (it could do anything the rules forbid).
pub const DEFAULT_DENY_COMMANDS: &str = "DROP *,TRUNCATE TABLE,DO";

const EVERYONE: &str = "*";

/// Per-user rules; the `*` entry applies to everyone.
#[derive(Debug)]
pub struct Guard {
    deny_commands: BTreeMap<String, Vec<String>>,
    default_deny_commands: Vec<String>,
    allow_unknown: bool,
    deny_tables: BTreeMap<String, Vec<String>>,
    deny_functions: BTreeMap<String, Vec<String>>,
    limits: BTreeMap<String, u64>,
}

impl Policy for Guard {
    fn init(config: Config) -> Result<Self, String> {
        config.ensure_known_keys(&[
            "deny_commands.*",
            "unknown",
            "deny_tables.*",
            "deny_functions.*",
            "limit.*",
        ])?;
        let lists = |prefix: &str| -> BTreeMap<String, Vec<String>> {
            config
                .entries_with_prefix(prefix)
                .map(|(user, v)| (user.to_string(), to_strings(v)))
                .collect()
        };
        let allow_unknown = match config.get("unknown") {
            None | Some("block") => false,
            Some("allow") => true,
            Some(other) => {
                return Err(format!(
                    "config key `unknown`: expected `block` or `allow`, got `{other}`"
                ));
            }
        };
        let mut limits = BTreeMap::new();
        for (user, _) in config.entries_with_prefix("limit.") {
            let n = config.get_u64(&format!("limit.{user}"))?.unwrap_or(0);
            limits.insert(user.to_string(), n);
        }
        Ok(Guard {
            deny_commands: lists("deny_commands."),
            default_deny_commands: to_strings(DEFAULT_DENY_COMMANDS),
            allow_unknown,
            deny_tables: lists("deny_tables."),
            deny_functions: lists("deny_functions."),
            limits,
        })
    }

    fn on_query(&self, q: &Query) -> Decision {
        let decision = Decision::forward().read_write_split(q);
        if let Some(reason) = self.refusal(q) {
            return decision.block(reason);
        }
        if let Some(n) = self.limit_for(&q.user)
            && let Some(sql) = rules::limited(q, n)
        {
            return decision.rewrite(sql).tag("guard", "limit");
        }
        decision
    }
}

impl Guard {
    /// The commands `user` may not run: the user's own list, else everyone's, else the default.
    fn denied_commands(&self, user: &str) -> &[String] {
        self.deny_commands
            .get(user)
            .or_else(|| self.deny_commands.get(EVERYONE))
            .unwrap_or(&self.default_deny_commands)
    }

    /// The LIMIT to add to `user`'s unbounded SELECTs: the user's own `limit.<user>`, else
    /// `limit.*`; none when unset or 0.
    fn limit_for(&self, user: &str) -> Option<u64> {
        self.limits
            .get(user)
            .or_else(|| self.limits.get(EVERYONE))
            .copied()
            .filter(|n| *n > 0)
    }
}

fn to_strings(list: &str) -> Vec<String> {
    split_list(list).into_iter().map(str::to_string).collect()
}

switchyard_policy::export!(Guard);
