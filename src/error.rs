//! The one error type of the request path. Every error says who is to blame (downstream,
//! upstream or Rempart itself) and whether a retry on another upstream server is allowed;
//! `pipeline::respond` is the only place that turns it into an HTTP response.

use http::StatusCode;

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The client sent something wrong.
    Downstream,
    /// The origin failed.
    Upstream,
    /// Rempart itself.
    Internal,
}

/// What went wrong while handling a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// No tenant serves this host (and no default tenant).
    #[error("unknown host")]
    UnknownHost,
    /// The request has no usable host.
    #[error("missing or invalid host")]
    BadHost,
    /// No route matches the path.
    #[error("no route")]
    NoRoute,
    /// The body is larger than the route allows.
    #[error("request body too large")]
    BodyTooLarge,
    /// The request is malformed.
    #[error("bad request")]
    BadRequest,
    /// The request target has no safe reading (a path the normaliser refuses, an
    /// asterisk-form or authority-form target, an encoded separator a route did not allow).
    #[error("bad request target")]
    BadTarget,
    /// The request target is longer than the gateway accepts.
    #[error("request target too long")]
    UriTooLong,
    /// A method a gateway must not forward (`CONNECT`).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Over the per-address request rate.
    #[error("rate limited (address)")]
    RateLimitedAddress,
    /// Over the per-prefix request rate.
    #[error("rate limited (prefix)")]
    RateLimitedPrefix,
    /// An API route without a valid key.
    #[error("api key required")]
    ApiKeyRequired,
    /// Over the per-key request rate of an API route.
    #[error("rate limited (api key)")]
    RateLimitedKey,
    /// Over the per-fingerprint request rate.
    #[error("rate limited (fingerprint)")]
    RateLimitedFingerprint,
    /// Over the per-pass request rate.
    #[error("rate limited (pass)")]
    RateLimitedPass,
    /// The origin is at capacity and the request could not wait (load shedding).
    #[error("shed")]
    Shed,
    /// The client sent its body too slowly (slow POST).
    #[error("request body too slow")]
    BodyTooSlow,
    /// The client address or network is banned.
    #[error("banned")]
    Banned,
    /// The upstream refused or could not be reached before anything was sent.
    #[error("upstream unreachable")]
    UpstreamConnect,
    /// The upstream failed after the request was sent (reset, bad response).
    #[error("upstream failed")]
    UpstreamFailed,
    /// The upstream did not answer in time.
    #[error("upstream timeout")]
    UpstreamTimeout,
    /// The account is over a `block` budget of the data guard.
    #[error("record quota reached")]
    QuotaReached,
    /// The account is suspended by the data guard.
    #[error("account suspended")]
    AccountSuspended,
    /// The tenant or route is in maintenance mode.
    #[error("maintenance")]
    Maintenance,
    /// Rempart failed.
    #[error("internal error")]
    Internal,
}

impl ProxyError {
    /// Who is to blame.
    pub fn blame(self) -> Blame {
        match self {
            Self::UnknownHost
            | Self::BadHost
            | Self::NoRoute
            | Self::BodyTooLarge
            | Self::BadRequest
            | Self::BadTarget
            | Self::UriTooLong
            | Self::MethodNotAllowed
            | Self::RateLimitedAddress
            | Self::RateLimitedPrefix
            | Self::RateLimitedPass
            | Self::RateLimitedFingerprint
            | Self::RateLimitedKey
            | Self::ApiKeyRequired
            | Self::Banned
            | Self::QuotaReached
            | Self::AccountSuspended
            | Self::BodyTooSlow => Blame::Downstream,
            Self::UpstreamConnect | Self::UpstreamFailed | Self::UpstreamTimeout => Blame::Upstream,
            Self::Internal | Self::Shed | Self::Maintenance => Blame::Internal,
        }
    }

    /// Whether an idempotent request may be retried on another server.
    pub fn retryable(self) -> bool {
        matches!(self, Self::UpstreamConnect)
    }

