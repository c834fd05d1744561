//! The packets the proxy writes itself (OK, ERR) and the tracking of a server's answer to one
//! command: where it ends, and the status flags it ends with (in a transaction or not).
//!
//! Server connections are opened without `CLIENT_DEPRECATE_EOF` and without
//! `CLIENT_SESSION_TRACK`, and clients are not offered either, so answers are relayed frame by
//! frame without translation: a result set ends with an EOF packet (`0xFE`, payload shorter
//! than 9 bytes), every other answer is one OK or ERR packet, except a request for the client's
//! local file (`0xFB`), after which the client's file frames go to the server before its OK or
//! ERR. Servers are asked for `CLIENT_LOCAL_FILES`; clients are offered it only where a listener
//! allows it, and a client that has not negotiated it never gets to send such a statement.

use bytes::BytesMut;

use super::packet::{Frame, put_frame};
use super::{CapabilityFlags, StatusFlags};

/// `ER_UNKNOWN_COM_ERROR`.
pub const ER_UNKNOWN_COM_ERROR: u16 = 1047;
/// `ER_ACCESS_DENIED_ERROR`.
pub const ER_ACCESS_DENIED_ERROR: u16 = 1045;
/// `ER_DBACCESS_DENIED_ERROR`.
pub const ER_DBACCESS_DENIED_ERROR: u16 = 1044;
/// `ER_BAD_DB_ERROR`.
pub const ER_BAD_DB_ERROR: u16 = 1049;
/// `ER_TABLEACCESS_DENIED_ERROR`: what a blocked statement gets.
pub const ER_TABLEACCESS_DENIED_ERROR: u16 = 1142;
/// `ER_SPECIFIC_ACCESS_DENIED_ERROR`.
pub const ER_SPECIFIC_ACCESS_DENIED_ERROR: u16 = 1227;
/// `ER_CON_COUNT_ERROR`.
pub const ER_CON_COUNT_ERROR: u16 = 1040;
/// `ER_TOO_MANY_USER_CONNECTIONS`.
pub const ER_TOO_MANY_USER_CONNECTIONS: u16 = 1203;
/// `ER_LOAD_INFILE_CAPABILITY_DISABLED` (MariaDB): LOAD DATA LOCAL without the capability.
pub const ER_LOAD_INFILE_CAPABILITY_DISABLED: u16 = 4166;
/// `ER_NET_PACKET_TOO_LARGE`.
pub const ER_NET_PACKET_TOO_LARGE: u16 = 1153;
/// `ER_NET_PACKETS_OUT_OF_ORDER`.
pub const ER_NET_PACKETS_OUT_OF_ORDER: u16 = 1156;
/// `ER_HANDSHAKE_ERROR`.
pub const ER_HANDSHAKE_ERROR: u16 = 1043;
/// `ER_NOT_SUPPORTED_YET`.
pub const ER_NOT_SUPPORTED_YET: u16 = 1235;
/// `ER_PARSE_ERROR`.
pub const ER_PARSE_ERROR: u16 = 1064;
/// `ER_QUERY_INTERRUPTED`.
pub const ER_QUERY_INTERRUPTED: u16 = 1317;
/// `ER_LOCK_WAIT_TIMEOUT`: what a client gets when no server connection came in time.
pub const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;
/// `ER_SERVER_SHUTDOWN`.
pub const ER_SERVER_SHUTDOWN: u16 = 1053;
/// `CR_SERVER_LOST`-like: the server connection broke while the client waited.
pub const ER_CONNECTION_KILLED: u16 = 1927;
/// `ER_USER_LIMIT_REACHED`.
pub const ER_USER_LIMIT_REACHED: u16 = 1226;

/// A MySQL error as the proxy reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MyError {
    pub code: u16,
    pub state: [u8; 5],
    pub message: String,
}

