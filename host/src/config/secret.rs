//! Values that must not leak: passwords, password hashes, tokens, credentials inside URLs, and
//! policy parameters whose names say they are secret. Their `Debug` and `Serialize` forms are
//! redacted, so logging a config or showing it through the admin API cannot reveal them.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

/// What a redacted value is shown as.
pub const REDACTED: &str = "<redacted>";

/// A secret string (password, hash, token). Read it with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself: use it, never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

/// A URL that may carry a password (`redis://user:pass@host/0`); shown with the password masked.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(value: impl Into<String>) -> Self {
        SecretUrl(value.into())
    }

    /// The URL with its password: use it, never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with the password part of its user info replaced.
    pub fn redacted(&self) -> String {
        let url = &self.0;
        let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
            return url.clone();
        };
        let authority_end = url[scheme_end..]
            .find(['/', '?', '#'])
            .map_or(url.len(), |i| scheme_end + i);
        let authority = &url[scheme_end..authority_end];
        let Some(at) = authority.rfind('@') else {
            return url.clone();
        };
        let userinfo = &authority[..at];
        let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
        let masked = if userinfo.contains(':') {
            format!("{user}:{REDACTED}")
        } else {
            // `redis://secret@host` puts the password where the user would be.
            REDACTED.to_string()
        };
        format!("{}{masked}{}", &url[..scheme_end], &url[scheme_end + at..])
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({:?})", self.redacted())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

/// Whether a parameter name looks like it holds a secret (`db_password`, `api_token`, ...).
pub fn is_sensitive_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "credential",
        "api_key",
        "apikey",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// Serializes a string map with the values of sensitive-looking keys redacted.
pub(crate) fn serialize_params<S: Serializer>(
    params: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let shown: BTreeMap<&str, &str> = params
        .iter()
        .map(|(k, v)| {
            let v = if is_sensitive_name(k) { REDACTED } else { v };
            (k.as_str(), v)
        })
        .collect();
    shown.serialize(s)
}