    /// The status sent downstream.
    pub fn status(self) -> StatusCode {
        match self {
            Self::UnknownHost => StatusCode::MISDIRECTED_REQUEST,
            Self::BadHost | Self::BadRequest | Self::BadTarget => StatusCode::BAD_REQUEST,
            Self::UriTooLong => StatusCode::URI_TOO_LONG,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimitedAddress
            | Self::RateLimitedPrefix
            | Self::RateLimitedPass
            | Self::RateLimitedFingerprint
            | Self::RateLimitedKey => StatusCode::TOO_MANY_REQUESTS,
            Self::ApiKeyRequired => StatusCode::UNAUTHORIZED,
            Self::Shed | Self::Maintenance => StatusCode::SERVICE_UNAVAILABLE,
            Self::Banned | Self::QuotaReached | Self::AccountSuspended => StatusCode::FORBIDDEN,
            Self::BodyTooSlow => StatusCode::REQUEST_TIMEOUT,
            Self::UpstreamConnect | Self::UpstreamFailed => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Short reason recorded in the access log.
    pub fn reason(self) -> &'static str {
        match self {
            Self::UnknownHost => "unknown_host",
            Self::BadHost => "bad_host",
            Self::NoRoute => "no_route",
            Self::BodyTooLarge => "body_too_large",
            Self::BadRequest => "bad_request",
            Self::BadTarget => "bad_target",
            Self::UriTooLong => "uri_too_long",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RateLimitedAddress => "rate_limited_address",
            Self::RateLimitedPrefix => "rate_limited_prefix",
            Self::RateLimitedPass => "rate_limited_pass",
            Self::RateLimitedFingerprint => "rate_limited_fingerprint",
            Self::RateLimitedKey => "rate_limited_key",
            Self::ApiKeyRequired => "api_key_required",
            Self::Shed => "shed",
            Self::Maintenance => "maintenance",
            Self::Banned => "banned",
            Self::QuotaReached => "guard_quota",
            Self::AccountSuspended => "guard_suspended",
            Self::BodyTooSlow => "body_too_slow",
            Self::UpstreamConnect => "upstream_connect",
            Self::UpstreamFailed => "upstream_failed",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::Internal => "internal",
        }
    }

    /// Whether the error is one of the rate limits (answered with `Retry-After: 1`, and held
    /// in the tarpit when the tenant has one).
    pub fn is_rate_limit(self) -> bool {
        matches!(
            self,
            Self::RateLimitedAddress
                | Self::RateLimitedPrefix
                | Self::RateLimitedPass
                | Self::RateLimitedFingerprint
                | Self::RateLimitedKey
        )
    }

    /// Whether the connection is closed after the answer (HTTP/1): a refusal that leaves
    /// the stream in doubt (a body not read, bytes after a `CONNECT`, a malformed head), so
    /// nothing the client sent after it is read as a new request.
    pub fn closes_connection(self) -> bool {
        matches!(
            self,
            Self::BadHost
                | Self::BadRequest
                | Self::BadTarget
                | Self::UriTooLong
                | Self::MethodNotAllowed
                | Self::BodyTooLarge
                | Self::BodyTooSlow
        )
    }

    /// With what caused it.
    pub fn because(self, cause: impl std::fmt::Display) -> Failure {
        Failure {
            error: self,
            cause: Some(cause.to_string().into_boxed_str()),
        }
    }
}

/// An error with what caused it, for the access log (`cause`) and debug logs; the client
/// only ever sees the error's page. A cause never holds personal data: it names the
/// gateway's own view (an upstream address, an I/O error), never the client's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong.
    pub error: ProxyError,
    /// What caused it, when known.
    pub cause: Option<Box<str>>,
}

impl From<ProxyError> for Failure {
    fn from(error: ProxyError) -> Self {
        Self { error, cause: None }
    }
}