impl MyError {
    pub fn new(code: u16, state: &str, message: impl Into<String>) -> Self {
        let mut s = *b"HY000";
        if state.len() == 5 {
            s.copy_from_slice(state.as_bytes());
        }
        MyError {
            code,
            state: s,
            message: message.into(),
        }
    }

    /// The ERR packet's payload (protocol 4.1: with the SQL state).
    pub fn payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + self.message.len());
        out.push(0xFF);
        out.extend_from_slice(&self.code.to_le_bytes());
        out.push(b'#');
        out.extend_from_slice(&self.state);
        out.extend_from_slice(self.message.as_bytes());
        out
    }

    /// Appends the ERR packet with `seq`.
    pub fn put(&self, out: &mut BytesMut, seq: u8) {
        put_frame(out, seq, &self.payload());
    }

    /// Parses an ERR packet's payload.
    pub fn parse(payload: &[u8]) -> Option<MyError> {
        if payload.first() != Some(&0xFF) || payload.len() < 3 {
            return None;
        }
        let code = u16::from_le_bytes([payload[1], payload[2]]);
        let (state, message) = if payload.get(3) == Some(&b'#') && payload.len() >= 9 {
            let mut s = [0u8; 5];
            s.copy_from_slice(&payload[4..9]);
            (s, &payload[9..])
        } else {
            (*b"HY000", &payload[3..])
        };
        Some(MyError {
            code,
            state,
            message: String::from_utf8_lossy(message).into_owned(),
        })
    }
}

impl std::fmt::Display for MyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ERROR {} ({}): {}",
            self.code,
            String::from_utf8_lossy(&self.state),
            self.message
        )
    }
}

/// Appends an OK packet (no rows affected) with `status`.
pub fn put_ok(out: &mut BytesMut, seq: u8, status: StatusFlags) {
    let s = status.bits().to_le_bytes();
    put_frame(out, seq, &[0x00, 0, 0, s[0], s[1], 0, 0]);
}

/// Reads a length-encoded integer at the front of `buf`: (value, bytes used).
pub fn lenenc_int(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let take = |n: usize| -> Option<(u64, usize)> {
        let bytes = buf.get(1..=n)?;
        let mut v = 0u64;
        for (i, b) in bytes.iter().enumerate() {
            v |= u64::from(*b) << (8 * i);
        }
        Some((v, n + 1))
    };
    match first {
        0..=0xFA => Some((u64::from(first), 1)),
        0xFC => take(2),
        0xFD => take(3),
        0xFE => take(8),
        _ => None,
    }
}

/// What an OK packet says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OkInfo {
    pub affected_rows: u64,
    pub last_insert_id: u64,
    pub status: u16,
    pub warnings: u16,
}

/// Parses an OK packet's payload (header `0x00`, protocol 4.1, no session tracking).
pub fn parse_ok(payload: &[u8]) -> Option<OkInfo> {
    if payload.first() != Some(&0x00) {
        return None;
    }
    let (affected_rows, a) = lenenc_int(&payload[1..])?;
    let (last_insert_id, b) = lenenc_int(&payload[1 + a..])?;
    let at = 1 + a + b;
    let status = u16::from_le_bytes([*payload.get(at)?, *payload.get(at + 1)?]);
    let warnings = u16::from_le_bytes([*payload.get(at + 2)?, *payload.get(at + 3)?]);
    Some(OkInfo {
        affected_rows,
        last_insert_id,
        status,
        warnings,
    })
}

/// Whether `payload` is an EOF packet (as opposed to a row that starts with `0xFE`).
pub fn is_eof(payload: &[u8]) -> bool {
    payload.first() == Some(&0xFE) && payload.len() < 9
}

/// The status flags of an EOF packet.
fn eof_status(payload: &[u8]) -> u16 {
    match (payload.get(3), payload.get(4)) {
        (Some(a), Some(b)) => u16::from_le_bytes([*a, *b]),
        _ => 0,
    }
}

