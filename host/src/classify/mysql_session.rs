//! What a MySQL statement does to the state of the server connection it runs on, for pooling in
//! transaction mode: settings that can be replayed on another connection, the default database,
//! and state that cannot be moved (user variables, temporary tables, named locks, LOCK TABLES,
//! SQL-level PREPARE, SQL_CALC_FOUND_ROWS, HANDLER, XA), which pins the client to its
//! connection. Token-based, so comments and string literals never trigger anything.

use super::lexer::{Lexer, Token, TokenKind, unquote};
use crate::model::Protocol;

/// The session effects of one SQL text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MysqlSessionEffects {
    /// Why the client must keep its server connection from now on.
    pub pin: Option<&'static str>,
    /// The text is made of session `SET`s only: replayable on another connection.
    pub setting: bool,
    /// `USE db`: the new default database.
    pub use_database: Option<String>,
    /// Calls LAST_INSERT_ID(): the connection must hold the session's value.
    pub reads_insert_id: bool,
    /// Calls ROW_COUNT() or FOUND_ROWS(): values of the connection's last statement.
    pub reads_last_counts: bool,
    /// `SQL_CALC_FOUND_ROWS`: the next FOUND_ROWS() is a count only the server knows.
    pub calc_found_rows: bool,
    /// `LOAD DATA LOCAL INFILE` / `LOAD XML LOCAL INFILE`: the server will ask the client for
    /// a file.
    pub loads_local_file: bool,
    /// `KILL [QUERY|CONNECTION] id`: server connection ids belong to whoever holds that
    /// connection now, not to the client.
    pub kills: bool,
}

/// Scans `sql` (MySQL dialect).
pub fn mysql_session_effects(sql: &str) -> MysqlSessionEffects {
    let mut effects = MysqlSessionEffects::default();
    let mut all_set = true;
    let mut any = false;
    let mut statement: Vec<Token<'_>> = Vec::with_capacity(16);
    let mut lexer = Lexer::new(Protocol::Mysql, sql);
    loop {
        let token = lexer.next();
        let end = match token {
            None => true,
            Some(t) => t.is_punct(b';'),
        };
        if let Some(t) = token
            && !end
        {
            statement.push(t);
            continue;
        }
        if !statement.is_empty() {
            any = true;
            if !scan_statement(&statement, &mut effects) {
                all_set = false;
            }
            statement.clear();
        }
        if token.is_none() {
            break;
        }
    }
    effects.setting = any && all_set && effects.pin.is_none();
    effects
}

/// Records one statement's effects; true when it is a replayable session `SET`.
fn scan_statement(tokens: &[Token<'_>], effects: &mut MysqlSessionEffects) -> bool {
    let word = |i: usize, w: &str| tokens.get(i).is_some_and(|t| t.is_word(w));
    let pin = |effects: &mut MysqlSessionEffects, reason: &'static str| {
        effects.pin.get_or_insert(reason);
    };
    for (i, t) in tokens.iter().enumerate() {
        if t.kind != TokenKind::Word {
            continue;
        }
        if is_user_variable(t.text) {
            pin(effects, "user variables");
        } else if t.is_word("get_lock") && tokens.get(i + 1).is_some_and(|n| n.is_punct(b'(')) {
            pin(effects, "GET_LOCK");
        } else if t.is_word("sql_calc_found_rows") {
            pin(effects, "SQL_CALC_FOUND_ROWS");
            effects.calc_found_rows = true;
        } else if super::mysql_last_counts::calls_last_counts(tokens, i) {
            effects.reads_last_counts = true;
        } else if t.is_word("last_insert_id") && tokens.get(i + 1).is_some_and(|n| n.is_punct(b'('))
        {
            effects.reads_insert_id = true;
        }
    }
    if word(0, "create") && (word(1, "temporary") || (word(1, "or") && word(3, "temporary"))) {
        pin(effects, "temporary tables");
    } else if word(0, "lock") && (word(1, "tables") || word(1, "table")) {
        pin(effects, "LOCK TABLES");
    } else if word(0, "flush") && tokens.iter().any(|t| t.is_word("lock")) {
        pin(effects, "FLUSH ... WITH READ LOCK");
    } else if word(0, "prepare") {
        pin(effects, "PREPARE");
    } else if word(0, "kill") {
        effects.kills = true;
    } else if word(0, "load") && (word(1, "data") || word(1, "xml")) {
        effects.loads_local_file = tokens
            .iter()
            .take_while(|t| !t.is_word("infile"))
            .any(|t| t.is_word("local"));
    } else if word(0, "handler") {
        pin(effects, "HANDLER");
    } else if word(0, "xa") {
        pin(effects, "XA transactions");
    } else if word(0, "use") {
        match tokens.get(1) {
            Some(db) if db.kind == TokenKind::QuotedIdent => {
                effects.use_database = Some(unquote(db.text).replace("``", "`"));
            }
            Some(db) if db.kind == TokenKind::Word => {
                effects.use_database = Some(db.text.to_owned());
            }
            _ => {}
        }
    } else if word(0, "set") {
        // SET TRANSACTION (without SESSION) shapes the next transaction only, on the
        // connection it runs on.
        if word(1, "transaction") {
            pin(effects, "SET TRANSACTION");
            return false;
        }
        let global = tokens.iter().any(|t| {
            t.is_word("global")
                || t.is_word("persist")
                || t.is_word("persist_only")
                || (t.kind == TokenKind::Word
                    && t.text.len() >= 8
                    && t.text.is_char_boundary(8)
                    && t.text[..8].eq_ignore_ascii_case("@@global"))
        });
        return !global && effects.pin.is_none();
    }
    false
}

