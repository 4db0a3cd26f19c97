//! [`RecordText`]: a record's text as an agent sent it, as it travels in
//! an `INGEST_RECORDS` proposal.
//!
//! A record that is a JSON object is embedded in the proposal's JSON as
//! that object, byte for byte; anything else (not JSON, or JSON that is
//! not an object, or text with whitespace around the object) as a JSON
//! string. Embedded as a string, every record was escaped by the proposing
//! node and unescaped again by every node at apply, then validated a second
//! time when it was kept (a fifth of a node's CPU under ingest load went to
//! decoding proposals and filing their records, measured with `perf`:
//! benches/README.md, "Record ingest"). Embedded as an object, it is
//! validated once by the proposing node and once by each node as its
//! proposal is decoded, and kept as it was decoded.
//!
//! Both forms decode, so entries written before objects were embedded read
//! as they always did. A node running a build from before cannot decode an
//! entry with an embedded object, and stops applying there rather than
//! diverge (`StoreError::Unappliable`); ARCHITECTURE.md says how to upgrade.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// A record's text, exactly as sent.
#[derive(Clone)]
pub enum RecordText {
    /// A JSON object, embedded as itself.
    Object(Box<RawValue>),
    /// Anything else, embedded as a JSON string.
    Other(String),
}

impl RecordText {
    /// The text, embedded as an object when it is exactly one (a validating
    /// scan; surrounding whitespace would not survive embedding, so such
    /// text stays a string).
    pub fn new(text: String) -> Self {
        if !text.starts_with('{') {
            return RecordText::Other(text);
        }
        match serde_json::from_str::<&RawValue>(&text) {
            Ok(raw) if raw.get().len() == text.len() => RecordText::Object(raw.to_owned()),
            _ => RecordText::Other(text),
        }
    }

    /// The text as sent.
    pub fn as_str(&self) -> &str {
        match self {
            RecordText::Object(raw) => raw.get(),
            RecordText::Other(text) => text,
        }
    }

    /// The text's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.as_str().as_bytes()
    }

    /// Length of the text in bytes.
    pub fn len(&self) -> usize {
        self.as_str().len()
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.as_str().is_empty()
    }

    /// The JSON object, when the text is one (already validated).
    pub(crate) fn object(&self) -> Option<&RawValue> {
        match self {
            RecordText::Object(raw) => Some(raw),
            RecordText::Other(_) => None,
        }
    }
}

impl From<String> for RecordText {
    fn from(text: String) -> Self {
        RecordText::new(text)
    }
}

impl From<&str> for RecordText {
    fn from(text: &str) -> Self {
        RecordText::new(text.to_owned())
    }
}

impl PartialEq for RecordText {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for RecordText {}

impl fmt::Debug for RecordText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for RecordText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            RecordText::Object(raw) => raw.serialize(serializer),
            RecordText::Other(text) => serializer.serialize_str(text),
        }
    }
}

impl<'de> Deserialize<'de> for RecordText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        match raw.get().as_bytes().first() {
            Some(b'{') => Ok(RecordText::Object(raw)),
            Some(b'"') => serde_json::from_str(raw.get()).map(RecordText::Other).map_err(D::Error::custom),
            _ => Err(D::Error::custom("a record's text must be a JSON object or a JSON string")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embedded(text: &str) -> String {
        serde_json::to_string(&RecordText::from(text)).unwrap()
    }

    #[test]
    fn an_object_is_embedded_as_itself_and_anything_else_as_a_string() {
        let object = r#"{"kind":"LLM_RUN_RECORD","x":[1,{"y":"\u00e9"}]}"#;
        assert_eq!(embedded(object), object);
        for other in ["{not json", "[1,2]", "\"x\"", " {}", "{} ", "{}\n", "", "null", "{\"a\":1} trailing"] {
            assert_eq!(embedded(other), serde_json::to_string(other).unwrap(), "{other:?}");
        }
    }

    #[test]
    fn every_text_reads_back_exactly_as_sent() {
        for text in [r#"{"a":"b\"c","n":[1.5e3,null]}"#, "{}", "{not json", "[1]", "\"s\"", " {} ", "é\u{0}"]
        {
            let encoded = embedded(text);
            let back: RecordText = serde_json::from_str(&encoded).unwrap();
            assert_eq!(back.as_str(), text, "{encoded}");
            assert_eq!(back.object().is_some(), text.starts_with('{') && encoded == text);
        }
    }

    #[test]
    fn a_string_written_by_earlier_builds_reads_as_the_same_text() {
        // Earlier builds embedded every record as a string, objects too.
        let object = r#"{"kind":"INCIDENT"}"#;
        let back: RecordText = serde_json::from_str(&serde_json::to_string(object).unwrap()).unwrap();
        assert_eq!(back, RecordText::from(object));
        assert_eq!(back.as_str(), object);
    }

    #[test]
    fn what_is_neither_an_object_nor_a_string_does_not_decode() {
        for bad in ["[1]", "1", "null", "true"] {
            assert!(serde_json::from_str::<RecordText>(bad).is_err(), "{bad}");
        }
    }
}
