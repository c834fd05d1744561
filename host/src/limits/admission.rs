//! The limits of users and tag values, built once for the whole process (so a user's
//! `max_concurrent_queries` counts its queries on every listener), and the one call a frontend
//! makes once the policy has decided: [`Admission::admit`].

use std::collections::HashMap;
use std::sync::Arc;

use super::tags::{TagRule, TagValue};
use super::{ConcurrencyConfig, LimitError, Limits, Permit, QueueConfig, Tenant};
use crate::config::{TagLimitConfig, UserConfig};

/// One user's limits and the tenant its waiters queue as when no tag limit applies.
#[derive(Debug)]
pub struct UserLimits {
    pub limits: Limits,
    pub tenant: Tenant,
    /// The keys these limits were built from (a config reload keeps unchanged limits, with
    /// their running queries and queues).
    keys: LimitKeys,
}

type LimitKeys = (
    Option<u32>,
    Option<u32>,
    Option<std::time::Duration>,
    Option<u32>,
);

fn limit_keys(user: &UserConfig) -> LimitKeys {
    (
        user.max_concurrent_queries,
        user.max_queue_size,
        user.max_queue_time,
        user.requests_per_minute,
    )
}

impl UserLimits {
    pub fn new(user: &UserConfig) -> UserLimits {
        let concurrency = user.max_concurrent_queries.map(|max| ConcurrencyConfig {
            max_concurrent: max,
            queue: QueueConfig::from_keys(user.max_queue_size, user.max_queue_time),
        });
        UserLimits {
            limits: Limits::new(
                format!("user \"{}\"", user.name),
                concurrency,
                user.requests_per_minute,
            ),
            tenant: Tenant::user(&user.name),
            keys: limit_keys(user),
        }
    }
}

/// Every user's and every tag rule's limits.
#[derive(Debug, Default)]
pub struct Admission {
    users: HashMap<String, Arc<UserLimits>>,
    rules: Vec<TagRule>,
}

/// What an admitted query (PostgreSQL: transaction) holds until it ends: its concurrency
/// slots, and the tenant it queues as for shared resources.
#[derive(Debug)]
pub struct Admitted {
    tenant: Tenant,
    permits: Vec<Permit>,
    /// Keeps the tag values in use, so they are not forgotten while a query holds their slots.
    _values: Vec<Arc<TagValue>>,
}

impl Admitted {
    /// Admitted without any limit (tests, the proxy's own work).
    pub fn unlimited(tenant: Tenant) -> Admitted {
        Admitted {
            tenant,
            permits: Vec::new(),
            _values: Vec::new(),
        }
    }

    pub fn tenant(&self) -> &Tenant {
        &self.tenant
    }

    /// Adds a permit taken later (a pool's), released with the others.
    pub fn hold(&mut self, permit: Permit) {
        if permit.is_limited() {
            self.permits.push(permit);
        }
    }
}

impl Admission {
    pub fn new(users: &[UserConfig], rules: &[TagLimitConfig]) -> Admission {
        Admission {
            users: users
                .iter()
                .map(|u| (u.name.clone(), Arc::new(UserLimits::new(u))))
                .collect(),
            rules: rules.iter().map(TagRule::new).collect(),
        }
    }

    /// The limits for a reloaded config: a user whose limit keys did not change keeps its
    /// limits as they are (slots taken, queue, rate bucket), so a reload cannot let a user
    /// briefly exceed them; changed users and every tag rule start afresh.
    pub fn reconfigured(&self, users: &[UserConfig], rules: &[TagLimitConfig]) -> Admission {
        Admission {
            users: users
                .iter()
                .map(|u| {
                    let limits = match self.users.get(&u.name) {
                        Some(old) if old.keys == limit_keys(u) => old.clone(),
                        _ => Arc::new(UserLimits::new(u)),
                    };
                    (u.name.clone(), limits)
                })
                .collect(),
            rules: rules.iter().map(TagRule::new).collect(),
        }
    }

    /// The limits of a configured user; an unknown name (not reachable from a frontend, which
    /// only knows configured users) gets none.
    pub fn user(&self, name: &str) -> Arc<UserLimits> {
        self.users.get(name).cloned().unwrap_or_else(|| {
            Arc::new(UserLimits {
                limits: Limits::none(format!("user \"{name}\"")),
                tenant: Tenant::user(name),
                keys: (None, None, None, None),
            })
        })
    }

    /// Every configured user's limits (for the admin API and metrics).
    pub fn users(&self) -> impl Iterator<Item = (&str, &Arc<UserLimits>)> {
        self.users
            .iter()
            .map(|(name, limits)| (name.as_str(), limits))
    }

    pub fn rules(&self) -> &[TagRule] {
        &self.rules
    }

    /// Applies the user's limits and those of every limited tag in `tags`: rates first, then
    /// concurrency (user, then tag rules in config order, so two queries never wait for each
    /// other's slots in opposite orders). `user_rate` is false when the frontend counted the
    /// user's rate earlier (before reading the query).
    pub async fn admit(
        &self,
        user: &UserLimits,
        tags: &[(String, String)],
        user_rate: bool,
    ) -> Result<Admitted, LimitError> {
        if self.rules.is_empty() && !user.limits.is_limited() {
            return Ok(Admitted::unlimited(user.tenant.clone()));
        }
        if user_rate {
            user.limits.check_rate()?;
        }
        let values: Vec<Arc<TagValue>> = self
            .rules
            .iter()
            .filter_map(|rule| {
                let (_, value) = tags.iter().find(|(key, _)| key == rule.tag())?;
                Some(rule.value(value))
            })
            .collect();
        for value in &values {
            value.limits.check_rate()?;
        }
        let tenant = values
            .first()
            .map_or_else(|| user.tenant.clone(), |v| v.tenant.clone());
        let mut admitted = Admitted {
            tenant,
            permits: Vec::new(),
            _values: Vec::new(),
        };
        admitted.hold(user.limits.acquire(&admitted.tenant).await?);
        for value in &values {
            admitted.hold(value.limits.acquire(&value.tenant).await?);
        }
        admitted._values = values;
        Ok(admitted)
    }
}
