use bytes::{Bytes, BytesMut};

use super::backend::{Authentication, Field, ready_status};
use super::frontend::{PasswordMessage, Target};
use super::*;

fn frame(encoded: &BytesMut) -> RawMessage {
    let mut buf = encoded.clone();
    let raw = split_message(&mut buf, 1 << 20)
        .expect("valid frame")
        .expect("complete frame");
    assert!(buf.is_empty(), "one message, nothing left over");
    raw
}

fn round_trip_frontend(msg: FrontendMessage) {
    let mut out = BytesMut::new();
    msg.encode(&mut out);
    let decoded = FrontendMessage::decode(&frame(&out)).expect("decodes");
    assert_eq!(decoded, msg);
}

fn round_trip_backend(msg: BackendMessage) {
    let mut out = BytesMut::new();
    msg.encode(&mut out);
    let decoded = BackendMessage::decode(&frame(&out)).expect("decodes");
    assert_eq!(decoded, msg);
}

fn bind_rest(params: &[Option<&[u8]>]) -> Bytes {
    let mut b = BytesMut::new();
    b.extend_from_slice(&1i16.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(params.len() as i16).to_be_bytes());
    for p in params {
        match p {
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                b.extend_from_slice(v);
            }
        }
    }
    b.extend_from_slice(&0i16.to_be_bytes());
    b.freeze()
}

#[test]
fn frontend_messages_round_trip() {
    for msg in [
        FrontendMessage::Query {
            sql: "SELECT 1; SELECT 'é'".into(),
        },
        FrontendMessage::Parse {
            name: "S_1".into(),
            sql: "SELECT $1::int".into(),
            param_types: vec![23, 0],
        },
        FrontendMessage::Bind {
            portal: "".into(),
            statement: "S_1".into(),
            rest: bind_rest(&[Some(b"42"), None, Some(b"")]),
        },
        FrontendMessage::Describe {
            target: Target::Statement,
            name: "S_1".into(),
        },
        FrontendMessage::Describe {
            target: Target::Portal,
            name: "".into(),
        },
        FrontendMessage::Execute {
            portal: "p".into(),
            max_rows: 100,
        },
        FrontendMessage::Close {
            target: Target::Statement,
            name: "S_1".into(),
        },
        FrontendMessage::Sync,
        FrontendMessage::Flush,
        FrontendMessage::Terminate,
        FrontendMessage::CopyData(Bytes::from_static(b"1\tone\n")),
        FrontendMessage::CopyDone,
        FrontendMessage::CopyFail {
            message: "client gave up".into(),
        },
        FrontendMessage::Password(Bytes::from_static(b"secret\0")),
        // lo_open(16385, INV_READ): function OID 952, two binary-format arguments.
        FrontendMessage::FunctionCall(Bytes::from_static(
            b"\0\0\x03\xb8\0\x01\0\x01\0\x02\0\0\0\x04\0\0\x40\x01\0\0\0\x04\0\x02\0\0\0\x01",
        )),
        // LATIN1 text: not UTF-8, and kept byte for byte.
        FrontendMessage::Query {
            sql: SqlText::from_bytes(b"SELECT 'caf\xe9'"),
        },
        FrontendMessage::Parse {
            name: "S_2".into(),
            sql: SqlText::from_bytes(b"SELECT '\xe9' || $1"),
            param_types: vec![],
        },
    ] {
        round_trip_frontend(msg);
    }
}

