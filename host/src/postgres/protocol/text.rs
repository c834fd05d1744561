//! Statement text as a client sent it, in the client's `client_encoding`. PostgreSQL converts
//! text from the client's encoding itself, so a proxy must pass the bytes on untouched: a
//! LATIN1 or EUC_JP client's statements are not UTF-8.

use bytes::Bytes;

/// The text of a Query or Parse. The proxy reads SQL as UTF-8 (classification, the policy,
/// fingerprints, metrics); text that is not UTF-8 is read through a lossy view, in which each
/// invalid sequence becomes U+FFFD. In the ASCII-compatible encodings PostgreSQL accepts from
/// clients (LATIN1, WIN1252, EUC_JP, ...) keywords, identifiers, operators and quotes are
/// ASCII, so the lossy view classifies like the original; only non-ASCII literals blur, which
/// is why it must never be sent to a server or used where two different literals must differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlText {
    text: String,
    /// The bytes as received, kept only when they are not UTF-8 (`text` is then lossy).
    original: Option<Bytes>,
}

impl SqlText {
    /// Takes the text as it came (without its NUL terminator).
    pub fn from_bytes(bytes: &[u8]) -> SqlText {
        match std::str::from_utf8(bytes) {
            Ok(text) => SqlText {
                text: text.to_owned(),
                original: None,
            },
            Err(_) => SqlText {
                text: String::from_utf8_lossy(bytes).into_owned(),
                original: Some(Bytes::copy_from_slice(bytes)),
            },
        }
    }

    /// The text, or its lossy UTF-8 view when it is not UTF-8.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The bytes to send: exactly what the client sent.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.original {
            Some(original) => original,
            None => self.text.as_bytes(),
        }
    }

    /// Whether the text is valid UTF-8 (then [`as_str`](Self::as_str) is exact).
    pub fn is_utf8(&self) -> bool {
        self.original.is_none()
    }

    /// The text as an owned string (lossy when it is not UTF-8).
    pub fn into_string(self) -> String {
        self.text
    }
}

impl From<String> for SqlText {
    fn from(text: String) -> SqlText {
        SqlText {
            text,
            original: None,
        }
    }
}

impl From<&str> for SqlText {
    fn from(text: &str) -> SqlText {
        SqlText::from(text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_text_is_kept_as_is() {
        let t = SqlText::from_bytes("SELECT 'é'".as_bytes());
        assert!(t.is_utf8());
        assert_eq!(t.as_str(), "SELECT 'é'");
        assert_eq!(t.as_bytes(), "SELECT 'é'".as_bytes());
    }

    #[test]
    fn latin1_text_keeps_its_bytes_and_reads_lossily() {
        let latin1 = b"SELECT 'caf\xe9' FROM t";
        let t = SqlText::from_bytes(latin1);
        assert!(!t.is_utf8());
        assert_eq!(t.as_bytes(), latin1);
        assert_eq!(t.as_str(), "SELECT 'caf\u{fffd}' FROM t");
        assert_eq!(t.clone().into_string(), t.as_str());
    }
}
