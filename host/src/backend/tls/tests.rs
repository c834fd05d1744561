use std::io::Write;

use super::{TlsError, load_ca_file, server_name};
use tokio_rustls::rustls::pki_types::ServerName;

#[test]
fn server_names_are_dns_names_or_ip_addresses() {
    assert!(matches!(
        server_name("db.internal"),
        Ok(ServerName::DnsName(_))
    ));
    assert!(matches!(
        server_name("127.0.0.1"),
        Ok(ServerName::IpAddress(_))
    ));
    // IPv6 hosts, bare or as written in node strings, are checked against IP SANs.
    assert!(matches!(server_name("::1"), Ok(ServerName::IpAddress(_))));
    assert!(matches!(server_name("[::1]"), Ok(ServerName::IpAddress(_))));
    for bad in ["", "bad name", "a..b"] {
        assert!(
            matches!(server_name(bad), Err(TlsError::ServerName { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn a_ca_file_must_hold_a_certificate() {
    let missing = load_ca_file(std::path::Path::new("/nonexistent/ca.pem"));
    assert!(
        matches!(&missing, Err(TlsError::CaFile { path, .. }) if path == "/nonexistent/ca.pem"),
        "{missing:?}"
    );
    let mut empty = tempfile::NamedTempFile::new().expect("temp file");
    writeln!(empty, "not a certificate").expect("write");
    let err = load_ca_file(empty.path()).expect_err("no certificate");
    assert!(err.to_string().contains("no certificate"), "{err}");
}
