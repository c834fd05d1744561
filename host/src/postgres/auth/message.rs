//! Parsing of the two SCRAM messages a client sends (RFC 5802 section 7),
//! with PostgreSQL's restrictions. Values never contain ',' (SCRAM escapes it
//! in usernames as `=2C`), so splitting on commas is exact.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::AuthError;
use super::error::malformed;

/// The client's channel-binding flag; it must be echoed, base64-encoded with
/// the rest of the GS2 header, in the final message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Gs2Flag {
    /// `n`: the client does not support channel binding.
    No,
    /// `y`: the client supports it but believes the server does not, which
    /// is true here since the proxy never offers SCRAM-SHA-256-PLUS.
    Yes,
}

impl Gs2Flag {
    /// base64 of `n,,` and `y,,`.
    pub(super) fn echo(self) -> &'static str {
        match self {
            Gs2Flag::No => "biws",
            Gs2Flag::Yes => "eSws",
        }
    }
}

pub(super) struct ClientFirst<'a> {
    pub flag: Gs2Flag,
    /// Kept verbatim: it is part of the AuthMessage both sides sign.
    pub bare: &'a str,
    pub nonce: &'a str,
}

pub(super) struct ClientFinal<'a> {
    pub channel_binding: &'a str,
    pub nonce: &'a str,
    /// Everything before `,p=`, also part of the AuthMessage.
    pub without_proof: &'a str,
    pub proof: [u8; 32],
}

pub(super) fn parse_client_first(data: &[u8]) -> Result<ClientFirst<'_>, AuthError> {
    let msg = utf8(data)?;
    let mut header = msg.splitn(3, ',');
    let flag = header.next().unwrap_or_default();
    let authzid = header
        .next()
        .ok_or_else(|| malformed("client-first-message lacks the GS2 header"))?;
    let bare = header
        .next()
        .ok_or_else(|| malformed("client-first-message lacks the GS2 header"))?;
    let flag = match flag {
        "n" => Gs2Flag::No,
        "y" => Gs2Flag::Yes,
        f if f.starts_with("p=") => return Err(AuthError::ChannelBindingNotSupported),
        _ => return Err(malformed("unexpected channel-binding flag")),
    };
    if authzid.starts_with("a=") {
        return Err(malformed(
            "client uses authorization identity, but it is not supported",
        ));
    }
    if !authzid.is_empty() {
        return Err(malformed(
            "unexpected attribute in place of authorization identity",
        ));
    }

    let mut attrs = bare.split(',');
    match attr(attrs.next().unwrap_or_default())? {
        ('m', _) => return Err(malformed("client requires an unsupported SCRAM extension")),
        // PostgreSQL takes the user name from the startup packet, not here.
        ('n', _) => {}
        _ => return Err(malformed("expected attribute \"n\" (user name)")),
    }
    let nonce = expect_attr(&mut attrs, 'r', "nonce")?;
    if nonce.is_empty()
        || !nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
    {
        return Err(malformed("client nonce must be non-empty printable ASCII"));
    }
    skip_extensions(attrs)?;
    Ok(ClientFirst { flag, bare, nonce })
}

pub(super) fn parse_client_final(data: &[u8]) -> Result<ClientFinal<'_>, AuthError> {
    let msg = utf8(data)?;
    let (without_proof, proof) = msg
        .rsplit_once(",p=")
        .ok_or_else(|| malformed("client-final-message lacks the proof attribute"))?;
    if proof.contains(',') {
        return Err(malformed("proof must be the last attribute"));
    }
    let proof = STANDARD
        .decode(proof)
        .map_err(|_| malformed("client proof is not valid base64"))?
        .try_into()
        .map_err(|_| malformed("client proof is not 32 bytes"))?;

    let mut attrs = without_proof.split(',');
    let channel_binding = expect_attr(&mut attrs, 'c', "channel binding")?;
    let nonce = expect_attr(&mut attrs, 'r', "nonce")?;
    skip_extensions(attrs)?;
    Ok(ClientFinal {
        channel_binding,
        nonce,
        without_proof,
        proof,
    })
}

fn utf8(data: &[u8]) -> Result<&str, AuthError> {
    std::str::from_utf8(data).map_err(|_| malformed("message is not valid UTF-8"))
}

/// Splits `x=value`; SCRAM attribute names are single ASCII letters.
fn attr(part: &str) -> Result<(char, &str), AuthError> {
    let mut bytes = part.bytes();
    match (bytes.next(), bytes.next(), part.get(2..)) {
        (Some(name), Some(b'='), Some(value)) if name.is_ascii_alphabetic() => {
            Ok((char::from(name), value))
        }
        _ => Err(malformed("expected an attribute of the form \"x=value\"")),
    }
}

fn expect_attr<'a>(
    attrs: &mut impl Iterator<Item = &'a str>,
    name: char,
    what: &str,
) -> Result<&'a str, AuthError> {
    let part = attrs
        .next()
        .ok_or_else(|| malformed(format!("missing attribute \"{name}\" ({what})")))?;
    match attr(part)? {
        (n, value) if n == name => Ok(value),
        _ => Err(malformed(format!("expected attribute \"{name}\" ({what})"))),
    }
}

/// Optional extensions are allowed by the grammar and ignored, as PostgreSQL
/// does, but must still be well formed.
fn skip_extensions<'a>(attrs: impl Iterator<Item = &'a str>) -> Result<(), AuthError> {
    for part in attrs {
        attr(part)?;
    }
    Ok(())
}
