//! Who may call the admin API: a client network allow-list and a bearer token.

use std::net::SocketAddr;

use http::{Request, Response, StatusCode, header};

use super::routes::{Reply, error};
use crate::config::AdminConfig;
use crate::config::Cidr;

pub struct Guard {
    token: Option<Vec<u8>>,
    networks: Vec<Cidr>,
}

impl Guard {
    pub fn new(config: &AdminConfig) -> Guard {
        Guard {
            token: config
                .token
                .as_ref()
                .map(|t| t.expose().as_bytes().to_vec()),
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
        let Some(token) = &self.token else {
            return Ok(());
        };
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        match presented {
            Some(p) if constant_time_eq(p.as_bytes(), token) => Ok(()),
            Some(_) => Err(Refused::Unauthorized("invalid bearer token")),
            None => Err(Refused::Unauthorized(
                "missing `Authorization: Bearer <token>` (admin.token)",
            )),
        }
    }
}

/// Why a caller was turned away.
#[derive(Debug)]
pub enum Refused {
    Forbidden(String),
    Unauthorized(&'static str),
}

impl Refused {
    pub fn status(&self) -> StatusCode {
        match self {
            Refused::Forbidden(_) => StatusCode::FORBIDDEN,
            Refused::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        }
    }

    pub fn into_response(self) -> Response<Reply> {
        let status = self.status();
        match self {
            Refused::Forbidden(message) => error(status, message),
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
}