/// What kind of answer a command gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// OK, ERR, or result sets (COM_QUERY, COM_STMT_EXECUTE).
    ResultSets,
    /// Rows until EOF (COM_STMT_FETCH).
    Rows,
    /// COM_STMT_PREPARE's OK with parameter and column definitions.
    Prepare,
    /// Column definitions until EOF (COM_FIELD_LIST).
    Fields,
    /// One packet, whatever it holds (COM_STATISTICS, COM_PING, COM_INIT_DB, ...).
    Single,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Start,
    Columns(u64),
    ColumnsEof,
    Rows,
    PrepareDefs {
        params: u64,
        columns: u64,
    },
    PrepareEof {
        columns: u64,
    },
    Fields,
    /// The server asked for a local file (LOAD DATA LOCAL INFILE): the client's file frames
    /// go to the server, then its OK or ERR follows.
    LocalFile,
    Done,
}

/// Follows a server's answer to one command, frame by frame.
#[derive(Debug, Clone)]
pub struct AnswerTracker {
    state: State,
    answer: Answer,
    /// The previous frame was a full 16 MiB frame: this one continues its packet.
    continuation: bool,
    status: u16,
    /// The last OK packet of the answer, when it ended with one.
    pub ok: Option<OkInfo>,
    /// The ERR that ended the answer.
    pub error: bool,
    /// Rows of the answer's last result set (FOUND_ROWS()).
    pub rows: u64,
    /// The answer ended with a result set rather than an OK (ROW_COUNT() is then -1).
    pub ended_with_rows: bool,
}

impl AnswerTracker {
    pub fn new(answer: Answer) -> Self {
        AnswerTracker {
            state: match answer {
                Answer::Rows => State::Rows,
                Answer::Fields => State::Fields,
                _ => State::Start,
            },
            answer,
            continuation: false,
            status: 0,
            ok: None,
            error: false,
            rows: 0,
            ended_with_rows: false,
        }
    }

    /// Whether the answer is complete.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// The status flags the answer ended with (or the last seen so far).
    pub fn status(&self) -> StatusFlags {
        StatusFlags::from_bits_truncate(self.status)
    }

    /// Whether the server is inside a transaction after the answer.
    pub fn in_transaction(&self) -> bool {
        self.status().contains(StatusFlags::SERVER_STATUS_IN_TRANS)
    }

    /// Takes in the next frame of the answer.
    pub fn step(&mut self, frame: &Frame) {
        self.step_payload(frame.payload());
    }

