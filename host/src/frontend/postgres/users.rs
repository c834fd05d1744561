//! The users PostgreSQL clients log in as, with their authentication material prepared once:
//! deriving SCRAM keys from a plain password costs 4,096 HMAC rounds, too much per login.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{AuthMethod, UserConfig};
use crate::frontend::SessionCount;
use crate::postgres::auth::{ScramSecret, Verifier};

pub use crate::frontend::SessionSlot;

/// One user as the frontend needs it.
#[derive(Debug)]
pub struct User {
    pub config: UserConfig,
    /// What the client's proof is checked against.
    pub verifier: Option<Verifier>,
    /// SCRAM keys (from a SCRAM verifier, or derived from the plain password).
    pub scram: Option<ScramSecret>,
    /// Sessions open now (for `max_connections`).
    sessions: SessionCount,
}

impl User {
    /// Counts a new session, or `None` when the user is at `max_connections`.
    pub fn open_session(&self) -> Option<SessionSlot> {
        self.sessions.open(self.config.max_connections)
    }
}

/// Every configured user, by name.
#[derive(Debug, Default)]
pub struct Users {
    by_name: HashMap<String, Arc<User>>,
    mock: MockMethod,
}

/// The method an unknown name is challenged with: the one the configured users are asked for,
/// so that the challenge itself tells nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MockMethod {
    #[default]
    Scram,
    /// Every user with a password logs in with md5.
    Md5,
}

impl Users {
    pub fn new(users: &[UserConfig]) -> Users {
        let by_name = users
            .iter()
            .map(|u| (u.name.clone(), Arc::new(User::new(u))))
            .collect();
        let mut methods = users
            .iter()
            .map(|u| u.auth)
            .filter(|a| *a != AuthMethod::Trust);
        let all_md5 = methods.clone().next().is_some() && methods.all(|a| a == AuthMethod::Md5);
        let mock = if all_md5 {
            MockMethod::Md5
        } else {
            MockMethod::Scram
        };
        Users { by_name, mock }
    }

    pub fn mock_method(&self) -> MockMethod {
        self.mock
    }

    pub fn get(&self, name: &str) -> Option<&Arc<User>> {
        self.by_name.get(name)
    }
}

impl User {
    fn new(config: &UserConfig) -> User {
        let verifier = match (&config.password, &config.password_hash) {
            (Some(password), _) => Some(Verifier::Plain(password.expose().to_owned())),
            (None, Some(hash)) => match Verifier::parse_hash(hash.expose()) {
                Ok(v) => Some(v),
                Err(e) => {
                    // The config check validates hashes; this is a second line of defence.
                    tracing::error!(user = config.name, error = %e, "unusable password_hash: the user cannot log in");
                    None
                }
            },
            (None, None) => None,
        };
        let scram = match (&verifier, config.auth) {
            (Some(Verifier::Scram(secret)), _) => Some(secret.clone()),
            (Some(Verifier::Plain(password)), AuthMethod::ScramSha256) => {
                match ScramSecret::generate(password.as_bytes()) {
                    Ok(secret) => Some(secret),
                    Err(e) => {
                        tracing::error!(user = config.name, error = %e, "cannot derive SCRAM keys");
                        None
                    }
                }
            }
            _ => None,
        };
        User {
            config: config.clone(),
            verifier,
            scram,
            sessions: SessionCount::default(),
        }
    }
}
