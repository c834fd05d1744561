//! The TLS keys of a pool (`tls`, `tls_ca_file`, `tls_server_name`): values, defaults, and each
//! rule that ties them to the mode and the protocol.

use std::io::Write;

use super::{BASE, fails_at, parse, with};
use crate::config::{Reason, TlsMode};

/// A CA certificate (self-signed, never used to verify anything here: only read).
const CA_PEM: &str = "\
-----BEGIN CERTIFICATE-----\n\
MIIBnzCCAUWgAwIBAgIUfC4KIcACsXMb0lJ0KgplkF2IlVIwCgYIKoZIzj0EAwIw\n\
JDEiMCAGA1UEAwwZc3dpdGNoeWFyZCBjb25maWcgdGVzdCBDQTAgFw0yNjEyMDcx\n\
MTU2MzRaGA8yMTI2MTExMzExNTYzNFowJDEiMCAGA1UEAwwZc3dpdGNoeWFyZCBj\n\
b25maWcgdGVzdCBDQTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABAovn/wGvgSV\n\
bGZkwU05FFAmYeHPfvr3qDynj3qYtK4vjM615ojPAtwPscAFJuMWuYIZNUWKeUUT\n\
4Zj8hth7w6OjUzBRMB0GA1UdDgQWBBSx2Y45oPEPHghoY8NvC1uj/4yiRDAfBgNV\n\
HSMEGDAWgBSx2Y45oPEPHghoY8NvC1uj/4yiRDAPBgNVHRMBAf8EBTADAQH/MAoG\n\
CCqGSM49BAMCA0gAMEUCIQCy4Ojc4eufFMPFmvulGywuo+XODPwWIdgsby2cWIQM\n\
FQIgcrDUHi3asQtC0IqwOGP+kfzAod0FSYJTK8+Y/dI0dMw=\n\
-----END CERTIFICATE-----\n\
";

/// `CA_PEM` in a temporary file.
fn ca_file() -> tempfile::NamedTempFile {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(CA_PEM.as_bytes()).expect("write the CA");
    file
}

const CLICKHOUSE: &str = r#"
[[listener]]
name = "ch"
protocol = "clickhouse-http"
bind = "127.0.0.1:8124"
cluster = "ch"

[cluster.ch]
protocol = "clickhouse-http"

[[user]]
name = "default"
auth = "trust"
"#;

#[test]
fn tls_is_off_unless_asked_for() {
    let config = parse(&with("")).expect("valid");
    let pool = &config.clusters["main"].pools["primary"];
    assert_eq!(pool.tls, TlsMode::Disable);
    assert_eq!(pool.tls_ca_file, None);
    assert_eq!(pool.tls_server_name, None);
}

#[test]
fn every_mode_is_accepted_by_its_libpq_name() {
    let ca = ca_file();
    for (text, mode) in [
        ("disable", TlsMode::Disable),
        ("prefer", TlsMode::Prefer),
        ("require", TlsMode::Require),
        ("verify-ca", TlsMode::VerifyCa),
        ("verify-full", TlsMode::VerifyFull),
    ] {
        let ca_line = if mode.verifies() {
            format!("tls_ca_file = {:?}\n", ca.path().display().to_string())
        } else {
            String::new()
        };
        let config = parse(&with(&format!(
            "[cluster.main.defaults]\ntls = \"{text}\"\n{ca_line}"
        )))
        .unwrap_or_else(|e| panic!("tls = {text}: {e}"));
        for pool in config.clusters["main"].pools.values() {
            assert_eq!(pool.tls, mode);
            // PostgreSQL negotiates TLS on its usual port.
            assert!(pool.nodes.iter().all(|n| n.port != 8443));
        }
    }
}

#[test]
fn an_unknown_mode_is_refused_naming_the_key() {
    fails_at(
        &BASE.replace("role = \"primary\"", "role = \"primary\"\ntls = \"on\""),
        "cluster.main.pool.primary.tls",
        |r| r.to_string().contains("verify-full"),
    );
}

#[test]
fn a_ca_file_only_applies_to_the_verifying_modes() {
    let ca = ca_file();
    let path = ca.path().display().to_string();
    for mode in ["disable", "prefer", "require"] {
        fails_at(
            &with(&format!(
                "[cluster.main.defaults]\ntls = \"{mode}\"\ntls_ca_file = {path:?}\n"
            )),
            "cluster.main.pool.primary.tls_ca_file",
            |r| matches!(r, Reason::OnlyFor { condition } if condition.contains("verify-ca")),
        );
    }
}

#[test]
fn a_ca_file_must_load() {
    fails_at(
        &with(
            "[cluster.main.defaults]\ntls = \"verify-full\"\ntls_ca_file = \"/nonexistent/ca.pem\"\n",
        ),
        "cluster.main.pool.primary.tls_ca_file",
        |r| r.to_string().contains("/nonexistent/ca.pem"),
    );
    let mut junk = tempfile::NamedTempFile::new().expect("temp file");
    junk.write_all(b"not a certificate\n").expect("write");
    fails_at(
        &with(&format!(
            "[cluster.main.defaults]\ntls = \"verify-ca\"\ntls_ca_file = {:?}\n",
            junk.path().display().to_string()
        )),
        "cluster.main.pool.primary.tls_ca_file",
        |r| r.to_string().contains("no certificate"),
    );
}

#[test]
fn a_server_name_needs_tls_and_must_be_a_name() {
    fails_at(
        &with("[cluster.main.defaults]\ntls_server_name = \"db.internal\"\n"),
        "cluster.main.pool.primary.tls_server_name",
        |r| matches!(r, Reason::OnlyFor { .. }),
    );
    fails_at(
        &with("[cluster.main.defaults]\ntls = \"require\"\ntls_server_name = \"not a name\"\n"),
        "cluster.main.pool.primary.tls_server_name",
        |r| matches!(r, Reason::Format { .. }),
    );
    fails_at(
        &with("[cluster.main.defaults]\ntls = \"require\"\ntls_server_name = \"\"\n"),
        "cluster.main.pool.primary.tls_server_name",
        |r| matches!(r, Reason::Empty),
    );
    let config = parse(&with(
        "[cluster.main.defaults]\ntls = \"require\"\ntls_server_name = \"db.internal\"\n",
    ))
    .expect("valid");
    assert_eq!(
        config.clusters["main"].pools["replicas"]
            .tls_server_name
            .as_deref(),
        Some("db.internal")
    );
}

#[test]
fn clickhouse_speaks_https_on_its_own_port_and_cannot_prefer() {
    let text = |pool: &str| {
        format!(
            "{CLICKHOUSE}\n[cluster.ch.pool.all]\nrole = \"primary\"\nnodes = [\"ch1\", \"ch2:9443\"]\n{pool}"
        )
    };
    fails_at(
        &with(&text("tls = \"prefer\"\n")),
        "cluster.ch.pool.all.tls",
        |r| {
            r.to_string()
                .contains("\"prefer\" needs a protocol that negotiates TLS")
        },
    );
    let config = parse(&with(&text("tls = \"verify-full\"\n"))).expect("valid");
    let ports: Vec<u16> = config.clusters["ch"].pools["all"]
        .nodes
        .iter()
        .map(|n| n.port)
        .collect();
    assert_eq!(ports, [8443, 9443]);
    let config = parse(&with(&text(""))).expect("valid");
    assert_eq!(config.clusters["ch"].pools["all"].nodes[0].port, 8123);
}
