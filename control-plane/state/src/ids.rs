//! Input checks shared by the command handlers: identifiers, names,
//! reasons. Ids follow aos-core's rules (the same ones a snapshot enforces
//! on tenant and policy ids) so that anything the state accepts can be put
//! in a snapshot, a path, a log line or a metrics label.

use aos_core::FieldError;

/// Longest display name or free-text reason.
pub(crate) const MAX_TEXT_LEN: usize = 1024;

/// Appends an error at `path` unless `id` is a valid identifier.
pub(crate) fn check_id(errors: &mut Vec<FieldError>, path: &str, id: &str) {
    if let Some(problem) = aos_core::compile::id_problem(id) {
        errors.push(FieldError::new(path, problem));
    }
}

/// Appends an error at `path` unless `text` is non-blank and not too long.
pub(crate) fn check_text(errors: &mut Vec<FieldError>, path: &str, text: &str) {
    if text.trim().is_empty() {
        errors.push(FieldError::new(path, "must not be empty"));
    } else if text.len() > MAX_TEXT_LEN {
        errors
            .push(FieldError::new(path, format!("must be at most {MAX_TEXT_LEN} bytes, got {}", text.len())));
    }
}

/// Appends an error at `path` unless `hash` is 64 lowercase hex characters.
/// The message never echoes the value.
pub(crate) fn check_sha256_hex(errors: &mut Vec<FieldError>, path: &str, hash: &str) {
    if hash.len() != 64 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        errors.push(FieldError::new(path, "must be a SHA-256 digest: 64 lowercase hex characters"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(f: impl FnOnce(&mut Vec<FieldError>)) -> Vec<String> {
        let mut errors = Vec::new();
        f(&mut errors);
        errors.into_iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn ids_follow_core_rules() {
        assert!(errors(|e| check_id(e, "id", "acme-prod_1.eu:x")).is_empty());
        assert_eq!(errors(|e| check_id(e, "id", "")), ["id: must not be empty"]);
        assert_eq!(
            errors(|e| check_id(e, "tenant_id", "a b")),
            ["tenant_id: invalid character ' ' in \"a b\" (allowed: letters, digits, '-', '_', '.', ':')"]
        );
        assert_eq!(errors(|e| check_id(e, "id", &"x".repeat(aos_core::compile::MAX_ID_LEN + 1))).len(), 1);
    }

    #[test]
    fn text_and_hashes() {
        assert_eq!(errors(|e| check_text(e, "name", "  ")), ["name: must not be empty"]);
        assert!(errors(|e| check_text(e, "name", "Acme")).is_empty());
        assert!(errors(|e| check_sha256_hex(e, "h", &"ab".repeat(32))).is_empty());
        let upper = errors(|e| check_sha256_hex(e, "h", &"AB".repeat(32)));
        assert_eq!(upper.len(), 1);
        assert!(!upper[0].contains("AB"), "the value is not echoed");
    }
}
