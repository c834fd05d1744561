//! Command bytes (the first payload byte of every client packet after the handshake), and what
//! answer each one gets.

use super::response::Answer;

pub const COM_QUIT: u8 = 0x01;
pub const COM_INIT_DB: u8 = 0x02;
pub const COM_QUERY: u8 = 0x03;
pub const COM_FIELD_LIST: u8 = 0x04;
pub const COM_STATISTICS: u8 = 0x09;
pub const COM_PROCESS_KILL: u8 = 0x0C;
pub const COM_PING: u8 = 0x0E;
pub const COM_CHANGE_USER: u8 = 0x11;
pub const COM_STMT_PREPARE: u8 = 0x16;
pub const COM_STMT_EXECUTE: u8 = 0x17;
pub const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
pub const COM_STMT_CLOSE: u8 = 0x19;
pub const COM_STMT_RESET: u8 = 0x1A;
pub const COM_SET_OPTION: u8 = 0x1B;
pub const COM_STMT_FETCH: u8 = 0x1C;
pub const COM_RESET_CONNECTION: u8 = 0x1F;

/// How the proxy treats a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// Relayed to the server; the server answers as `Answer` says.
    Relay(Answer),
    /// Relayed; the server sends nothing back (COM_STMT_CLOSE, COM_STMT_SEND_LONG_DATA).
    NoAnswer,
    /// Refused with an ERR naming the command (replication, shutdown, debugging, ...): a pooled
    /// connection is no place for them.
    Refused(&'static str),
}

/// What the proxy does with command `byte` (COM_QUERY, COM_QUIT, COM_PING, COM_INIT_DB,
/// COM_RESET_CONNECTION, COM_CHANGE_USER and the statement commands are handled by the session
/// before asking).
pub fn handling(byte: u8) -> Handling {
    match byte {
        COM_QUERY | COM_STMT_EXECUTE => Handling::Relay(Answer::ResultSets),
        COM_STMT_FETCH => Handling::Relay(Answer::Rows),
        COM_STMT_PREPARE => Handling::Relay(Answer::Prepare),
        COM_FIELD_LIST => Handling::Relay(Answer::Fields),
        COM_STATISTICS | COM_PING | COM_INIT_DB | COM_STMT_RESET | COM_SET_OPTION
        | COM_RESET_CONNECTION => Handling::Relay(Answer::Single),
        COM_STMT_CLOSE | COM_STMT_SEND_LONG_DATA => Handling::NoAnswer,
        0x00 => Handling::Refused("COM_SLEEP"),
        0x05 => Handling::Refused("COM_CREATE_DB"),
        0x06 => Handling::Refused("COM_DROP_DB"),
        0x07 => Handling::Refused("COM_REFRESH"),
        0x08 => Handling::Refused("COM_SHUTDOWN"),
        0x0A => Handling::Refused("COM_PROCESS_INFO"),
        0x0B => Handling::Refused("COM_CONNECT"),
        COM_PROCESS_KILL => Handling::Refused(
            "COM_PROCESS_KILL (use KILL QUERY through the proxy's own connection ids)",
        ),
        0x0D => Handling::Refused("COM_DEBUG"),
        0x0F => Handling::Refused("COM_TIME"),
        0x10 => Handling::Refused("COM_DELAYED_INSERT"),
        0x12 => Handling::Refused("COM_BINLOG_DUMP"),
        0x13 => Handling::Refused("COM_TABLE_DUMP"),
        0x14 => Handling::Refused("COM_CONNECT_OUT"),
        0x15 => Handling::Refused("COM_REGISTER_SLAVE"),
        0x1D => Handling::Refused("COM_DAEMON"),
        0x1E => Handling::Refused("COM_BINLOG_DUMP_GTID"),
        _ => Handling::Refused("an unknown command"),
    }
}
