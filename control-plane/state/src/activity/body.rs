//! A committed record's JSON, kept as the text the agent sent.
//!
//! Records are the bulk of the replicated state: every node holds each
//! one for as long as the tenant's retention says. Kept as a parsed
//! `serde_json::Value`, a 400-byte record took several kilobytes of small
//! allocations on every node and its parse was most of the ingest path's
//! apply time (measured: benches/README.md, "Record ingest"). The text is
//! kept instead, validated once at apply; the few fields the state
//! machine indexes are read from it without building a tree, and readers
//! parse a body when they need one.
//!
//! The text is a JSON object whose `tenant_id` is the tenant the record
//! was filed under (INV-003): an agent's own tenant id leaves its text as
//! sent; any other claim (or a record the fast path cannot vouch for, such
//! as one with a repeated field) is re-encoded from its parsed form with
//! the claim overwritten.

use std::borrow::Cow;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::RecordText;

/// A record's JSON object, as committed.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RecordBody(Box<RawValue>);

/// The fields of a record the state machine files it by, as serde reads
/// them (where the scan of `head.rs` declines; its tests hold the scan to
/// this).
#[derive(Debug, Deserialize)]
pub(super) struct Head<'a> {
    #[serde(borrow, default)]
    pub(super) kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) run_id: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) at_ms: Option<u64>,
    #[serde(borrow, default)]
    pub(super) tenant_id: Option<Cow<'a, str>>,
}

/// A record read from an agent's text: what it is filed by, and its body.
#[derive(Debug)]
pub(crate) struct Filed {
    /// The record's `kind` (`None`: missing or not a string).
    pub(crate) kind: Option<String>,
    /// The run it belongs to.
    pub(crate) run_id: Option<String>,
    /// When the agent produced it (0: not said).
    pub(crate) at_ms: u64,
    /// The body, filed under the tenant.
    pub(crate) body: RecordBody,
}

impl RecordBody {
    /// The body of an object the control plane built.
    pub(crate) fn from_value(value: &Value) -> Self {
        // Encoding a `Value` cannot fail.
        Self(serde_json::value::to_raw_value(value).unwrap_or_else(|_| RawValue::NULL.to_owned()))
    }

    /// Reads an agent's record text, filed under `tenant_id`; `Err` with
    /// the parser's message when it is not a JSON object.
    pub(crate) fn file(record: &RecordText, tenant_id: &str) -> Result<Filed, String> {
        let text = record.as_str();
        // An embedded object was validated as its proposal was decoded: its
        // head is read by a scan of its keys where that scan can vouch for
        // what serde would read (`head.rs`), and kept as is, without
        // another scan.
        let scanned = record.object().and_then(|object| Some((object, super::head::scan(object.get())?)));
        if let Some((object, head)) = scanned {
            if head.tenant_id == Some(tenant_id) {
                return Ok(Filed {
                    kind: head.kind.map(str::to_owned),
                    run_id: head.run_id.map(str::to_owned),
                    at_ms: head.at_ms.unwrap_or(0),
                    body: Self(object.to_owned()),
                });
            }
        } else if let Ok(head) = serde_json::from_str::<Head<'_>>(text) {
            let kind = head.kind.map(Cow::into_owned);
            let run_id = head.run_id.map(Cow::into_owned);
            let at_ms = head.at_ms.unwrap_or(0);
            if head.tenant_id.as_deref() == Some(tenant_id) {
                let raw = match record.object() {
                    Some(object) => Ok(object.to_owned()),
                    None => RawValue::from_string(text.to_owned()),
                };
                if let Ok(raw) = raw {
                    return Ok(Filed { kind, run_id, at_ms, body: Self(raw) });
                }
            }
        }
        // The slow path: any other tenant claim, repeated fields, or a
        // field of an unexpected type; the parsed form decides.
        let mut value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let Some(object) = value.as_object_mut() else {
            return Err("not a JSON object".to_owned());
        };
        object.insert("tenant_id".to_owned(), Value::String(tenant_id.to_owned()));
        let text = |field: &str| value.get(field).and_then(Value::as_str).map(str::to_owned);
        Ok(Filed {
            kind: text("kind"),
            run_id: text("run_id"),
            at_ms: value.get("at_ms").and_then(Value::as_u64).unwrap_or(0),
            body: Self::from_value(&value),
        })
    }

    /// The JSON text.
    pub fn text(&self) -> &str {
        self.0.get()
    }

    /// The body parsed (`Null` only if the text could not be, which
    /// committed text always can).
    pub fn value(&self) -> Value {
        serde_json::from_str(self.0.get()).unwrap_or(Value::Null)
    }

    /// Some fields of the body, read into `T` without building a tree
    /// when the text allows; from the parsed form (where a repeated field's
    /// last value wins) when it does not; `T::default()` when neither can.
    pub fn fields<T: DeserializeOwned + Default>(&self) -> T {
        serde_json::from_str(self.0.get())
            .or_else(|_| serde_json::from_value(self.value()))
            .unwrap_or_default()
    }
}

/// For [`RecordBody::fields`]: a number field read as `Value::as_u64`
/// reads it (anything else is 0), so one odd field does not hide the rest.
pub fn lenient_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    Ok(Value::deserialize(deserializer)?.as_u64().unwrap_or(0))
}

