//! Who is asking: credentials from the request (URL parameters, `X-ClickHouse-User` /
//! `X-ClickHouse-Key` headers, or HTTP Basic, with ClickHouse's rule that they are not mixed),
//! checked against the `[[user]]` table, its `allowed_networks` and its clusters.

mod verify;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine as _;
use http::HeaderMap;
use http::header::AUTHORIZATION;

use super::error::{ChError, code};
use super::params::Params;
use crate::config::UserConfig;
use crate::limits::{Admission, UserLimits};

pub use verify::Verifier;

/// The user and password a request presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    pub user: String,
    pub password: String,
}

/// Reads the credentials the way ClickHouse does; mixing two methods is an error.
pub fn presented(params: &Params, headers: &HeaderMap) -> Result<Presented, ChError> {
    let header = |name: &str| {
        headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let in_params = params.has("user") || params.has("password");
    let basic = headers.get(AUTHORIZATION);
    let (ch_user, ch_key) = (header("x-clickhouse-user"), header("x-clickhouse-key"));
    let mixed = |what: &str| {
        ChError::new(
            http::StatusCode::UNAUTHORIZED,
            code::UNKNOWN_USER_OR_MIXED_AUTH,
            format!("Invalid authentication: it is not allowed to use {what} simultaneously"),
        )
    };
    if ch_user.is_some() || ch_key.is_some() {
        if in_params || basic.is_some() {
            return Err(mixed(
                "X-ClickHouse HTTP headers and other authentication methods",
            ));
        }
        return Ok(Presented {
            user: ch_user.unwrap_or_default(),
            password: ch_key.unwrap_or_default(),
        });
    }
    if let Some(value) = basic {
        if in_params {
            return Err(mixed(
                "Authorization HTTP header and authentication via parameters",
            ));
        }
        return parse_basic(value.as_bytes()).ok_or_else(|| {
            ChError::new(
                http::StatusCode::UNAUTHORIZED,
                code::AUTHENTICATION_FAILED,
                "Invalid authentication: the Authorization header is not valid Basic credentials",
            )
        });
    }
    Ok(Presented {
        user: params.get("user").unwrap_or("default").to_owned(),
        password: params.get("password").unwrap_or_default().to_owned(),
    })
}

fn parse_basic(value: &[u8]) -> Option<Presented> {
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, token) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
    Some(Presented {
        user: user.to_owned(),
        password: password.to_owned(),
    })
}

/// One proxy user: its config, how its password is checked, and its limits.
#[derive(Debug)]
pub struct User {
    pub config: UserConfig,
    pub limits: Arc<UserLimits>,
    verifier: Verifier,
}

/// The `[[user]]` table.
#[derive(Debug, Default)]
pub struct Users {
    by_name: HashMap<String, Arc<User>>,
}

impl Users {
    pub fn new(users: &[UserConfig], admission: &Admission) -> Users {
        let by_name = users
            .iter()
            .map(|u| {
                let user = User {
                    limits: admission.user(&u.name),
                    verifier: Verifier::for_user(u),
                    config: u.clone(),
                };
                (u.name.clone(), Arc::new(user))
            })
            .collect();
        Users { by_name }
    }

    /// Checks the credentials and the client address. Unknown user and wrong password give the
    /// same answer (401), so the proxy does not reveal which users exist; a known user from a
    /// network it may not use gets 403.
    pub fn authenticate(&self, presented: &Presented, ip: IpAddr) -> Result<Arc<User>, ChError> {
        let user = self
            .by_name
            .get(&presented.user)
            .filter(|u| u.verifier.verify(&u.config.name, &presented.password))
            .ok_or_else(|| ChError::unauthorized(&presented.user))?;
        if !user.config.allows_addr(ip) {
            return Err(ChError::forbidden(
                code::IP_ADDRESS_NOT_ALLOWED,
                format!(
                    "User {} is not allowed to connect from address {ip}",
                    user.config.name
                ),
            ));
        }
        Ok(user.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn credentials_come_from_one_method() {
        let none = Params::parse(None);
        let p = presented(&Params::parse(Some("user=a&password=b")), &HeaderMap::new()).unwrap();
        assert_eq!((p.user.as_str(), p.password.as_str()), ("a", "b"));
        let p = presented(
            &none,
            &headers(&[("x-clickhouse-user", "c"), ("x-clickhouse-key", "d")]),
        )
        .unwrap();
        assert_eq!((p.user.as_str(), p.password.as_str()), ("c", "d"));
        // "e:f:g" in Basic: the password may contain colons.
        let p = presented(&none, &headers(&[("authorization", "Basic ZTpmOmc=")])).unwrap();
        assert_eq!((p.user.as_str(), p.password.as_str()), ("e", "f:g"));
        let p = presented(&none, &HeaderMap::new()).unwrap();
        assert_eq!((p.user.as_str(), p.password.as_str()), ("default", ""));

        let mixed = presented(
            &Params::parse(Some("user=a")),
            &headers(&[("x-clickhouse-user", "c")]),
        );
        assert_eq!(mixed.unwrap_err().code, code::UNKNOWN_USER_OR_MIXED_AUTH);
        let bad = presented(&none, &headers(&[("authorization", "Basic !!!")]));
        assert_eq!(bad.unwrap_err().status, http::StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn users_are_checked_by_password_and_network() {
        let mut office = UserConfig::new("office", Some("pw"));
        office.allowed_networks = vec!["10.0.0.0/8".parse().unwrap()];
        let configs = [UserConfig::new("bob", Some("pw")), office];
        let users = Users::new(&configs, &Admission::new(&configs, &[]));
        let ok = |user: &str, password: &str| Presented {
            user: user.into(),
            password: password.into(),
        };
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(users.authenticate(&ok("bob", "pw"), local).is_ok());
        assert_eq!(
            users
                .authenticate(&ok("bob", "no"), local)
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(
            users
                .authenticate(&ok("eve", "pw"), local)
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(
            users
                .authenticate(&ok("office", "pw"), local)
                .unwrap_err()
                .status,
            403
        );
        assert!(
            users
                .authenticate(&ok("office", "pw"), "10.1.2.3".parse().unwrap())
                .is_ok()
        );
    }
}
