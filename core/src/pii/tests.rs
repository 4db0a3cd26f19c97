#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;

const CORPUS: &str = include_str!("../../testdata/pii_corpus.tsv");

fn scanner() -> PiiScanner {
    PiiScanner::new().expect("built-in patterns compile")
}

struct Case {
    line: usize,
    expected: PiiKinds,
    text: &'static str,
}

fn parse_kind(name: &str) -> PiiKind {
    PiiKind::ALL
        .into_iter()
        .find(|k| k.as_str() == name)
        .unwrap_or_else(|| panic!("unknown kind `{name}` in corpus"))
}

fn corpus() -> Vec<Case> {
    let mut cases = Vec::new();
    for (i, raw) in CORPUS.lines().enumerate() {
        let line = i + 1;
        if raw.is_empty() || raw.starts_with('#') {
            continue;
        }
        let (expected, text) =
            raw.split_once('\t').unwrap_or_else(|| panic!("corpus line {line} has no tab: {raw:?}"));
        let expected =
            if expected == "NONE" { PiiKinds::EMPTY } else { expected.split(',').map(parse_kind).collect() };
        cases.push(Case { line, expected, text });
    }
    cases
}

fn kinds_str(k: PiiKinds) -> String {
    if k.is_empty() {
        return "NONE".to_owned();
    }
    k.iter().map(PiiKind::as_str).collect::<Vec<_>>().join(",")
}

fn describe(text: &str, matches: &[PiiMatch]) -> String {
    matches
        .iter()
        .map(|m| format!("{}/{} {:?}", m.kind, m.detail, &text[m.start..m.end]))
        .collect::<Vec<_>>()
        .join("; ")
}

// ------------------------------------------------------------------ corpus

#[test]
fn corpus_is_large_and_balanced() {
    let cases = corpus();
    let positives = cases.iter().filter(|c| !c.expected.is_empty()).count();
    let negatives = cases.len() - positives;
    assert!(cases.len() >= 80, "only {} cases", cases.len());
    assert!(positives >= 40, "only {positives} positive cases");
    assert!(negatives >= 40, "only {negatives} negative cases");
    for kind in PiiKind::ALL {
        assert!(cases.iter().any(|c| c.expected.contains(kind)), "no positive case for {kind}");
    }
}

#[test]
fn corpus_cases_all_pass() {
    let s = scanner();
    let mut failures = Vec::new();
    for case in corpus() {
        let matches = s.scan(case.text);
        let got: PiiKinds = matches.iter().map(|m| m.kind).collect();
        if got != case.expected {
            failures.push(format!(
                "line {}: expected {} got {} [{}] in {:?}",
                case.line,
                kinds_str(case.expected),
                kinds_str(got),
                describe(case.text, &matches),
                case.text
            ));
        }
    }
    assert!(failures.is_empty(), "{} corpus failures:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn corpus_covers_every_format() {
    let s = scanner();
    let mut seen = std::collections::BTreeSet::new();
    for case in corpus() {
        for m in s.scan(case.text) {
            seen.insert(m.detail);
        }
    }
    for detail in [
        "email",
        "e164",
        "nanp",
        "visa",
        "mastercard",
        "amex",
        "discover",
        "jcb",
        "diners",
        "ssn",
        "iban",
        "aws_access_key_id",
        "github_pat",
        "github_oauth",
        "github_fine_grained_pat",
        "openai_api_key",
        "anthropic_api_key",
        "slack_token",
        "stripe_live_key",
        "google_api_key",
        "pem_private_key",
        "jwt",
    ] {
        assert!(seen.contains(detail), "no corpus case produces `{detail}`");
    }
}

#[test]
fn offsets_slice_the_matched_value_on_every_corpus_line() {
    let s = scanner();
    for case in corpus() {
        for m in s.scan(case.text) {
            assert!(m.start < m.end, "line {}: empty match {m:?}", case.line);
            assert!(case.text.is_char_boundary(m.start), "line {}", case.line);
            assert!(case.text.is_char_boundary(m.end), "line {}", case.line);
            let value = case.text.get(m.start..m.end).unwrap();
            assert!(!value.starts_with(' ') && !value.ends_with(' '), "{value:?}");
        }
    }
}

#[test]
fn matches_are_sorted_and_non_overlapping_per_kind() {
    let s = scanner();
    for case in corpus() {
        let matches = s.scan(case.text);
        let keys: Vec<_> = matches.iter().map(|m| (m.start, m.end, m.kind)).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted, "line {} not sorted", case.line);
        for kind in PiiKind::ALL {
            let of_kind: Vec<_> = matches.iter().filter(|m| m.kind == kind).collect();
            for pair in of_kind.windows(2) {
                assert!(pair[0].end <= pair[1].start, "line {} overlap", case.line);
            }
        }
    }
}

