//! Errors raised while building or running the equivalent Cedar / Rego decisions.

/// A boxed foreign error (Cedar's error types are large; regorus uses `anyhow`).
pub type BoxedError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why an equivalent engine could not be built or could not decide.
#[derive(Debug, thiserror::Error)]
pub enum EquivError {
    /// Cedar rejected something (policy text, policy set, entity uid, context, request).
    #[error("cedar: {what}: {source}")]
    Cedar {
        /// What was being built or evaluated.
        what: String,
        /// Cedar's error.
        #[source]
        source: BoxedError,
    },
    /// Cedar evaluated but reported evaluation errors (none are expected here).
    #[error("cedar evaluation errors: {0}")]
    CedarEvaluation(String),
    /// A `u64` that does not fit Cedar's `Long` (i64).
    #[error("{field} = {value} does not fit a Cedar Long (i64)")]
    LongOverflow {
        /// Which value.
        field: &'static str,
        /// The value.
        value: u64,
    },
    /// regorus rejected something (module, data, evaluation).
    #[error("regorus: {what}: {source}")]
    Rego {
        /// What was being built or evaluated.
        what: &'static str,
        /// regorus' error.
        #[source]
        source: BoxedError,
    },
    /// A decision that does not have the expected shape.
    #[error("unexpected decision: {0}")]
    UnexpectedDecision(String),
}

impl EquivError {
    pub(crate) fn cedar(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Cedar { what: what.into(), source: Box::new(source) }
    }

    pub(crate) fn rego(what: &'static str, source: impl Into<BoxedError>) -> Self {
        Self::Rego { what, source: source.into() }
    }
}
