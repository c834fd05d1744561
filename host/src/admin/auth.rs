//! Who may call the admin API: a client network allow-list and scoped bearer tokens. The admin
//! token (`admin.token`) may do everything; the read token (`admin.read_token`) only the GET
//! endpoints. Without any token the GETs are open (the config check allows that on a loopback
//! bind only) and every change is refused: replacing the policy, reloading the config or
//! purging the cache always needs the admin token.

use std::net::SocketAddr;

use http::{Method, Request, Response, StatusCode, header};
use serde_json::json;

use super::routes::{Reply, error, json_reply};
use crate::config::AdminConfig;
use crate::config::Cidr;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// The GET endpoints.
    Read,
    /// Everything.
    Admin,
}

pub struct Guard {
    admin: Option<Vec<u8>>,
    read: Option<Vec<u8>>,
    networks: Vec<Cidr>,
}

impl Guard {
    pub fn new(config: &AdminConfig) -> Guard {
        let bytes = |t: &crate::config::Secret| t.expose().as_bytes().to_vec();
        Guard {
            admin: config.token.as_ref().map(bytes),
            read: config.read_token.as_ref().map(bytes),
            networks: config.allowed_networks.clone(),
        }
    }

    /// `Err` is the refusal to send.
    pub fn check<B>(&self, request: &Request<B>, peer: SocketAddr) -> Result<(), Refused> {
        if !self.networks.is_empty() && !self.networks.iter().any(|n| n.contains(peer.ip())) {
            return Err(Refused::Forbidden(format!(
                "{} is not in admin.allowed_networks",
                peer.ip()
            )));
        }
        let needs = if request.method() == Method::GET {
            Scope::Read
        } else {
            Scope::Admin
        };
        let scope = if self.admin.is_none() && self.read.is_none() {
            // No token configured: reads are open, changes are not.
            Scope::Read
        } else {
            let presented = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            let Some(presented) = presented else {
                return Err(Refused::Unauthorized(
                    "missing `Authorization: Bearer <token>` (admin.token or admin.read_token)",
                ));
            };
            // Both compared every time, so timing does not tell which one (if any) matched.
            let admin = self
                .admin
                .as_ref()
                .is_some_and(|t| constant_time_eq(presented.as_bytes(), t));
            let read = self
                .read
                .as_ref()
                .is_some_and(|t| constant_time_eq(presented.as_bytes(), t));
            match (admin, read) {
                (true, _) => Scope::Admin,
                (false, true) => Scope::Read,
                (false, false) => return Err(Refused::Unauthorized("invalid bearer token")),
            }
        };
        if needs == Scope::Admin && scope != Scope::Admin {
            let why = if self.admin.is_none() {
                "admin.token is not set, so nothing can be changed through the API"
            } else {
                "admin.token; the token sent has read scope"
            };
            return Err(Refused::Scope(format!(
                "{} {} needs a token with admin scope ({why})",
                request.method(),
                request.uri().path()
            )));
        }
        Ok(())
    }
}

/// Why a caller was turned away.
#[derive(Debug)]
pub enum Refused {
    Forbidden(String),
    Unauthorized(&'static str),
    /// A change without the admin token.
    Scope(String),
}

impl Refused {
    pub fn status(&self) -> StatusCode {
        match self {
            Refused::Forbidden(_) | Refused::Scope(_) => StatusCode::FORBIDDEN,
            Refused::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        }
    }

    pub fn into_response(self) -> Response<Reply> {
        let status = self.status();
        match self {
            Refused::Forbidden(message) => error(status, message),
            Refused::Scope(message) => json_reply(
                status,
                json!({
                    "error": message,
                    "required_scope": "admin",
                    "config_key": "admin.token",
                }),
            ),
            Refused::Unauthorized(message) => {
                let mut response = error(status, message.to_owned());
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer realm=\"switchyard\""),
                );
                response
            }
        }
    }
}

/// Compares without an early exit, so response time does not reveal how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(toml: &str) -> Guard {
        let config: AdminConfig = toml::from_str(toml).expect("valid [admin]");
        Guard::new(&config)
    }

    fn request(auth: Option<&str>) -> Request<()> {
        let mut builder = Request::get("/health");
        if let Some(a) = auth {
            builder = builder.header(header::AUTHORIZATION, a);
        }
        builder.body(()).expect("request")
    }

    #[test]
    fn the_token_and_the_networks_are_both_enforced() {
        let g = guard(
            "bind = \"127.0.0.1:0\"\ntoken = \"s3cret\"\nallowed_networks = [\"10.0.0.0/8\"]\n",
        );
        let inside: SocketAddr = "10.1.2.3:5000".parse().expect("addr");
        let outside: SocketAddr = "192.168.1.1:5000".parse().expect("addr");
        assert!(g.check(&request(Some("Bearer s3cret")), inside).is_ok());
        let status = |r: Result<(), Refused>| r.err().map(|r| r.status());
        assert_eq!(
            status(g.check(&request(Some("Bearer s3cret")), outside)),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            status(g.check(&request(Some("Bearer nope")), inside)),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(g.check(&request(None), inside)),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(g.check(&request(Some("Basic s3cret")), inside)),
            Some(StatusCode::UNAUTHORIZED)
        );
        let open = guard("bind = \"127.0.0.1:0\"\n");
        assert!(open.check(&request(None), outside).is_ok());
    }

    fn post(auth: Option<&str>) -> Request<()> {
        let mut builder = Request::post("/policy");
        if let Some(a) = auth {
            builder = builder.header(header::AUTHORIZATION, a);
        }
        builder.body(()).expect("request")
    }

    #[test]
    fn changes_need_the_admin_scope() {
        let peer: SocketAddr = "127.0.0.1:5000".parse().expect("addr");
        let status = |r: Result<(), Refused>| r.err().map(|r| r.status());
        let open = guard("bind = \"127.0.0.1:0\"\n");
        assert!(open.check(&request(None), peer).is_ok());
        assert_eq!(
            status(open.check(&post(None), peer)),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            status(open.check(&post(Some("Bearer anything")), peer)),
            Some(StatusCode::FORBIDDEN)
        );
        let both = guard("bind = \"127.0.0.1:0\"\ntoken = \"adm\"\nread_token = \"rd\"\n");
        assert!(both.check(&request(Some("Bearer rd")), peer).is_ok());
        assert!(both.check(&request(Some("Bearer adm")), peer).is_ok());
        assert!(both.check(&post(Some("Bearer adm")), peer).is_ok());
        assert_eq!(
            status(both.check(&post(Some("Bearer rd")), peer)),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(
            status(both.check(&post(None), peer)),
            Some(StatusCode::UNAUTHORIZED)
        );
        let read_only = guard("bind = \"127.0.0.1:0\"\nread_token = \"rd\"\n");
        assert!(read_only.check(&request(Some("Bearer rd")), peer).is_ok());
        assert_eq!(
            status(read_only.check(&request(None), peer)),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(read_only.check(&post(Some("Bearer rd")), peer)),
            Some(StatusCode::FORBIDDEN)
        );
    }
}
