//! A throwaway self-signed certificate for TLS listener tests, made with the `openssl` command
//! (tests/run.sh installs it when missing).

use std::path::PathBuf;

/// A certificate and key for `localhost`, valid one day, in a temporary directory that lives as
/// long as this value.
pub struct SelfSigned {
    _dir: tempfile::TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl SelfSigned {
    pub fn new() -> SelfSigned {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
        let made = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=localhost"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl (apt-get install -y openssl)");
        assert!(
            made.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        SelfSigned {
            _dir: dir,
            cert,
            key,
        }
    }
}

impl Default for SelfSigned {
    fn default() -> Self {
        Self::new()
    }
}

/// A certificate authority and a server certificate it signed for `127.0.0.1` and `localhost`
/// (subjectAltName `IP:127.0.0.1`, `DNS:localhost`), made with `openssl`, in a temporary
/// directory that lives as long as this value. rustls refuses a CA certificate as a server's
/// own, hence two certificates.
pub struct TestCa {
    dir: tempfile::TempDir,
    /// The authority's certificate (what a client trusts).
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TestCa {
    pub fn new() -> TestCa {
        let dir = tempfile::tempdir().expect("temp dir");
        let run = |args: &[&str]| {
            let out = std::process::Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("run openssl (apt-get install -y openssl)");
            assert!(
                out.status.success(),
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        // A subject of its own: two authorities of one name would look like one to a
        // verifier, which then reports a bad signature rather than an unknown issuer.
        let subject = format!(
            "/CN=switchyard test CA {}",
            dir.path().file_name().unwrap_or_default().to_string_lossy()
        );
        run(&[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", &subject,
            "-keyout", "ca.key", "-out", "ca.crt",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            dir.path().join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
        )
        .expect("write server.ext");
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ]);
        TestCa {
            ca_cert: dir.path().join("ca.crt"),
            server_cert: dir.path().join("server.crt"),
            server_key: dir.path().join("server.key"),
            dir,
        }
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}