/// For [`RecordBody::fields`]: a string field, `None` if it is not one.
pub fn lenient_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::String(s) => Some(s),
        _ => None,
    })
}

impl PartialEq for RecordBody {
    fn eq(&self, other: &Self) -> bool {
        self.text() == other.text()
    }
}

impl fmt::Debug for RecordBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Files `text` for tenant `acme` both as it would arrive embedded as
    /// an object (when it is one) and as a string: the two must agree.
    fn file(text: &str) -> Result<Filed, String> {
        let as_string = RecordBody::file(&RecordText::Other(text.to_owned()), "acme");
        let as_sent = RecordBody::file(&RecordText::from(text), "acme");
        match (&as_sent, &as_string) {
            (Ok(a), Ok(b)) => {
                assert_eq!((&a.kind, &a.run_id, a.at_ms, &a.body), (&b.kind, &b.run_id, b.at_ms, &b.body));
            }
            (Err(a), Err(b)) => assert_eq!(a, b),
            _ => panic!("{text}: {as_sent:?} against {as_string:?}"),
        }
        as_sent
    }

    #[test]
    fn a_record_of_the_agents_own_tenant_keeps_its_text() {
        let text =
            r#"{"kind":"LLM_RUN_RECORD", "run_id":"run-1","at_ms":7,"tenant_id":"acme","x":[1,{"y":null}]}"#;
        let filed = file(text).unwrap();
        assert_eq!(filed.body.text(), text);
        assert_eq!(filed.kind.as_deref(), Some("LLM_RUN_RECORD"));
        assert_eq!(filed.run_id.as_deref(), Some("run-1"));
        assert_eq!(filed.at_ms, 7);
    }

    #[test]
    fn another_tenant_claim_is_overwritten() {
        for text in [
            r#"{"kind":"INCIDENT","tenant_id":"globex"}"#,
            r#"{"kind":"INCIDENT"}"#,
            r#"{"kind":"INCIDENT","tenant_id":7}"#,
            // A repeated field: the parsed form (last wins) decides, and the
            // text committed has it once.
            r#"{"kind":"INCIDENT","tenant_id":"acme","tenant_id":"globex"}"#,
        ] {
            let filed = file(text).unwrap();
            assert_eq!(filed.body.value(), json!({"kind": "INCIDENT", "tenant_id": "acme"}), "{text}");
            assert_eq!(filed.kind.as_deref(), Some("INCIDENT"));
        }
    }

    #[test]
    fn escaped_fields_read_the_same_on_both_paths() {
        let text = r#"{"kind":"LLM\u005fRUN_RECORD","run_id":"r\"1","tenant_id":"acme"}"#;
        let fast = file(text).unwrap();
        let slow = file(&text.replace("acme", "other")).unwrap();
        assert_eq!(fast.kind.as_deref(), Some("LLM_RUN_RECORD"));
        assert_eq!(fast.run_id.as_deref(), Some("r\"1"));
        assert_eq!((fast.kind, fast.run_id), (slow.kind, slow.run_id));
        assert_eq!(fast.body.value(), slow.body.value());
    }

    #[test]
    fn fields_of_an_unexpected_type_are_read_as_absent() {
        let filed = file(r#"{"kind":5,"run_id":["x"],"at_ms":-1,"tenant_id":"acme"}"#).unwrap();
        assert_eq!((filed.kind, filed.run_id, filed.at_ms), (None, None, 0));
    }

    #[test]
    fn fields_are_read_leniently_and_repeated_ones_as_the_last() {
        #[derive(Default, Deserialize)]
        struct Usage {
            #[serde(default, deserialize_with = "lenient_u64")]
            tokens: u64,
            #[serde(default, deserialize_with = "lenient_u64")]
            cost: u64,
            #[serde(default, deserialize_with = "lenient_string")]
            status: Option<String>,
        }
        let read = |text: &str| {
            let usage: Usage = file(text).unwrap().body.fields();
            (usage.tokens, usage.cost, usage.status)
        };
        assert_eq!(read(r#"{"tokens":5,"cost":"x","status":"running"}"#), (5, 0, Some("running".into())));
        assert_eq!(read(r#"{"tokens":5,"tokens":9,"status":1}"#), (9, 0, None));
        assert_eq!(read(r#"{"other":[{}]}"#), (0, 0, None));
    }

    #[test]
    fn what_is_not_a_json_object_is_an_error() {
        for text in ["{not json", "[1,2]", "\"x\"", "{} trailing", ""] {
            assert!(file(text).is_err(), "{text}");
        }
    }

    #[test]
    fn bodies_round_trip_through_json_and_values() {
        let filed = file(r#"{"kind":"K","tenant_id":"acme","n":1.5}"#).unwrap();
        let encoded = serde_json::to_string(&filed.body).unwrap();
        let back: RecordBody = serde_json::from_str(&encoded).unwrap();
        assert_eq!(back, filed.body);
        assert_eq!(serde_json::to_value(&back).unwrap(), json!({"kind": "K", "tenant_id": "acme", "n": 1.5}));
    }
}
