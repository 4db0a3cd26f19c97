//! Serde adapters so that the whole state round-trips through both
//! self-describing formats (JSON, for the REST API and humans) and compact
//! binary ones (postcard or bincode, which a Raft snapshot may use).
//!
//! Two things in the state do not survive a binary format on their own:
//! `serde_json::Value` needs `deserialize_any`, and
//! [`aos_core::FieldError`] skips `location` when it is `None`. In binary
//! formats (`is_human_readable() == false`) a value travels as its JSON text
//! and a field error as a fixed tuple; JSON output is unchanged.

use aos_core::FieldError;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// `serde_json::Value`: itself in JSON, its JSON text in binary formats.
pub(crate) mod json_value {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(value: &Value, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            value.serialize(serializer)
        } else {
            serializer.serialize_str(&value.to_string())
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
        if deserializer.is_human_readable() {
            Value::deserialize(deserializer)
        } else {
            let text = String::deserialize(deserializer)?;
            serde_json::from_str(&text).map_err(D::Error::custom)
        }
    }
}

/// `Option<serde_json::Value>`, as [`json_value`].
pub(crate) mod opt_json_value {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(value: &Option<Value>, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            value.serialize(serializer)
        } else {
            value.as_ref().map(Value::to_string).serialize(serializer)
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
        if deserializer.is_human_readable() {
            Option::<Value>::deserialize(deserializer)
        } else {
            match Option::<String>::deserialize(deserializer)? {
                None => Ok(None),
                Some(text) => serde_json::from_str(&text).map(Some).map_err(D::Error::custom),
            }
        }
    }
}

/// `Vec<FieldError>`: itself in JSON, `(path, message, location)` tuples in
/// binary formats.
pub(crate) mod field_errors {
    use super::*;

    type Wire = (String, String, Option<(u64, u64)>);

    pub(crate) fn serialize<S: Serializer>(errors: &[FieldError], serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            errors.serialize(serializer)
        } else {
            let wire: Vec<Wire> = errors
                .iter()
                .map(|e| {
                    let location = e.location.map(|(line, column)| (widen(line), widen(column)));
                    (e.path.clone(), e.message.clone(), location)
                })
                .collect();
            wire.serialize(serializer)
        }
    }

    fn widen(n: usize) -> u64 {
        u64::try_from(n).unwrap_or(u64::MAX)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<FieldError>, D::Error> {
        if deserializer.is_human_readable() {
            Vec::<FieldError>::deserialize(deserializer)
        } else {
            let wire = Vec::<Wire>::deserialize(deserializer)?;
            wire.into_iter()
                .map(|(path, message, location)| {
                    let location = match location {
                        None => None,
                        Some((line, column)) => Some((
                            usize::try_from(line).map_err(D::Error::custom)?,
                            usize::try_from(column).map_err(D::Error::custom)?,
                        )),
                    };
                    Ok(FieldError { path, message, location })
                })
                .collect()
        }
    }
}

/// Serialises plain records to JSON. Our records have string keys and no
/// custom serialisers that can fail; should one ever fail, `null` is a
/// deterministic (if unhelpful) result rather than a panic in `apply`.
pub(crate) fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}
