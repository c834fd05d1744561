//! Helpers on [`Query`]: predicates for common checks and `with_*` builders for tests.

use crate::sql::Dialect;
use crate::{Protocol, Query, QueryFlags, Route, StatementKind};

/// True when the table or function `name` from a query matches `pattern` from a configuration.
///
/// The comparison ignores ASCII case and quote characters (`"`, `` ` ``). An unqualified pattern
/// matches the last part of a qualified name, a qualified pattern matches the trailing parts:
/// `payroll` matches `payroll`, `hr.payroll` and `"HR"."Payroll"`; `hr.payroll` matches
/// `hr.payroll` and `db.hr.payroll` but not `payroll` or `other.payroll`. `*` matches anything.
pub fn name_matches(name: &str, pattern: &str) -> bool {
    matches_reversed(name.bytes().rev(), pattern)
}

/// [`name_matches`] for a name given by its bytes from the last one back (so that a schema and a
/// name can be compared as `schema.name` without joining them).
pub(crate) fn matches_reversed(name: impl Iterator<Item = u8>, pattern: &str) -> bool {
    let pattern = pattern.trim();
    if pattern == "*" {
        return true;
    }
    // Called for every table of every statement against every configured name: compare from
    // the end, skipping quote characters, instead of building unquoted copies (no allocation).
    // Bytes are enough: ASCII case folding never touches a multi-byte UTF-8 sequence, and a
    // UTF-8 pattern cannot match starting inside one of the name's characters.
    let is_quote = |b: &u8| *b == b'"' || *b == b'`';
    let mut name = name.filter(|b| !is_quote(b));
    for p in pattern.bytes().rev().filter(|b| !is_quote(b)) {
        match name.next() {
            Some(n) if n.eq_ignore_ascii_case(&p) => {}
            _ => return false,
        }
    }
    // The whole name, or a whole trailing part of it.
    matches!(name.next(), None | Some(b'.'))
}

impl StatementKind {
    /// The kind's name as in the WIT (`"read"`, `"ddl"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            StatementKind::Read => "read",
            StatementKind::Write => "write",
            StatementKind::Ddl => "ddl",
            StatementKind::Transaction => "transaction",
            StatementKind::Session => "session",
            StatementKind::Utility => "utility",
            StatementKind::Unknown => "unknown",
        }
    }
}

impl Protocol {
    /// The protocol's name as in the WIT (`"postgres"`, `"clickhouse-http"`, `"mysql"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Postgres => "postgres",
            Protocol::ClickhouseHttp => "clickhouse-http",
            Protocol::Mysql => "mysql",
        }
    }
}

impl Query {
    /// A query with the given text and kind and neutral everything else (PostgreSQL, no flags,
    /// no tables, empty user and database, outside a transaction). For tests; chain the
    /// `with_*` methods to fill in the rest.
    pub fn new(sql: impl Into<String>, kind: StatementKind) -> Query {
        Query {
            protocol: Protocol::Postgres,
            sql: sql.into(),
            fingerprint: 0,
            kind,
            flags: QueryFlags::empty(),
            tables_read: Vec::new(),
            tables_written: Vec::new(),
            functions: Vec::new(),
            user: String::new(),
            database: String::new(),
            client_addr: "127.0.0.1:50000".to_string(),
            in_transaction: false,
            statements: Vec::new(),
            attributes: Vec::new(),
        }
    }

    pub fn with_protocol(mut self, protocol: Protocol) -> Query {
        self.protocol = protocol;
        self
    }
    pub fn with_user(mut self, user: impl Into<String>) -> Query {
        self.user = user.into();
        self
    }
    pub fn with_database(mut self, database: impl Into<String>) -> Query {
        self.database = database.into();
        self
    }
    /// Adds flags (`QueryFlags::HAS_WHERE | QueryFlags::VOLATILE`).
    pub fn with_flags(mut self, flags: QueryFlags) -> Query {
        self.flags |= flags;
        self
    }
    pub fn with_tables_read<S: Into<String>>(
        mut self,
        tables: impl IntoIterator<Item = S>,
    ) -> Query {
        self.tables_read.extend(tables.into_iter().map(Into::into));
        self
    }
    pub fn with_tables_written<S: Into<String>>(
        mut self,
        tables: impl IntoIterator<Item = S>,
    ) -> Query {
        self.tables_written
            .extend(tables.into_iter().map(Into::into));
        self
    }
    pub fn with_functions<S: Into<String>>(
        mut self,
        functions: impl IntoIterator<Item = S>,
    ) -> Query {
        self.functions.extend(functions.into_iter().map(Into::into));
        self
    }
    pub fn with_attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Query {
        self.attributes.push((name.into(), value.into()));
        self
    }
    pub fn with_fingerprint(mut self, fingerprint: u64) -> Query {
        self.fingerprint = fingerprint;
        self
    }
    pub fn with_client_addr(mut self, addr: impl Into<String>) -> Query {
        self.client_addr = addr.into();
        self
    }
    /// Marks the query as sent inside an explicit transaction.
    pub fn inside_transaction(mut self) -> Query {
        self.in_transaction = true;
        self
    }

