//! Field-level validation errors shared by documents, policies and snapshots.

use std::fmt;

/// One problem with one field, located by its path in the document
/// (e.g. `policies[2].limits[0].window`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldError {
    /// Dotted path with indices; empty for the document root.
    pub path: String,
    /// What is wrong, naming the bad value.
    pub message: String,
    /// 1-based line and column in the source text, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<(usize, usize)>,
}

impl FieldError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError { path: path.into(), message: message.into(), location: None }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)?;
        } else {
            write!(f, "{}: {}", self.path, self.message)?;
        }
        if let Some((line, column)) = self.location {
            write!(f, " (line {line}, column {column})")?;
        }
        Ok(())
    }
}

/// A non-empty list of field errors, displayed one per line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct FieldErrors(pub Vec<FieldError>);

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for FieldErrors {}

impl FieldError {
    /// An error at a lazily rendered path.
    pub(crate) fn at(path: &crate::path::FieldPath<'_>, message: impl Into<String>) -> Self {
        FieldError::new(path.to_string(), message)
    }
}
