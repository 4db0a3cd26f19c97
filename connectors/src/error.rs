//! The one error type of the connectors: what failed and where, never a
//! credential.

use aos_core::access::ParamError;

/// Why an access or probe failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectorError {
    /// A parameter is missing, undeclared or of the wrong type.
    #[error("parameter `{name}`: {problem}")]
    Param {
        /// The parameter.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// The source's configuration cannot be executed.
    #[error("source `{source_id}` {problem}")]
    Config {
        /// The source.
        source_id: String,
        /// What is wrong.
        problem: String,
    },
    /// The source needs a credential and none is set (or it did not open).
    #[error("no usable credential: {0}")]
    Credential(String),
    /// The call took longer than the source allows.
    #[error("timed out after {after_ms} ms")]
    Timeout {
        /// The source's timeout.
        after_ms: u64,
    },
    /// The response exceeded the source's size cap.
    #[error("response larger than the {limit} bytes the source allows")]
    TooLarge {
        /// The cap.
        limit: u64,
    },
    /// A read-only template tried to write.
    #[error("the template is read-only but the statement writes")]
    ReadOnly,
    /// The upstream answered with a redirect, which is never followed.
    #[error("upstream answered {status} redirecting to {location:?}; redirects are not followed")]
    Redirect {
        /// HTTP status.
        status: u16,
        /// The `Location` header.
        location: String,
    },
    /// The upstream answered with an error status.
    #[error("upstream answered HTTP {status}")]
    Status {
        /// HTTP status.
        status: u16,
    },
    /// The database or server refused or failed.
    #[error("{0}")]
    Upstream(String),
    /// The target may not be reached from where the call runs (a private
    /// address from the control plane).
    #[error("{0}")]
    Refused(String),
    /// This asset type has no executable connector yet.
    #[error("{asset_type} sources have no connector in this edge agent")]
    Unsupported {
        /// The asset type.
        asset_type: &'static str,
    },
}

impl ConnectorError {
    /// A stable code for API bodies and evidence, e.g. `TIMEOUT`.
    pub fn code(&self) -> &'static str {
        match self {
            ConnectorError::Param { .. } => "INVALID_PARAMS",
            ConnectorError::Config { .. } => "SOURCE_MISCONFIGURED",
            ConnectorError::Credential(_) => "CREDENTIAL_UNAVAILABLE",
            ConnectorError::Timeout { .. } => "TIMEOUT",
            ConnectorError::TooLarge { .. } => "RESPONSE_TOO_LARGE",
            ConnectorError::ReadOnly => "READ_ONLY_VIOLATION",
            ConnectorError::Redirect { .. } => "REDIRECT_REFUSED",
            ConnectorError::Status { .. } => "UPSTREAM_STATUS",
            ConnectorError::Upstream(_) => "UPSTREAM_FAILED",
            ConnectorError::Refused(_) => "TARGET_REFUSED",
            ConnectorError::Unsupported { .. } => "UNSUPPORTED_SOURCE",
        }
    }

    /// Whether the workload's input caused it (400) rather than the source
    /// (502/504).
    pub fn is_caller_error(&self) -> bool {
        matches!(self, ConnectorError::Param { .. })
    }
}

impl From<ParamError> for ConnectorError {
    fn from(e: ParamError) -> Self {
        ConnectorError::Param { name: e.name, problem: e.problem }
    }
}