    /// Takes in the payload of the next frame (a frame's bytes after its 4-byte header).
    pub fn step_payload(&mut self, p: &[u8]) {
        let continues = p.len() == crate::mysql::packet::MAX_FRAME_PAYLOAD;
        if std::mem::replace(&mut self.continuation, continues) {
            return;
        }
        let kind = p.first().copied().unwrap_or(0);
        self.state = match self.state {
            State::Start => match (self.answer, kind) {
                (Answer::Single, _) => {
                    self.ended_by(p);
                    State::Done
                }
                (_, 0x00) => match self.answer {
                    Answer::Prepare => {
                        let u = |i: usize| {
                            u64::from(u16::from_le_bytes([
                                p.get(i).copied().unwrap_or(0),
                                p.get(i + 1).copied().unwrap_or(0),
                            ]))
                        };
                        let (columns, params) = (u(5), u(7));
                        if params > 0 {
                            State::PrepareDefs { params, columns }
                        } else if columns > 0 {
                            State::PrepareDefs {
                                params: columns,
                                columns: 0,
                            }
                        } else {
                            State::Done
                        }
                    }
                    _ => self.after_ok(p),
                },
                (_, 0xFF) => {
                    self.error = true;
                    State::Done
                }
                (_, 0xFB) => State::LocalFile,
                _ => match lenenc_int(p) {
                    Some((n, _)) if n > 0 => {
                        self.rows = 0;
                        State::Columns(n)
                    }
                    // 0xFB (LOCAL INFILE) is never asked for: LOCAL_FILES is not negotiated.
                    _ => {
                        self.error = true;
                        State::Done
                    }
                },
            },
            State::Columns(n) => {
                if n > 1 {
                    State::Columns(n - 1)
                } else {
                    State::ColumnsEof
                }
            }
            State::ColumnsEof => {
                let status = eof_status(p);
                self.status = status;
                // A cursor was opened (COM_STMT_EXECUTE): rows come with COM_STMT_FETCH.
                if StatusFlags::from_bits_truncate(status)
                    .contains(StatusFlags::SERVER_STATUS_CURSOR_EXISTS)
                {
                    State::Done
                } else {
                    State::Rows
                }
            }
            State::Rows => {
                if kind == 0xFF {
                    self.error = true;
                    State::Done
                } else if is_eof(p) {
                    self.status = eof_status(p);
                    self.ended_with_rows = true;
                    self.more_or_done()
                } else {
                    self.rows += 1;
                    State::Rows
                }
            }
            State::PrepareDefs { params, columns } => {
                if params > 1 {
                    State::PrepareDefs {
                        params: params - 1,
                        columns,
                    }
                } else {
                    State::PrepareEof { columns }
                }
            }
            State::PrepareEof { columns } => {
                if columns > 0 {
                    State::PrepareDefs {
                        params: columns,
                        columns: 0,
                    }
                } else {
                    State::Done
                }
            }
            State::Fields => {
                if kind == 0xFF {
                    self.error = true;
                    State::Done
                } else if is_eof(p) {
                    self.status = eof_status(p);
                    State::Done
                } else {
                    State::Fields
                }
            }
            // Nothing the server sends comes before the file is sent (`file_sent`).
            State::LocalFile => State::LocalFile,
            State::Done => State::Done,
        };
    }

    /// The server asked for the client's local file (a LOAD DATA LOCAL INFILE request).
    pub fn wants_file(&self) -> bool {
        self.state == State::LocalFile
    }

    /// The file went to the server (ending with an empty packet): its OK or ERR comes next.
    pub fn file_sent(&mut self) {
        if self.state == State::LocalFile {
            self.state = State::Start;
        }
    }

    fn ended_by(&mut self, p: &[u8]) {
        match p.first() {
            Some(0x00) => {
                if let Some(ok) = parse_ok(p) {
                    self.status = ok.status;
                    self.ok = Some(ok);
                }
            }
            Some(0xFF) => self.error = true,
            Some(0xFE) if is_eof(p) => self.status = eof_status(p),
            _ => {}
        }
    }

    fn after_ok(&mut self, p: &[u8]) -> State {
        self.ended_with_rows = false;
        if let Some(ok) = parse_ok(p) {
            self.status = ok.status;
            self.ok = Some(ok);
        }
        self.more_or_done()
    }

    fn more_or_done(&self) -> State {
        if self
            .status()
            .contains(StatusFlags::SERVER_MORE_RESULTS_EXISTS)
        {
            State::Start
        } else {
            State::Done
        }
    }
}

/// Follows a whole recorded answer (frames back to back, as the cache keeps them).
pub fn track_recorded(answer: Answer, mut frames: &[u8]) -> AnswerTracker {
    let mut tracker = AnswerTracker::new(answer);
    while frames.len() >= 4 && !tracker.done() {
        let len =
            usize::from(frames[0]) | usize::from(frames[1]) << 8 | usize::from(frames[2]) << 16;
        let Some(payload) = frames.get(4..4 + len) else {
            break;
        };
        tracker.step_payload(payload);
        frames = &frames[4 + len..];
    }
    tracker
}

