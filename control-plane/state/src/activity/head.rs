//! The fields a record is filed by, read from its JSON object by a scan of
//! the object's top-level keys.
//!
//! Every node reads four fields of every record it applies (`kind`,
//! `run_id`, `at_ms`, `tenant_id`). serde's derived reader validated every
//! byte of the record again and tokenised every value it skipped: 7 % of
//! the three nodes' CPU under ingest load, on text that was validated
//! moments before, as its proposal was decoded (benches/README.md,
//! "Record ingest", session 35). This scan trusts that validation: it walks
//! the top-level keys, jumps over every other value (a string to its
//! closing quote, a nested value to its matching bracket) and reads the
//! four fields only where serde would read them the same way.
//!
//! [`scan`] answers `None` whenever it cannot vouch for serde's answer — a
//! key or a wanted string with an escape, a wanted field of another type
//! or repeated, a number that is not a plain `u64` — and the caller then
//! asks serde. So `Some` always equals what serde reads (property test
//! below), and `None` only costs the slower read.

use memchr::memchr2;

/// The four fields, borrowed from the text; `None` where a field is
/// absent or `null` (as serde reads an `Option`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head<'a> {
    pub(crate) kind: Option<&'a str>,
    pub(crate) run_id: Option<&'a str>,
    pub(crate) at_ms: Option<u64>,
    pub(crate) tenant_id: Option<&'a str>,
}

/// Reads the head of `text`, a JSON object already validated (an embedded
/// [`RecordText`](super::RecordText) object); see the module
/// documentation for when it answers `None`. Never panics, whatever the
/// text.
pub(crate) fn scan(text: &str) -> Option<Head<'_>> {
    let mut scanner = Scanner { text, bytes: text.as_bytes(), at: 0 };
    let mut head = Head::default();
    let mut seen = [false; 4];
    scanner.skip_ws();
    scanner.expect(b'{')?;
    scanner.skip_ws();
    if scanner.peek()? == b'}' {
        return Some(head);
    }
    loop {
        let key = scanner.plain_string()?;
        scanner.skip_ws();
        scanner.expect(b':')?;
        scanner.skip_ws();
        let field = match key {
            "kind" => Some(0),
            "run_id" => Some(1),
            "at_ms" => Some(2),
            "tenant_id" => Some(3),
            _ => None,
        };
        match field {
            None => scanner.skip_value()?,
            Some(index) => {
                // serde refuses a repeated field; the caller's fallback
                // then decides.
                if std::mem::replace(&mut seen[index], true) {
                    return None;
                }
                match index {
                    0 => head.kind = scanner.optional_string()?,
                    1 => head.run_id = scanner.optional_string()?,
                    2 => head.at_ms = scanner.optional_u64()?,
                    _ => head.tenant_id = scanner.optional_string()?,
                }
            }
        }
        scanner.skip_ws();
        match scanner.next()? {
            b',' => scanner.skip_ws(),
            b'}' => return Some(head),
            _ => return None,
        }
    }
}