#[test]
fn kinds_equals_scan_kinds_on_every_corpus_line() {
    let s = scanner();
    for case in corpus() {
        let from_scan: PiiKinds = s.scan(case.text).iter().map(|m| m.kind).collect();
        assert_eq!(s.kinds(case.text), from_scan, "line {}", case.line);
    }
}

#[test]
fn scanning_is_deterministic() {
    let a = scanner();
    let b = a.clone();
    for case in corpus() {
        assert_eq!(a.scan(case.text), b.scan(case.text));
        assert_eq!(a.scan(case.text), a.scan(case.text));
    }
}

// ------------------------------------------------------------------ redact

/// `text` with every matched span removed, for comparison with the redacted
/// text with every placeholder removed.
fn strip_spans(text: &str, matches: &[PiiMatch]) -> String {
    let mut keep = vec![true; text.len()];
    for m in matches {
        keep[m.start..m.end].fill(false);
    }
    let bytes: Vec<u8> = text.bytes().zip(keep).filter_map(|(b, k)| k.then_some(b)).collect();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn redact_removes_every_value_and_keeps_the_rest() {
    let s = scanner();
    let placeholder = Regex::new(r"\[REDACTED:[A-Z_]+\]").unwrap();
    for case in corpus() {
        let matches = s.scan(case.text);
        let redacted = s.redact(case.text);
        if matches.is_empty() {
            assert_eq!(redacted, case.text, "line {}", case.line);
            continue;
        }
        for m in &matches {
            let value = &case.text[m.start..m.end];
            assert!(!redacted.contains(value), "line {}: {value:?} survives in {redacted:?}", case.line);
            let label = format!("[REDACTED:{}]", m.kind);
            assert!(redacted.contains(&label), "line {}: no {label}", case.line);
        }
        assert_eq!(
            placeholder.replace_all(&redacted, "").as_ref(),
            strip_spans(case.text, &matches),
            "line {}",
            case.line
        );
        assert!(s.scan(&redacted).is_empty(), "line {}: {redacted:?}", case.line);
    }
}

#[test]
fn redact_exact_output() {
    let s = scanner();
    assert_eq!(
        s.redact("mail alice@example.com or call +1 415 555 0132!"),
        "mail [REDACTED:EMAIL] or call [REDACTED:PHONE]!"
    );
    assert_eq!(
        s.redact("SSN 123-45-6789, card 4111-1111-1111-1111."),
        "SSN [REDACTED:US_SSN], card [REDACTED:CREDIT_CARD]."
    );
    assert_eq!(s.redact("nothing here"), "nothing here");
    assert_eq!(s.redact(""), "");
}

// ------------------------------------------------------------------ offsets

#[test]
fn exact_offsets_and_details() {
    let s = scanner();
    let text = "SSN: 123-45-6789";
    assert_eq!(s.scan(text), vec![PiiMatch { kind: PiiKind::UsSsn, start: 5, end: 16, detail: "ssn" }]);

    let text = "card 4111 1111 1111 1111 12/28";
    let m = s.scan(text);
    assert_eq!(m.len(), 1);
    assert_eq!(&text[m[0].start..m[0].end], "4111 1111 1111 1111");
    assert_eq!(m[0].detail, "visa");

    let text = "IBAN BE68 5390 0754 7034 ABCD";
    let m = s.scan(text);
    assert_eq!(m.len(), 1);
    assert_eq!(&text[m[0].start..m[0].end], "BE68 5390 0754 7034");

    let text = "k=AKIAIOSFODNN7EXAMPLE;";
    let m = s.scan(text);
    assert_eq!(m, vec![PiiMatch { kind: PiiKind::Secret, start: 2, end: 22, detail: "aws_access_key_id" }]);

    let text = "a@example.com,b@example.org";
    let m = s.scan(text);
    let values: Vec<_> = m.iter().map(|m| &text[m.start..m.end]).collect();
    assert_eq!(values, ["a@example.com", "b@example.org"]);
}

#[test]
fn non_ascii_text_keeps_offsets_on_char_boundaries() {
    let s = scanner();
    let values = [
        ("alice@example.com", PiiKind::Email),
        ("+44 20 7946 0958", PiiKind::Phone),
        ("4111 1111 1111 1111", PiiKind::CreditCard),
        ("123-45-6789", PiiKind::UsSsn),
        ("DE89 3704 0044 0532 0130 00", PiiKind::Iban),
        ("AKIAIOSFODNN7EXAMPLE", PiiKind::Secret),
    ];
    let surroundings = [
        ("日本語の文章 ", " の続き"),
        ("Ünïcödé «", "» ✓"),
        ("🔒🔑 ", " 🔥"),
        ("مرحبا ", " عالم"),
        ("\u{200b}", "\u{00a0}"),
        ("", "é"),
        ("€", ""),
    ];
    for (value, kind) in values {
        for (before, after) in surroundings {
            let text = format!("{before}{value}{after}");
            let m = s.scan(&text);
            assert_eq!(m.len(), 1, "{text:?}: {m:?}");
            assert_eq!(m[0].kind, kind);
            assert_eq!(m[0].start, before.len());
            assert_eq!(&text[m[0].start..m[0].end], value);
            let redacted = s.redact(&text);
            assert_eq!(redacted, format!("{before}[REDACTED:{kind}]{after}"));
        }
    }
    // Multi-byte text everywhere, many matches, no panics, all on boundaries.
    let text = "é alice@example.com ü 415-555-0132 ß 4111111111111111 — ✓ 123-45-6789 日";
    for m in s.scan(text) {
        assert!(text.is_char_boundary(m.start) && text.is_char_boundary(m.end));
    }
    assert_eq!(s.kinds(text).iter().count(), 4);
}

// ------------------------------------------------------------------ helpers

#[test]
fn luhn_helper_known_values() {
    for good in [
        "4111111111111111",
        "5555555555554444",
        "378282246310005",
        "6011111111111117",
        "3530111333300000",
        "30569309025904",
        "4222222222222",
        "0",
        "18",
    ] {
        assert!(luhn_valid(good.as_bytes()), "{good} should pass Luhn");
    }
    for bad in [
        "4111111111111112",
        "1234567812345678",
        "378282246310006",
        "",
        "4111 1111 1111 1111",
        "41111111111111x1",
    ] {
        assert!(!luhn_valid(bad.as_bytes()), "{bad:?} should fail Luhn");
    }
}

#[test]
fn mod97_helper_known_values() {
    for good in [
        "DE89370400440532013000",
        "GB82WEST12345698765432",
        "GB29NWBK60161331926819",
        "NL91ABNA0417164300",
        "FR1420041010050500013M02606",
        "CH9300762011623852957",
        "BE68539007547034",
        "NO9386011117947",
        "ES9121000418450200051332",
        "IT60X0542811101000000123456",
    ] {
        assert!(iban_mod97_valid(good), "{good} should pass mod-97");
    }
    for bad in [
        "DE89370400440532013001",
        "GB82WEST12345698765433",
        "NL91ABNA0417164301",
        "GB82 WEST 1234 5698 7654 32",
        "gb82west12345698765432",
        "",
        "DE89",
    ] {
        assert!(!iban_mod97_valid(bad), "{bad:?} should fail mod-97");
    }
}

#[test]
fn card_brand_rules() {
    let brand = |d: &str| card_brand(d.as_bytes());
    assert_eq!(brand("4111111111111111"), Some("visa"));
    assert_eq!(brand("4222222222222"), Some("visa"));
    assert_eq!(brand("411111111111111"), None); // Visa is 13/16/19
    assert_eq!(brand("5105105105105100"), Some("mastercard"));
    assert_eq!(brand("2720990000000000"), Some("mastercard"));
    assert_eq!(brand("2721000000000000"), None);
    assert_eq!(brand("378282246310005"), Some("amex"));
    assert_eq!(brand("3782822463100050"), None); // Amex is 15
    assert_eq!(brand("6011000990139424"), Some("discover"));
    assert_eq!(brand("6500000000000002"), Some("discover"));
    assert_eq!(brand("3566002020360505"), Some("jcb"));
    assert_eq!(brand("3527000000000000"), None);
    assert_eq!(brand("30569309025904"), Some("diners"));
    assert_eq!(brand("36227206271667"), Some("diners"));
    assert_eq!(brand("30600000000000"), None);
    assert_eq!(brand("1111111111111117"), None);
}

#[test]
fn iban_length_table_is_sorted_and_sane() {
    for pair in IBAN_LENGTHS.windows(2) {
        assert!(pair[0].0 < pair[1].0, "{pair:?}");
    }
    for (c, l) in IBAN_LENGTHS {
        assert!((15..=34).contains(l), "{c} {l}");
        assert_eq!(iban_length(c), Some(*l));
    }
    assert_eq!(iban_length("XX"), None);
}

#[test]
fn base64url_decoder() {
    assert_eq!(base64url_decode("eyJhbGciOiJub25lIn0").unwrap(), br#"{"alg":"none"}"#);
    assert_eq!(base64url_decode("").unwrap(), b"");
    assert!(base64url_decode("a").is_none());
    assert!(base64url_decode("ab+/").is_none());
}

// ------------------------------------------------------------------ edges

#[test]
fn empty_text_has_no_matches() {
    let s = scanner();
    assert!(s.scan("").is_empty());
    assert!(s.kinds("").is_empty());
    assert_eq!(s.redact(""), "");
}

#[test]
fn one_mebibyte_of_non_pii_has_no_matches() {
    let s = scanner();
    let snippets = [
        "The deployment finished on 2026-11-25 at 10:15:30.123+01:00 without errors. ",
        "Version 1.2.3.4 replaced 1.2.10.0; see commit e83c5163316f89bfbd7d9ab23ca2e25604af290f. ",
        "Request 550e8400-e29b-41d4-a716-446655440000 from 192.168.100.123 took 415 ms. ",
        "Order 4111111111111112 shipped, 3 items, total 1,234.56 EUR, ref INV-2026-000123. ",
        "We benchmarked sk-learn against the baseline and wrote results to out@2x.png. ",
        "Über die Brücke gingen 12 Personen; 日本語のテキストも含まれます。 ",
        "payload eyJmb28iOiJiYXIifQ== and blob dGhpcyBpcyBub3QgYSBzZWNyZXQ= are fine. ",
    ];
    let mut text = String::with_capacity(1 << 20);
    let mut i = 0;
    while text.len() < 1 << 20 {
        text.push_str(snippets[i % snippets.len()]);
        i += 1;
    }
    assert!(text.len() >= 1 << 20);
    assert_eq!(s.scan(&text), Vec::new());
    assert!(s.kinds(&text).is_empty());
    // A single value appended at the very end is still found at the right place.
    text.push_str("alice@example.com");
    let m = s.scan(&text);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].end, text.len());
}

