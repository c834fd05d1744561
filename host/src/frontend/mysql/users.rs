//! The users MySQL clients log in as, with their `mysql_native_password` verifier prepared once
//! from `password` (a SCRAM or md5 `password_hash` cannot check a MySQL scramble).

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::UserConfig;
use crate::frontend::SessionCount;
use crate::mysql::auth::NativeVerifier;

pub use crate::frontend::SessionSlot;

/// One user as the frontend needs it.
#[derive(Debug)]
pub struct User {
    pub config: UserConfig,
    /// `None`: the user has no password MySQL clients can prove (a SCRAM or md5 hash only).
    pub verifier: Option<NativeVerifier>,
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
}

impl Users {
    pub fn new(configs: &[UserConfig]) -> Users {
        let by_name = configs
            .iter()
            .map(|c| {
                let verifier = c
                    .password
                    .as_ref()
                    .map(|p| NativeVerifier::from_password(p.expose()));
                let user = User {
                    config: c.clone(),
                    verifier,
                    sessions: SessionCount::default(),
                };
                (c.name.clone(), Arc::new(user))
            })
            .collect();
        Users { by_name }
    }

    /// A user whose password can log in to servers (for the proxy's own connections).
    pub fn any_with_password(&self) -> Option<&User> {
        // The same one every time, whatever the map's order.
        self.by_name
            .values()
            .filter(|u| u.config.password.is_some())
            .min_by(|a, b| a.config.name.cmp(&b.config.name))
            .map(|u| u.as_ref())
    }

    pub fn get(&self, name: &str) -> Option<&Arc<User>> {
        self.by_name.get(name)
    }
}