/// Where the first `"` or `\` of `bytes` is, eight bytes at a time (the
/// zero-byte test of a word XORed with each: the lowest flagged byte is
/// always a true match, and that is the one taken). Most strings in a
/// record are short (keys, ids, hashes), too short for `memchr2`'s set-up
/// to pay; `memchr2` is kept for what is left past the first 64 bytes,
/// such as a prompt's text.
fn quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const QUOTES: u64 = ONES * b'"' as u64;
    const BACKSLASHES: u64 = ONES * b'\\' as u64;
    let mut at = 0;
    while at < 64 {
        let Some(chunk) = bytes.get(at..at + 8) else {
            let rest = bytes.get(at..)?;
            return rest.iter().position(|&b| b == b'"' || b == b'\\').map(|i| at + i);
        };
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let (quote, backslash) = (word ^ QUOTES, word ^ BACKSLASHES);
        let found =
            ((quote.wrapping_sub(ONES) & !quote) | (backslash.wrapping_sub(ONES) & !backslash)) & HIGHS;
        if found != 0 {
            return usize::try_from(found.trailing_zeros() / 8).ok().map(|i| at + i);
        }
        at += 8;
    }
    memchr2(b'"', b'\\', bytes.get(at..)?).map(|i| at + i)
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// A string without escapes, returned without its quotes; `None` for
    /// anything else.
    fn plain_string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        let end = start + quote_or_backslash(self.bytes.get(start..)?)?;
        if self.bytes.get(end) != Some(&b'"') {
            return None;
        }
        self.at = end + 1;
        // Quotes are ASCII, so both ends are character boundaries.
        self.text.get(start..end)
    }

    /// `null` or a string without escapes.
    fn optional_string(&mut self) -> Option<Option<&'a str>> {
        match self.peek()? {
            b'n' => self.null().map(|()| None),
            _ => self.plain_string().map(Some),
        }
    }

    /// `null` or an integer in `0..=u64::MAX` without fraction or exponent.
    fn optional_u64(&mut self) -> Option<Option<u64>> {
        if self.peek()? == b'n' {
            return self.null().map(|()| None);
        }
        let mut value: u64 = 0;
        let start = self.at;
        while let Some(digit @ b'0'..=b'9') = self.peek() {
            value = value.checked_mul(10)?.checked_add(u64::from(digit - b'0'))?;
            self.at += 1;
        }
        if self.at == start || matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(Some(value))
    }

    fn null(&mut self) -> Option<()> {
        let end = self.at.checked_add(4)?;
        if self.bytes.get(self.at..end)? != b"null" {
            return None;
        }
        self.at = end;
        Some(())
    }

    /// Past one string (escapes included), from its opening quote.
    fn skip_string(&mut self) -> Option<()> {
        self.expect(b'"')?;
        loop {
            let found = self.at + quote_or_backslash(self.bytes.get(self.at..)?)?;
            match self.bytes.get(found)? {
                b'"' => {
                    self.at = found + 1;
                    return Some(());
                }
                // An escape: the next byte is its letter (`\"` included).
                _ => self.at = found + 2,
            }
        }
    }

    /// Past one value of any kind.
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.skip_string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth = depth.checked_sub(1)?;
                            if depth == 0 {
                                self.at += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.at += 1;
                }
            }
            _ => {
                // A number, `true`, `false` or `null`: up to the next
                // delimiter.
                let start = self.at;
                while !matches!(self.peek(), None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')) {
                    self.at += 1;
                }
                (self.at > start).then_some(())
            }
        }
    }
}

#[cfg(test)]
mod tests {

    use proptest::prelude::*;
    use serde::Deserialize;

    use super::*;

    /// What serde's derived reader makes of the same text (the reader
    /// this scan stands in for).
    type SerdeHead<'a> = super::super::body::Head<'a>;