#[test]
fn adversarial_inputs_terminate() {
    let s = scanner();
    let inputs = [
        "sk-".repeat(40_000),
        "-----BEGIN RSA PRIVATE KEY----- ".repeat(4_000),
        "1 ".repeat(60_000),
        "4".repeat(120_000),
        "a.".repeat(60_000) + "@example.com",
        "eyJ".repeat(40_000),
        "AB12 ".repeat(30_000),
    ];
    for text in &inputs {
        let m = s.scan(text);
        for x in &m {
            assert!(text.is_char_boundary(x.start) && text.is_char_boundary(x.end));
        }
    }
    // Every header without an END line is reported on its own.
    assert_eq!(s.scan(&inputs[1]).len(), 4_000);
}

#[test]
fn longer_digit_runs_are_not_cards() {
    let s = scanner();
    for text in [
        "44111111111111111",
        "41111111111111114",
        "x4111111111111111",
        "4111111111111111y",
        "4111111111111111.5",
        "3.4111111111111111",
        "1234 4111 1111 1111 1111",
        "4111 1111 1111 1111 1234",
        "4111 1111-1111 1111",
        "4111  1111  1111  1111",
    ] {
        assert!(s.scan(text).is_empty(), "{text:?}: {:?}", s.scan(text));
    }
    for text in [
        "4111111111111111",
        "(4111111111111111)",
        "4111111111111111.",
        "qty 2 4111111111111111",
        "2024-4111111111111111",
    ] {
        let kinds = s.kinds(text);
        assert_eq!(kinds, PiiKinds::from(PiiKind::CreditCard), "{text:?}");
    }
}