#[test]
fn backend_messages_round_trip() {
    for msg in [
        BackendMessage::Authentication(Authentication::Ok),
        BackendMessage::Authentication(Authentication::CleartextPassword),
        BackendMessage::Authentication(Authentication::Md5Password { salt: [1, 2, 3, 4] }),
        BackendMessage::Authentication(Authentication::Sasl {
            mechanisms: vec!["SCRAM-SHA-256".into()],
        }),
        BackendMessage::Authentication(Authentication::SaslContinue(Bytes::from_static(
            b"r=abc,s=def,i=4096",
        ))),
        BackendMessage::Authentication(Authentication::SaslFinal(Bytes::from_static(b"v=xyz"))),
        BackendMessage::BackendKeyData { pid: 42, key: -7 },
        BackendMessage::ParameterStatus {
            name: "TimeZone".into(),
            value: "UTC".into(),
        },
        BackendMessage::ReadyForQuery(TransactionStatus::Idle),
        BackendMessage::ReadyForQuery(TransactionStatus::InTransaction),
        BackendMessage::ReadyForQuery(TransactionStatus::Failed),
        BackendMessage::ErrorResponse(
            ErrorFields::error("42501", "blocked by policy")
                .detail("d")
                .hint("h")
                .with(b'P', "12"),
        ),
        BackendMessage::NoticeResponse(ErrorFields::new("NOTICE", "00000", "hello")),
        BackendMessage::CommandComplete {
            tag: "SELECT 1".into(),
        },
        BackendMessage::EmptyQueryResponse,
        BackendMessage::ParseComplete,
        BackendMessage::BindComplete,
        BackendMessage::CloseComplete,
        BackendMessage::NoData,
        BackendMessage::PortalSuspended,
        BackendMessage::RowDescription(vec![
            Field::text("a"),
            Field {
                name: "n".into(),
                table_oid: 16384,
                column: 2,
                type_oid: 23,
                type_size: 4,
                type_modifier: -1,
                format: 1,
            },
        ]),
        BackendMessage::DataRow(vec![
            Some(Bytes::from_static(b"x")),
            None,
            Some(Bytes::new()),
        ]),
        BackendMessage::ParameterDescription(vec![23, 25]),
        BackendMessage::CopyResponse {
            tag: b'G',
            format: 0,
            columns: vec![0, 0],
        },
        BackendMessage::CopyResponse {
            tag: b'H',
            format: 1,
            columns: vec![1],
        },
        BackendMessage::CopyData(Bytes::from_static(b"row\n")),
        BackendMessage::CopyDone,
        BackendMessage::NotificationResponse {
            pid: 9,
            channel: "ch".into(),
            payload: "hi".into(),
        },
        BackendMessage::NegotiateProtocolVersion {
            newest: PROTOCOL_V3,
            unsupported: vec!["_pq_.x".into()],
        },
    ] {
        round_trip_backend(msg);
    }
}

#[test]
fn startup_packets_round_trip() {
    for s in [
        Startup::Ssl,
        Startup::GssEnc,
        Startup::Cancel { pid: 5, key: 6 },
        Startup::v3(vec![
            ("user".into(), "app".into()),
            ("database".into(), "appdb".into()),
        ]),
    ] {
        let mut out = BytesMut::new();
        s.encode(&mut out);
        let body = split_startup(&mut out).expect("valid").expect("complete");
        assert!(out.is_empty());
        assert_eq!(Startup::decode(&body).expect("decodes"), s);
    }
}

#[test]
fn framing_waits_for_whole_messages() {
    let mut out = BytesMut::new();
    FrontendMessage::Query {
        sql: "SELECT 1".into(),
    }
    .encode(&mut out);
    FrontendMessage::Sync.encode(&mut out);
    let all = out.clone();
    for cut in 0..all.len() {
        let mut buf = BytesMut::from(&all[..cut]);
        let mut got = 0;
        while let Some(_m) = split_message(&mut buf, 1024).expect("valid") {
            got += 1;
        }
        let expected = if cut >= all.len() - 5 { 1 } else { 0 };
        assert_eq!(got, expected, "cut at {cut}");
    }
}

#[test]
fn bad_lengths_are_errors_not_allocations() {
    let mut buf = BytesMut::from(&[b'Q', 0x7f, 0xff, 0xff, 0xff][..]);
    assert!(matches!(
        split_message(&mut buf, 1 << 20),
        Err(ProtocolError::TooLong { .. })
    ));
    let mut buf = BytesMut::from(&[b'Q', 0, 0, 0, 3][..]);
    assert_eq!(
        split_message(&mut buf, 1 << 20),
        Err(ProtocolError::BadLength(3))
    );
    let mut buf = BytesMut::from(&[0, 0, 0, 2, 0, 0][..]);
    assert!(split_startup(&mut buf).is_err());
    let mut buf = BytesMut::from(&[0x10, 0, 0, 0][..]);
    assert!(matches!(
        split_startup(&mut buf),
        Err(ProtocolError::TooLong { .. })
    ));
}