/// `@name` (a user variable), not `@@name` (a system variable).
fn is_user_variable(text: &str) -> bool {
    text.starts_with('@') && !text.starts_with("@@")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_sets_are_replayable_and_global_ones_are_not() {
        for sql in [
            "SET NAMES utf8mb4",
            "SET autocommit = 0",
            "SET SESSION sql_mode = 'ANSI'",
            "set @@session.time_zone = '+00:00'; SET @@wait_timeout = 60",
        ] {
            let e = mysql_session_effects(sql);
            assert!(e.setting, "{sql}");
            assert_eq!(e.pin, None, "{sql}");
        }
        assert!(!mysql_session_effects("SET GLOBAL max_connections = 10").setting);
        assert!(!mysql_session_effects("SET @@global.read_only = 1").setting);
        assert!(!mysql_session_effects("SET NAMES utf8mb4; SELECT 1").setting);
    }

    #[test]
    fn unmovable_state_pins() {
        let pin = |sql: &str| mysql_session_effects(sql).pin;
        assert_eq!(pin("SET @a = 1"), Some("user variables"));
        assert_eq!(pin("SELECT @a := id FROM t"), Some("user variables"));
        assert_eq!(
            pin("CREATE TEMPORARY TABLE t (id int)"),
            Some("temporary tables")
        );
        assert_eq!(pin("SELECT GET_LOCK('x', 1)"), Some("GET_LOCK"));
        assert_eq!(pin("LOCK TABLES t READ"), Some("LOCK TABLES"));
        assert_eq!(pin("PREPARE s FROM 'SELECT 1'"), Some("PREPARE"));
        assert_eq!(
            pin("SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 1"),
            Some("SQL_CALC_FOUND_ROWS")
        );
        assert_eq!(
            pin("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"),
            Some("SET TRANSACTION")
        );
        assert_eq!(pin("SELECT @@version, '@a' /* @b */"), None);
        assert_eq!(pin("SELECT get_lock FROM t"), None);
    }

    #[test]
    fn kill_is_recognised() {
        assert!(mysql_session_effects("KILL QUERY 12").kills);
        assert!(mysql_session_effects("/* x */ kill 12").kills);
        assert!(!mysql_session_effects("SELECT 'kill 12'").kills);
    }

    #[test]
    fn use_names_the_database() {
        assert_eq!(
            mysql_session_effects("USE shop").use_database.as_deref(),
            Some("shop")
        );
        assert_eq!(
            mysql_session_effects("use `my db`").use_database.as_deref(),
            Some("my db")
        );
        assert!(mysql_session_effects("SELECT LAST_INSERT_ID()").reads_insert_id);
        assert!(mysql_session_effects("SELECT ROW_COUNT()").reads_last_counts);
        let local = |sql: &str| mysql_session_effects(sql).loads_local_file;
        assert!(local("LOAD DATA LOCAL INFILE '/tmp/x' INTO TABLE t"));
        assert!(local(
            "load data low_priority local infile 'x' into table t"
        ));
        assert!(local("LOAD XML LOCAL INFILE 'x' INTO TABLE t"));
        assert!(!local("LOAD DATA INFILE '/tmp/local' INTO TABLE t"));
        assert!(!mysql_session_effects("SELECT row_count FROM t").reads_last_counts);
    }
}
