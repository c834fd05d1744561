//! The users MySQL clients log in as, with their `mysql_native_password` verifier prepared once
//! from `password` (a SCRAM or md5 `password_hash` cannot check a MySQL scramble).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::config::UserConfig;
use crate::mysql::auth::NativeVerifier;

/// One user as the frontend needs it.
#[derive(Debug)]
pub struct User {
    pub config: UserConfig,
    /// `None`: the user has no password MySQL clients can prove (a SCRAM or md5 hash only).
    pub verifier: Option<NativeVerifier>,
    sessions: AtomicU32,
}

/// A session counted against its user's `max_connections`; uncounted on drop.
#[derive(Debug)]
pub struct SessionSlot(Arc<User>);

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Ordering::AcqRel);
    }
}

impl User {
    /// Counts a new session, or `None` when the user is at `max_connections`.
    pub fn open_session(self: &Arc<Self>) -> Option<SessionSlot> {
        let max = self.config.max_connections.unwrap_or(u32::MAX);
        self.sessions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| SessionSlot(self.clone()))
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
                    sessions: AtomicU32::new(0),
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
