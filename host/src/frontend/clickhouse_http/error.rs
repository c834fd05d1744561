//! The frontend's one error type, answered the way ClickHouse answers errors: a plain-text body
//! `Code: N, e.displayText() = DB::Exception: <message>, e.what() = DB::Exception` and an HTTP
//! status chosen per case (see the table in the module docs).

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use http::{Response, StatusCode};

use super::body;
use crate::backend::clickhouse_http::Body;

/// ClickHouse error codes the proxy uses for its own errors.
pub mod code {
    pub const BAD_ARGUMENTS: u32 = 36;
    pub const SYNTAX_ERROR: u32 = 62;
    pub const UNKNOWN_DATABASE: u32 = 81;
    pub const TIMEOUT_EXCEEDED: u32 = 159;
    pub const UNKNOWN_USER_OR_MIXED_AUTH: u32 = 194;
    pub const IP_ADDRESS_NOT_ALLOWED: u32 = 195;
    pub const QUOTA_EXPIRED: u32 = 201;
    pub const TOO_MANY_SIMULTANEOUS_QUERIES: u32 = 202;
    pub const NETWORK_ERROR: u32 = 210;
    pub const TOO_LARGE_REQUEST: u32 = 307;
    pub const ACCESS_DENIED: u32 = 497;
    pub const AUTHENTICATION_FAILED: u32 = 516;
    pub const NOT_IMPLEMENTED: u32 = 48;
    pub const QUERY_WAS_CANCELLED: u32 = 394;
    pub const POLICY_FAILED: u32 = 1001;
}

/// An answer the proxy gives instead of the backend's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Code: {code}, e.displayText() = DB::Exception: {message}")]
pub struct ChError {
    pub status: StatusCode,
    pub code: u32,
    pub message: String,
}

impl ChError {
    pub fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        ChError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(code: u32, message: impl Into<String>) -> Self {
        ChError::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(user: &str) -> Self {
        ChError::new(
            StatusCode::UNAUTHORIZED,
            code::AUTHENTICATION_FAILED,
            format!(
                "{user}: Authentication failed: password is incorrect or there is no user with such name"
            ),
        )
    }

    pub fn forbidden(code: u32, message: impl Into<String>) -> Self {
        ChError::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn bad_gateway(message: impl Into<String>) -> Self {
        ChError::new(StatusCode::BAD_GATEWAY, code::NETWORK_ERROR, message)
    }

    pub fn internal(code: u32, message: impl Into<String>) -> Self {
        ChError::new(StatusCode::INTERNAL_SERVER_ERROR, code, message)
    }

    /// The body ClickHouse would send.
    pub fn body_text(&self) -> String {
        format!("{self}, e.what() = DB::Exception\n")
    }

    pub fn into_response(self) -> Response<Body> {
        let mut response = Response::new(body::full(Bytes::from(self.body_text())));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=UTF-8"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"ClickHouse server HTTP API\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_like_clickhouse() {
        let e = ChError::forbidden(code::ACCESS_DENIED, "guard: DROP is not allowed");
        assert_eq!(
            e.body_text(),
            "Code: 497, e.displayText() = DB::Exception: guard: DROP is not allowed, e.what() = DB::Exception\n"
        );
        let r = ChError::unauthorized("bob").into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers().contains_key(WWW_AUTHENTICATE));
    }
}