#[test]
fn malformed_bodies_are_errors() {
    let cases: &[(u8, &[u8])] = &[
        (b'Q', b"no terminator"),
        (b'Q', b"SELECT 1\0extra"),
        (b'P', b"name\0sql\0\xff\xff"),
        (b'P', b"name\0sql\0\0\x02\0\0\0\x17"),
        (b'B', b"\0s\0\0\0\0\x01\0\0\0\x09abc\0\0"),
        (b'B', b"\0s\0\0\0\0\x01\xff\xff\xff\xfe\0\0"),
        (b'D', b"Xname\0"),
        (b'E', b"portal\0\0\0"),
        (b'S', b"x"),
        (b'Q', b""),
        (b'P', b"name\0sql"),
        (b'F', b"\0\0\x03\xb8\0\0\0\x01\0\0\0\x09ab\0\0"),
        (b'F', b"\0\0\x03\xb8\0\0\0\0"),
        (b'?', b""),
    ];
    for (tag, body) in cases {
        let mut out = BytesMut::new();
        out.extend_from_slice(&[*tag]);
        out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        out.extend_from_slice(body);
        let raw = frame(&out);
        assert!(
            FrontendMessage::decode(&raw).is_err(),
            "{:?} {:?} should fail",
            char::from(*tag),
            body
        );
    }
    // Text in another encoding than UTF-8 is no error.
    for (tag, body) in [(b'Q', &b"\xff\xfe\0"[..]), (b'P', b"\0\xe9\0\0\0")] {
        let mut out = BytesMut::new();
        out.extend_from_slice(&[tag]);
        out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        out.extend_from_slice(body);
        assert!(FrontendMessage::decode(&frame(&out)).is_ok(), "{body:?}");
    }
    assert!(Startup::decode(&[0, 2, 0, 0]).is_err());
    assert!(Startup::decode(&[0, 3, 0, 0, b'u', 0]).is_err());
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A small deterministic generator: the decoders see every tag with short random bodies.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let tag = (next() % 128) as u8;
        let len = (next() % 24) as usize;
        let body: Vec<u8> = (0..len).map(|_| (next() % 256) as u8).collect();
        let mut out = BytesMut::new();
        out.extend_from_slice(&[tag]);
        out.extend_from_slice(&((len + 4) as i32).to_be_bytes());
        out.extend_from_slice(&body);
        let raw = frame(&out);
        let _ = FrontendMessage::decode(&raw);
        let _ = BackendMessage::decode(&raw);
        let _ = Startup::decode(&body);
        let _ = PasswordMessage::sasl_initial(&body);
        let _ = PasswordMessage::password(&body);
    }
}

#[test]
fn password_bodies() {
    let mut out = BytesMut::new();
    PasswordMessage::encode_sasl_initial(&mut out, "SCRAM-SHA-256", b"n,,n=,r=abc");
    let raw = frame(&out);
    assert_eq!(
        PasswordMessage::sasl_initial(raw.body_slice()).expect("valid"),
        ("SCRAM-SHA-256", &b"n,,n=,r=abc"[..])
    );
    let mut out = BytesMut::new();
    PasswordMessage::encode_password(&mut out, b"md5abc");
    assert_eq!(
        PasswordMessage::password(frame(&out).body_slice()).expect("valid"),
        b"md5abc"
    );
    assert!(PasswordMessage::password(b"no nul").is_err());
}

#[test]
fn ready_status_reads_the_byte() {
    let mut out = BytesMut::new();
    backend::ready_for_query(&mut out, TransactionStatus::InTransaction);
    assert_eq!(
        ready_status(&frame(&out)).expect("valid"),
        TransactionStatus::InTransaction
    );
}

#[test]
fn error_code_reads_the_sqlstate_in_place() {
    let mut out = BytesMut::new();
    ErrorFields::error("25006", "cannot execute UPDATE in a read-only transaction")
        .encode_error(&mut out);
    assert_eq!(backend::error_code(&frame(&out)), Some(&b"25006"[..]));
    // Fields after the message, and a message without a code.
    let mut out = BytesMut::new();
    ErrorFields::new("ERROR", "40001", "conflict")
        .detail("d")
        .encode_error(&mut out);
    assert_eq!(backend::error_code(&frame(&out)), Some(&b"40001"[..]));
    let truncated = frame(&BytesMut::from(&[b'E', 0, 0, 0, 6, b'C', b'4'][..]));
    assert_eq!(backend::error_code(&truncated), None);
}
