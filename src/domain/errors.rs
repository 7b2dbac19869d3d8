//! The cases callers branch on. `api/errors.rs` is the one place that maps them to Twilio's
//! error body; `Internal` is logged with its cause chain and answered with a generic 500.
//!
//! May depend on: thiserror, anyhow.

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The addressed resource does not exist (or is not visible to the caller).
    #[error("not found")]
    NotFound,
    /// A required parameter is absent.
    #[error("Missing required parameter {0}")]
    MissingParam(String),
    /// A parameter has an invalid value; the message names the parameter.
    #[error("Invalid parameter {param}: {reason}")]
    InvalidParam { param: String, reason: String },
    /// A user with this identity already exists in the service.
    #[error("User already exists: {0}")]
    DuplicateIdentity(String),
    /// A conflicting state, other than a duplicate identity.
    #[error("{0}")]
    Conflict(String),
    /// A per-identity or per-token limit is reached (429).
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// Storage cannot take writes right now (read-only file, writer stopped).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// This node's cluster membership has lapsed (it may have been taken over): it must not
    /// act on what it held before, and serves presence again once it has rejoined (503).
    #[error("this node's cluster lease has lapsed; retry (another node serves presence)")]
    Fenced,
    /// Anything unexpected: a bug or an I/O failure.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn invalid(param: &str, reason: impl Into<String>) -> Self {
        Error::InvalidParam {
            param: param.to_string(),
            reason: reason.into(),
        }
    }
}
