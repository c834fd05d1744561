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