/// The capabilities offered to clients and asked of servers: protocol 4.1 with plugin auth,
/// multi-statements and multi-results; no EOF deprecation, session tracking, compression, or
/// LOCAL INFILE (see the module comment).
pub fn proxy_capabilities() -> CapabilityFlags {
    CapabilityFlags::CLIENT_LONG_PASSWORD
        | CapabilityFlags::CLIENT_FOUND_ROWS
        | CapabilityFlags::CLIENT_LONG_FLAG
        | CapabilityFlags::CLIENT_CONNECT_WITH_DB
        | CapabilityFlags::CLIENT_ODBC
        | CapabilityFlags::CLIENT_IGNORE_SIGPIPE
        | CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_INTERACTIVE
        | CapabilityFlags::CLIENT_TRANSACTIONS
        | CapabilityFlags::CLIENT_RESERVED
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_MULTI_STATEMENTS
        | CapabilityFlags::CLIENT_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PS_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_CONNECT_ATTRS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: u8, payload: &[u8]) -> Frame {
        let mut out = BytesMut::new();
        put_frame(&mut out, seq, payload);
        Frame(out)
    }

    fn eof(status: u16) -> Vec<u8> {
        let s = status.to_le_bytes();
        vec![0xFE, 0, 0, s[0], s[1]]
    }

    #[test]
    fn a_result_set_ends_at_its_second_eof_and_reports_the_transaction() {
        let mut t = AnswerTracker::new(Answer::ResultSets);
        t.step(&frame(1, &[2])); // two columns
        t.step(&frame(2, b"\x03def"));
        t.step(&frame(3, b"\x03def"));
        t.step(&frame(4, &eof(0x0001)));
        assert!(!t.done());
        // A row whose first value is 9 bytes long starts with 0xFE too: not an EOF.
        let mut row = vec![0xFE];
        row.extend_from_slice(&[9, 0, 0, 0, 0, 0, 0, 0]);
        row.extend_from_slice(&[b'x'; 9]);
        t.step(&frame(5, &row));
        assert!(!t.done());
        t.step(&frame(6, &eof(0x0001 | 0x0002)));
        assert!(t.done());
        assert!(t.in_transaction());
    }

    #[test]
    fn more_results_continue_after_an_ok() {
        let mut t = AnswerTracker::new(Answer::ResultSets);
        // OK with SERVER_MORE_RESULTS_EXISTS (0x0008), affected 1, insert id 5.
        t.step(&frame(1, &[0x00, 1, 5, 0x08, 0, 0, 0]));
        assert!(!t.done());
        t.step(&frame(2, &[0x00, 0, 0, 0x02, 0, 0, 0]));
        assert!(t.done());
        assert!(!t.in_transaction());
        assert_eq!(t.ok.map(|o| o.affected_rows), Some(0));
    }

    #[test]
    fn an_error_ends_the_answer() {
        let mut t = AnswerTracker::new(Answer::ResultSets);
        let err = MyError::new(1146, "42S02", "Table 'x' doesn't exist");
        t.step(&frame(1, &err.payload()));
        assert!(t.done() && t.error);
        assert_eq!(MyError::parse(&err.payload()), Some(err));
    }

    #[test]
    fn a_prepare_answer_counts_its_definitions() {
        let mut t = AnswerTracker::new(Answer::Prepare);
        // statement 1, 1 column, 2 params
        t.step(&frame(1, &[0x00, 1, 0, 0, 0, 1, 0, 2, 0, 0, 0, 0]));
        for seq in 2..=3 {
            t.step(&frame(seq, b"\x03def"));
        }
        t.step(&frame(4, &eof(2)));
        assert!(!t.done());
        t.step(&frame(5, b"\x03def"));
        t.step(&frame(6, &eof(2)));
        assert!(t.done());
        let mut none = AnswerTracker::new(Answer::Prepare);
        none.step(&frame(1, &[0x00, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
        assert!(none.done());
    }

    #[test]
    fn lenenc_integers() {
        assert_eq!(lenenc_int(&[0xFA]), Some((250, 1)));
        assert_eq!(lenenc_int(&[0xFC, 0x34, 0x12]), Some((0x1234, 3)));
        assert_eq!(lenenc_int(&[0xFC, 0x34]), None);
        assert_eq!(lenenc_int(&[0xFF]), None);
    }
}
