//! Authenticating a client with its user's method (SCRAM-SHA-256, md5 or trust), and the mock
//! exchange given instead to a name that must not log in (unknown, or not allowed from the
//! client's address). The mock exchange sends the same messages, does the same work and ends
//! with the same error as a wrong password, as PostgreSQL's mock authentication does, so that
//! a client cannot tell which names exist.

use tokio::io::{AsyncRead, AsyncWrite};

use super::super::PgFrontend;
use super::super::client::{ClientError, ClientIo};
use super::super::users::{MockMethod, User};
use crate::config::AuthMethod;
use crate::postgres::auth::{AuthError, ScramSecret, ScramServer, Verifier, md5_salt, md5_verify};
use crate::postgres::protocol::backend::Authentication;
use crate::postgres::protocol::frontend::PasswordMessage;
use crate::postgres::protocol::{BackendMessage, ErrorFields};

/// Who the client claims to be, as far as authentication goes.
pub(super) enum Claim<'a> {
    /// A user who may log in from here, if the password is right.
    User(&'a User),
    /// A name that must fail: the exchange is acted out and then refused.
    Refused,
}

/// What SCRAM checks a proof against: a real secret, or a mock one that no proof may pass.
struct ScramCheck {
    secret: ScramSecret,
    mock: bool,
}

/// Runs the authentication exchange for `name`. `Err` is the FATAL the client gets.
pub(super) async fn authenticate<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut ClientIo<S>,
    fe: &PgFrontend,
    name: &str,
    claim: Claim<'_>,
) -> Result<(), ErrorFields> {
    let failed = || wrong_password(name);
    let mock_scram = || -> Result<ScramCheck, ErrorFields> {
        let secret = fe.mock.scram(name).map_err(|e| {
            tracing::error!(error = %e, "cannot derive a mock SCRAM secret");
            failed()
        })?;
        Ok(ScramCheck { secret, mock: true })
    };
    let user = match claim {
        Claim::User(user) => user,
        Claim::Refused => {
            return match fe.users.mock_method() {
                MockMethod::Scram => scram(io, mock_scram()?, &failed).await,
                MockMethod::Md5 => md5(io, name, None, &failed).await,
            };
        }
    };
    match user.config.auth {
        AuthMethod::Trust => Ok(()),
        AuthMethod::Md5 => {
            let verifier = match &user.verifier {
                Some(v @ (Verifier::Plain(_) | Verifier::Md5(_))) => Some(v),
                _ => {
                    tracing::error!(
                        user = name,
                        "md5 authentication needs a password or an md5 password_hash"
                    );
                    None
                }
            };
            md5(io, name, verifier, &failed).await
        }
        AuthMethod::ScramSha256 => {
            let check = match user.scram.clone() {
                Some(secret) => ScramCheck {
                    secret,
                    mock: false,
                },
                None => {
                    tracing::error!(
                        user = name,
                        "SCRAM authentication needs a password or a SCRAM password_hash"
                    );
                    mock_scram()?
                }
            };
            scram(io, check, &failed).await
        }
    }
}

/// SQLSTATE `invalid_password`.
pub(super) const WRONG_PASSWORD: &str = "28P01";

/// PostgreSQL's answer to a wrong password, and to everything that must look like one.
pub(super) fn wrong_password(name: &str) -> ErrorFields {
    ErrorFields::fatal(
        WRONG_PASSWORD,
        format!("password authentication failed for user \"{name}\""),
    )
}

fn protocol(e: ClientError) -> ErrorFields {
    ErrorFields::fatal("08P01", format!("authentication: {e}"))
}

/// The md5 challenge; `verifier` `None` acts the exchange out and fails it.
async fn md5<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut ClientIo<S>,
    name: &str,
    verifier: Option<&Verifier>,
    failed: &(dyn Fn() -> ErrorFields + Sync),
) -> Result<(), ErrorFields> {
    let salt = md5_salt();
    send(io, Authentication::Md5Password { salt })
        .await
        .map_err(protocol)?;
    let msg = io.read_message().await.map_err(protocol)?;
    if msg.tag() != b'p' {
        return Err(ErrorFields::fatal("08P01", "expected a password message"));
    }
    let response = PasswordMessage::password(msg.body_slice())
        .map_err(|e| ErrorFields::fatal("08P01", e.to_string()))?;
    // The same hashing either way, so that the answer takes as long.
    let placeholder = Verifier::Md5([b'0'; 32]);
    let matched = md5_verify(verifier.unwrap_or(&placeholder), name, salt, response);
    if matched && verifier.is_some() {
        Ok(())
    } else {
        Err(failed())
    }
}

async fn scram<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut ClientIo<S>,
    check: ScramCheck,
    failed: &(dyn Fn() -> ErrorFields + Sync),
) -> Result<(), ErrorFields> {
    let mut server = ScramServer::new(check.secret);
    send(
        io,
        Authentication::Sasl {
            mechanisms: ScramServer::MECHANISMS
                .iter()
                .map(|m| m.to_string())
                .collect(),
        },
    )
    .await
    .map_err(protocol)?;
    let msg = io.read_message().await.map_err(protocol)?;
    if msg.tag() != b'p' {
        return Err(ErrorFields::fatal(
            "08P01",
            "expected a SASLInitialResponse message",
        ));
    }
    let (mechanism, data) = PasswordMessage::sasl_initial(msg.body_slice())
        .map_err(|e| ErrorFields::fatal("08P01", e.to_string()))?;
    let first = server
        .client_first(mechanism, data)
        .map_err(|e| scram_error(e, failed))?;
    send(io, Authentication::SaslContinue(first.into()))
        .await
        .map_err(protocol)?;
    let msg = io.read_message().await.map_err(protocol)?;
    if msg.tag() != b'p' {
        return Err(ErrorFields::fatal(
            "08P01",
            "expected a SASLResponse message",
        ));
    }
    // The proof is checked in full even against a mock secret: same work, same time.
    let last = server
        .client_final(msg.body_slice())
        .map_err(|e| scram_error(e, failed))?;
    if check.mock {
        return Err(failed());
    }
    BackendMessage::Authentication(Authentication::SaslFinal(last.into())).encode(&mut io.wbuf);
    Ok(())
}

fn scram_error(e: AuthError, failed: &(dyn Fn() -> ErrorFields + Sync)) -> ErrorFields {
    match e {
        AuthError::WrongPassword => failed(),
        other => ErrorFields::fatal("08P01", other.to_string()),
    }
}

async fn send<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut ClientIo<S>,
    auth: Authentication,
) -> Result<(), ClientError> {
    BackendMessage::Authentication(auth).encode(&mut io.wbuf);
    io.flush().await
}