    /// Kind `read` (volatile reads included: they are still reads).
    pub fn is_read(&self) -> bool {
        self.kind == StatementKind::Read
    }
    /// Kind `write`.
    pub fn is_write(&self) -> bool {
        self.kind == StatementKind::Write
    }
    /// Kind `ddl`.
    pub fn is_ddl(&self) -> bool {
        self.kind == StatementKind::Ddl
    }
    /// Kind `unknown`: the host could not parse the statement.
    pub fn is_unknown(&self) -> bool {
        self.kind == StatementKind::Unknown
    }
    /// Calls a volatile function (`now()`, `random()`, ...).
    pub fn is_volatile(&self) -> bool {
        self.flags.contains(QueryFlags::VOLATILE)
    }
    /// An UPDATE/DELETE with a WHERE clause.
    pub fn has_where(&self) -> bool {
        self.flags.contains(QueryFlags::HAS_WHERE)
    }
    /// The outermost query has LIMIT / FETCH FIRST / TOP.
    pub fn has_limit(&self) -> bool {
        self.flags.contains(QueryFlags::HAS_LIMIT)
    }
    /// The text holds more than one statement.
    pub fn is_multi_statement(&self) -> bool {
        self.flags.contains(QueryFlags::MULTI_STATEMENT)
    }

    /// A read outside a transaction: what may go to a replica.
    pub fn is_replica_safe(&self) -> bool {
        self.is_read() && !self.in_transaction
    }
    /// A read that may be cached: not volatile, outside a transaction, a single statement.
    pub fn is_cacheable(&self) -> bool {
        self.is_replica_safe() && !self.is_volatile() && !self.is_multi_statement()
    }
    /// The built-in default route spelled out: [`Route::Replica`] for a read outside a
    /// transaction, [`Route::Primary`] for everything else (writes, DDL, unknown, anything in a
    /// transaction).
    pub fn read_write_route(&self) -> Route {
        if self.is_replica_safe() {
            Route::Replica
        } else {
            Route::Primary
        }
    }

    /// The value of a protocol attribute (`"startup.application_name"`, `"http.path"`, ...).
    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    /// The authenticated proxy user is `user`.
    pub fn user_is(&self, user: &str) -> bool {
        self.user == user
    }

    /// Every table the statement reads or writes (read ones first; a table both read and
    /// written appears twice).
    pub fn tables(&self) -> impl Iterator<Item = &str> {
        self.tables_read
            .iter()
            .chain(&self.tables_written)
            .map(String::as_str)
    }
    /// Reads a table matching `pattern` (see [`name_matches`]).
    pub fn reads_table(&self, pattern: &str) -> bool {
        self.tables_read.iter().any(|t| name_matches(t, pattern))
    }
    /// Writes a table matching `pattern` (see [`name_matches`]).
    pub fn writes_table(&self, pattern: &str) -> bool {
        self.tables_written.iter().any(|t| name_matches(t, pattern))
    }
    /// Reads or writes a table matching `pattern` (see [`name_matches`]).
    pub fn touches_table(&self, pattern: &str) -> bool {
        self.tables().any(|t| name_matches(t, pattern))
    }
    /// Calls a function matching `pattern` (see [`name_matches`]).
    pub fn calls_function(&self, pattern: &str) -> bool {
        self.functions.iter().any(|f| name_matches(f, pattern))
    }

    /// The lexical rules of the query's protocol, for [`crate::sql::append_limit`].
    pub fn dialect(&self) -> Dialect {
        Dialect::of(self.protocol)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_matching() {
        assert!(name_matches("payroll", "payroll"));
        assert!(name_matches("hr.payroll", "payroll"));
        assert!(name_matches("\"HR\".\"Payroll\"", "payroll"));
        assert!(name_matches("Payroll", "PAYROLL"));
        assert!(name_matches("hr.payroll", "hr.payroll"));
        assert!(name_matches("db.hr.payroll", "hr.payroll"));
        assert!(!name_matches("payroll", "hr.payroll"));
        assert!(!name_matches("other.payroll", "hr.payroll"));
        assert!(!name_matches("mypayroll", "payroll"));
        assert!(!name_matches("payroll_2024", "payroll"));
        assert!(name_matches("anything", "*"));
        assert!(name_matches("pg_catalog.pg_read_file", "pg_read_file"));
        assert!(!name_matches("ö", "x"));
        assert!(!name_matches("aö", "ö.x"));
        // Quotes are ignored on both sides, and before the dot that separates the parts.
        assert!(name_matches("hr.payroll", "\"HR\".\"PAYROLL\""));
        assert!(name_matches("\"db\".\"hr\".payroll", " `hr`.payroll "));
        assert!(!name_matches("\"my\"payroll", "payroll"));
        assert!(!name_matches("", "payroll"));
    }

    #[test]
    fn predicates() {
        let q = Query::new("/* x */ Select * FROM hr.payroll", StatementKind::Read)
            .with_tables_read(["hr.payroll"])
            .with_functions(["pg_sleep"])
            .with_attribute("startup.application_name", "billing")
            .with_user("alice");
        assert!(q.is_read() && q.is_replica_safe() && q.is_cacheable());
        assert_eq!(q.read_write_route(), Route::Replica);
        assert!(q.reads_table("payroll") && q.touches_table("hr.payroll"));
        assert!(!q.writes_table("payroll"));
        assert!(q.calls_function("PG_SLEEP"));
        assert_eq!(q.attribute("startup.application_name"), Some("billing"));
        assert_eq!(q.attribute("nope"), None);
        assert!(q.user_is("alice"));

        let q = q.with_flags(QueryFlags::VOLATILE);
        assert!(q.is_replica_safe() && !q.is_cacheable());
        let q = q.inside_transaction();
        assert_eq!(q.read_write_route(), Route::Primary);
        assert_eq!(
            Query::new("x", StatementKind::Unknown).read_write_route(),
            Route::Primary
        );
    }
}
