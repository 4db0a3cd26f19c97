//! Policy documents: policy as code, authored in YAML or JSON.
//!
//! ```yaml
//! api_version: aos/v1
//! policies:
//!   - id: pol-run-tokens
//!     name: Per-run token budget
//!     status: ACTIVE
//!     scope: { type: ALL_RUNS }
//!     monitors: { tokens: true }
//!     limits:
//!       - { signal: TOKENS, max: 50000, window: PER_RUN }
//! ```
//!
//! Parsing and validation report every problem with the field path, the bad
//! value and, for syntax and type errors, the line and column, e.g.
//! `policies[2].limits[0].window: unknown value "weekly" (expected PER_RUN,
//! PER_SESSION, TEMPORAL) (line 14, column 17)`.

use serde::{Deserialize, Serialize};

use crate::compile::compile_policy_at;
use crate::error::{FieldError, FieldErrors};
use crate::path::FieldPath;
use crate::policy::Policy;

/// The only document version this build understands.
pub const API_VERSION: &str = "aos/v1";

/// A set of policies as authored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicyDocument {
    /// Must be `aos/v1`.
    pub api_version: String,
    /// The policies; ids must be unique within the document.
    pub policies: Vec<Policy>,
}

/// Source format of a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentFormat {
    /// YAML 1.2 (a superset of JSON in practice).
    Yaml,
    /// JSON.
    Json,
}

impl DocumentFormat {
    /// JSON when the first non-blank character opens an object, else YAML.
    pub fn detect(text: &str) -> Self {
        if text.trim_start().starts_with('{') { DocumentFormat::Json } else { DocumentFormat::Yaml }
    }
}

/// Why a document was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DocumentError {
    /// The text is not well-formed YAML/JSON, or a field has the wrong shape.
    #[error("{0}")]
    Parse(FieldError),
    /// Well-formed, but one or more fields are invalid.
    #[error("{0}")]
    Invalid(FieldErrors),
}

impl DocumentError {
    /// Every field error, in document order.
    pub fn field_errors(&self) -> Vec<FieldError> {
        match self {
            DocumentError::Parse(e) => vec![e.clone()],
            DocumentError::Invalid(errors) => errors.0.clone(),
        }
    }
}

/// Parses and validates a policy document.
pub fn parse_document(text: &str, format: DocumentFormat) -> Result<PolicyDocument, DocumentError> {
    let document: PolicyDocument = match format {
        DocumentFormat::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(&mut de).map_err(|e| {
                let location = Some((e.inner().line(), e.inner().column()));
                DocumentError::Parse(to_field_error(&e.path().to_string(), &e.inner().to_string(), location))
            })?
        }
        DocumentFormat::Yaml => {
            let de = serde_yaml_ng::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let location = e.inner().location().map(|l| (l.line(), l.column()));
                DocumentError::Parse(to_field_error(&e.path().to_string(), &e.inner().to_string(), location))
            })?
        }
    };
    document.validate().map_err(DocumentError::Invalid)?;
    Ok(document)
}

impl PolicyDocument {
    /// Checks the version, every policy, and id uniqueness.
    pub fn validate(&self) -> Result<(), FieldErrors> {
        let mut errors = Vec::new();
        if self.api_version != API_VERSION {
            errors.push(FieldError::new(
                "api_version",
                format!("unsupported value {:?} (expected {API_VERSION:?})", self.api_version),
            ));
        }
        let policies_path = FieldPath::ROOT.field("policies");
        for (i, policy) in self.policies.iter().enumerate() {
            let path = policies_path.index(i);
            compile_policy_at(policy, &path, &mut errors);
            if let Some(first) = self.policies[..i].iter().position(|p| p.id == policy.id) {
                errors.push(FieldError::at(
                    &path.field("id"),
                    format!("duplicate policy id {:?} (first used at policies[{first}])", policy.id),
                ));
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(FieldErrors(errors)) }
    }
}

/// Turns a serde message into our wording: the path stays separate, the
/// location is carried structurally, and serde's ``unknown variant `x`,
/// expected one of `A`, `B` `` becomes `unknown value "x" (expected A, B)`.
fn to_field_error(path: &str, message: &str, location: Option<(usize, usize)>) -> FieldError {
    let path = if path == "." { "" } else { path };
    let mut message = strip_path_prefix(strip_location(message)).to_owned();
    for (serde_word, ours) in [("unknown variant", "unknown value"), ("unknown field", "unknown field")] {
        if let Some(rewritten) = rewrite_unknown(&message, serde_word, ours) {
            message = rewritten;
        }
    }
    FieldError { path: path.to_owned(), message, location: location.filter(|(l, _)| *l > 0) }
}

/// serde_yaml_ng prefixes messages with the path it knows; ours is kept
/// separately, so drop a leading `path: `.
fn strip_path_prefix(message: &str) -> &str {
    match message.split_once(": ") {
        Some((head, rest))
            if !head.is_empty()
                && head
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'[' | b']')) =>
        {
            rest
        }
        _ => message,
    }
}

fn strip_location(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) if message[i..].contains(" column ") => &message[..i],
        _ => message,
    }
}

fn rewrite_unknown(message: &str, serde_word: &str, ours: &str) -> Option<String> {
    let rest = message.strip_prefix(serde_word)?.strip_prefix(" `")?;
    let (value, rest) = rest.split_once('`')?;
    let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    if expected.is_empty() {
        Some(format!("{ours} {value:?} (expected nothing here)"))
    } else {
        Some(format!("{ours} {value:?} (expected {})", expected.join(", ")))
    }
}

#[cfg(test)]
mod tests;