    /// The same with borrowed strings: serde reads it only when no wanted
    /// string needs unescaping (`Option<Cow<str>>` is always owned, so it
    /// cannot tell).
    #[derive(Debug, Deserialize)]
    #[allow(dead_code, reason = "read by serde only, for whether it can be")]
    struct BorrowedHead<'a> {
        #[serde(default)]
        kind: Option<&'a str>,
        #[serde(default)]
        run_id: Option<&'a str>,
        #[serde(default)]
        at_ms: Option<u64>,
        #[serde(default)]
        tenant_id: Option<&'a str>,
    }

    fn serde_head(text: &str) -> Option<SerdeHead<'_>> {
        serde_json::from_str(text).ok()
    }

    #[test]
    fn an_agents_record_is_read_by_the_scan() {
        let text = concat!(
            r#"{"record_id":"rec-1","tenant_id":"acme","run_id":"run-1","at_ms":1790000000000,"#,
            r#""kind":"LLM_RUN_RECORD","prompt":null,"usage":{"input_tokens":900,"tags":["a","}"]},"#,
            r#""note":"say \"hi\" {","ok":true,"ratio":-1.5e3,"#,
            r#""prompt_hash":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","#,
            r#""prompt":"a prompt longer than the short loop looks, with a \"quote\" past it"}"#
        );
        assert_eq!(
            scan(text),
            Some(Head {
                kind: Some("LLM_RUN_RECORD"),
                run_id: Some("run-1"),
                at_ms: Some(1_790_000_000_000),
                tenant_id: Some("acme"),
            })
        );
        assert_eq!(scan(" { } "), Some(Head::default()));
        assert_eq!(scan(r#"{"kind":null,"at_ms":null}"#), Some(Head::default()));
    }

    #[test]
    fn what_serde_would_read_otherwise_or_refuse_is_left_to_serde() {
        for text in [
            // Escapes: serde unescapes them.
            r#"{"kind":"LLM\u005fRUN"}"#,
            r#"{"k\u0069nd":"X"}"#,
            // Repeated fields: serde refuses them.
            r#"{"tenant_id":"acme","tenant_id":"globex"}"#,
            // Other types, and numbers that are not a plain u64.
            r#"{"kind":5}"#,
            r#"{"at_ms":-1}"#,
            r#"{"at_ms":1.0}"#,
            r#"{"at_ms":1e3}"#,
            r#"{"at_ms":18446744073709551616}"#,
            r#"{"at_ms":"7"}"#,
            // Not an object.
            r#"["kind"]"#,
            "",
        ] {
            assert_eq!(scan(text), None, "{text}");
        }
        assert_eq!(scan(r#"{"at_ms":18446744073709551615}"#).and_then(|h| h.at_ms), Some(u64::MAX));
    }

    #[test]
    fn text_cut_anywhere_never_panics() {
        let text = r#"{"a":{"b":["}",{"c":"\"\\"}]},"kind":"K","at_ms":12,"tenant_id":null,"z":"é"}"#;
        for end in 0..=text.len() {
            if let Some(prefix) = text.get(..end) {
                let _ = scan(prefix);
            }
        }
        for start in 0..text.len() {
            if let Some(suffix) = text.get(start..) {
                let _ = scan(suffix);
            }
        }
    }

    /// A JSON value of any kind, nested a little, with escapes and
    /// brackets inside strings.
    fn value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            Just("18446744073709551616".to_owned()),
            Just("-0".to_owned()),
            (-1.0e6f64..1.0e6).prop_map(|f| format!("{f:e}")),
            "[a-z]{0,8}".prop_map(|s| format!("\"{s}\"")),
            // Long enough to be searched past the short loop, escapes on
            // either side of it.
            ("[a-z]{0,40}", "[a-z]{0,40}", prop::sample::select(vec!["", "\\\"", "\\\\", "\\n"]))
                .prop_map(|(a, b, escape)| format!("\"{a}{escape}{b}\"")),
            prop::sample::select(vec![r#""a\"b""#, r#""\\""#, r#""{[}]""#, r#""\u0041""#, r#""é""#])
                .prop_map(str::to_owned),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(|items| format!("[{}]", items.join(","))),
                prop::collection::vec(("[a-z]{1,4}", inner), 0..4).prop_map(|fields| {
                    let fields: Vec<String> =
                        fields.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        })
    }

    fn key() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "kind",
            "run_id",
            "at_ms",
            "tenant_id",
            "k\\u0069nd",
            "other",
            "x",
            "tenant",
        ])
        .prop_map(str::to_owned)
    }

    fn whitespace() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["", " ", "\n", "\t ", "\r\n"]).prop_map(str::to_owned)
    }

    /// What a wanted field mostly holds: a plain string, `null` or a
    /// plain integer (so repeated fields are often both readable).
    fn field_value() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => "[a-z]{0,6}".prop_map(|s| format!("\"{s}\"")),
            1 => "[a-z]{30,70}".prop_map(|s| format!("\"{s}\"")),
            1 => Just("null".to_owned()),
            2 => any::<u64>().prop_map(|n| n.to_string()),
            3 => value(),
        ]
    }

    /// A JSON object of wanted and other keys, repeated or not, spaced
    /// every way JSON allows.
    fn object() -> impl Strategy<Value = String> {
        prop::collection::vec((key(), field_value(), whitespace(), whitespace()), 0..7).prop_map(|fields| {
            let fields: Vec<String> = fields
                .into_iter()
                .map(|(k, v, before, after)| format!("{before}\"{k}\"{after}:{before}{v}{after}"))
                .collect();
            format!("{{{}}}", fields.join(","))
        })
    }

    proptest! {
        #[test]
        fn the_word_search_finds_what_a_byte_loop_finds(
            bytes in prop::collection::vec(prop_oneof![8 => any::<u8>(), 1 => Just(b'"'), 1 => Just(b'\\')], 0..200),
            plain in 0usize..200,
        ) {
            // Also with a run of plain bytes first, so the match falls in
            // every word and past the word loop.
            let mut long = vec![b'a'; plain];
            long.extend_from_slice(&bytes);
            for text in [&bytes, &long] {
                let expected = text.iter().position(|&b| b == b'"' || b == b'\\');
                prop_assert_eq!(quote_or_backslash(text), expected);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        #[test]
        fn the_scan_reads_what_serde_reads_or_leaves_it_to_serde(text in object()) {
            prop_assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok(), "generated invalid JSON: {}", text);
            let scanned = scan(&text);
            let serde = serde_head(&text);
            if let Some(head) = scanned {
                let serde = serde.as_ref();
                prop_assert!(serde.is_some(), "scan read {:?} where serde refuses: {}", head, text);
                let serde = serde.map(|s| (s.kind.as_deref(), s.run_id.as_deref(), s.at_ms, s.tenant_id.as_deref()));
                prop_assert_eq!(Some((head.kind, head.run_id, head.at_ms, head.tenant_id)), serde, "{}", text);
            } else {
                // The scan only declines what it must: what serde refuses,
                // an escape in a key, or a wanted string with an escape.
                let plain = serde_json::from_str::<BorrowedHead<'_>>(&text).is_ok();
                prop_assert!(!plain || text.contains("\\u0069"), "scan declined a plain record: {}", text);
            }
        }
    }
}