#[test]
fn email_in_urls_policy() {
    let s = scanner();
    // Addresses are PII wherever they appear, URLs included…
    for text in [
        "https://x.com/users/alice@example.com",
        "https://x.com/search?q=alice@example.com&x=1",
        "mailto:alice@example.com",
        "https://alice@example.com/",
    ] {
        assert_eq!(s.kinds(text), PiiKinds::from(PiiKind::Email), "{text:?}");
    }
    // …but a path segment with no TLD is not an address, and neither is an
    // scp-style remote.
    for text in [
        "https://x.com/a@b",
        "https://x.com/a@b/c",
        "git@github.com:org/repo.git",
        "ssh deploy@build.example.com:22",
    ] {
        assert!(s.kinds(text).is_empty(), "{text:?}");
    }
    // A colon followed by a space ends a sentence, not a host.
    assert_eq!(s.kinds("alice@example.com: please call back"), PiiKinds::from(PiiKind::Email));
}

#[test]
fn pem_match_covers_the_whole_block() {
    let s = scanner();
    let text = "before\n-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIFAKEFAKEFAKE\nAwEHoUQDQgAE\n-----END EC PRIVATE KEY-----\nafter";
    let m = s.scan(text);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].detail, "pem_private_key");
    let value = &text[m[0].start..m[0].end];
    assert!(value.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    assert!(value.ends_with("-----END EC PRIVATE KEY-----"));
    assert_eq!(s.redact(text), "before\n[REDACTED:SECRET]\nafter");
    // A following certificate END line is not taken as the key's end.
    let text = "-----BEGIN PRIVATE KEY-----\n-----END CERTIFICATE-----";
    let m = s.scan(text);
    assert_eq!(&text[m[0].start..m[0].end], "-----BEGIN PRIVATE KEY-----");
}

#[test]
fn secret_details_name_the_format() {
    let s = scanner();
    let cases = [
        ("ghu_0123456789abcdefghijKLMNOPQRSTUVWXYZ", "github_user_to_server"),
        ("ghs_0123456789abcdefghijKLMNOPQRSTUVWXYZ", "github_server_to_server"),
        ("ghr_0123456789abcdefghijKLMNOPQRSTUVWXYZ", "github_refresh"),
        ("sk-ant-admin01-EXAMPLEexample0123456789", "anthropic_api_key"),
        ("sk-EXAMPLEexample0123456789", "openai_api_key"),
        ("xoxp-0000000000-EXAMPLEexample00", "slack_token"),
    ];
    for (text, detail) in cases {
        let m = s.scan(text);
        assert_eq!(m.len(), 1, "{text}: {m:?}");
        assert_eq!(m[0].detail, detail, "{text}");
        assert_eq!((m[0].start, m[0].end), (0, text.len()));
    }
    // A JWT whose header is JSON but has no "alg" is not a JWT.
    assert!(s.scan("eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiIxIn0.c2ln").is_empty());
    // alg=none (empty signature) is still a JWT.
    let none = "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.";
    assert_eq!(s.scan(none)[0].detail, "jwt");
}

#[test]
fn contained_match_of_another_kind_is_dropped() {
    let s = scanner();
    // Card-like digits as an email local part: one EMAIL, no CREDIT_CARD.
    let text = "4111111111111111@example.com";
    assert_eq!(s.kinds(text), PiiKinds::from(PiiKind::Email));
}

// ------------------------------------------------------------------ types

#[test]
fn kind_names_and_set_operations() {
    let names: Vec<_> = PiiKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(names, ["EMAIL", "PHONE", "CREDIT_CARD", "US_SSN", "IBAN", "SECRET"]);
    assert_eq!(PiiKind::CreditCard.to_string(), "CREDIT_CARD");
    let mut sorted = PiiKind::ALL;
    sorted.sort();
    assert_eq!(sorted, PiiKind::ALL);

    let mut set = PiiKinds::EMPTY;
    assert!(set.is_empty());
    assert_eq!(set, PiiKinds::default());
    set.insert(PiiKind::Secret);
    set.insert(PiiKind::Email);
    set.insert(PiiKind::Email);
    assert!(!set.is_empty());
    assert!(set.contains(PiiKind::Email) && set.contains(PiiKind::Secret));
    assert!(!set.contains(PiiKind::Phone));
    assert_eq!(set.iter().collect::<Vec<_>>(), [PiiKind::Email, PiiKind::Secret]);
    let other: PiiKinds = [PiiKind::Phone, PiiKind::Secret].into_iter().collect();
    assert!(set.intersects(other));
    assert!(!set.intersects(PiiKinds::from(PiiKind::Iban)));
    assert!(!PiiKinds::EMPTY.intersects(PiiKinds::EMPTY));
    let all: PiiKinds = PiiKind::ALL.into_iter().collect();
    assert_eq!(all.iter().count(), 6);
}

#[test]
fn compile_error_message() {
    let e = PiiError::Compile { name: "email", message: "boom".to_owned() };
    assert_eq!(e.to_string(), "pii matcher `email` failed to compile: boom");
}
