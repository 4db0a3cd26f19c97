//! Deterministic PII and secret detection.
//!
//! This module owns the **PII monitor input of the policy evaluator**: given a
//! piece of text (a prompt, a completion, a tool argument) it reports which
//! kinds of personal data or credentials it contains, where exactly they are,
//! and how to redact them. It implements the inspection constraints of seed
//! GAP-033 and the INV-002 table row *"PII regex match is deterministic and
//! blocking"*: the same input always yields the same matches, in the same
//! order, with no model, no randomness, no clock and no I/O involved, so a
//! policy that blocks on a [`PiiKind`] blocks reproducibly.
//!
//! # How it works
//!
//! [`PiiScanner::new`] compiles every matcher once: one [`regex::RegexSet`]
//! for the cheap "is there anything here at all?" question, plus one
//! [`regex::Regex`] per matcher for positions. Every regex hit is a
//! *candidate*; a candidate becomes a [`PiiMatch`] only after the checks the
//! regex engine cannot express (it has no look-around) pass in code:
//! boundaries, checksums and structural rules.
//!
//! | kind | accepted formats (`detail`) | checks done in code |
//! | --- | --- | --- |
//! | [`PiiKind::Email`] | `local@domain.tld` (`email`) | local part ≤ 64 bytes, labels ≤ 63, TLD ≥ 2 letters and not a file extension (`icon@2x.png`), not `user@host:path` |
//! | [`PiiKind::Phone`] | `+` and 8–15 digits with optional single space/dash separators (`e164`); `(415) 555-0132`, `415-555-0132`, `415.555.0132`, optionally with a leading `1`/`+1` (`nanp`) | NANP area code and exchange start with 2–9, separators consistent |
//! | [`PiiKind::CreditCard`] | 13–19 digits, contiguous or grouped 4-4-4-4(-x), 4-4-4-x, 4-6-5, 4-6-4 by one kind of separator (`visa`, `mastercard`, `amex`, `discover`, `jcb`, `diners`) | Luhn, brand prefix and brand length |
//! | [`PiiKind::UsSsn`] | `AAA-GG-SSSS` (`ssn`) | area ≠ 000/666/9xx, group ≠ 00, serial ≠ 0000 |
//! | [`PiiKind::Iban`] | country code, check digits, BBAN, compact or grouped by 4 with single spaces (`iban`) | country in the IBAN registry, exact registry length, ISO 7064 mod-97 = 1 |
//! | [`PiiKind::Secret`] | `aws_access_key_id`, `github_pat`, `github_oauth`, `github_user_to_server`, `github_server_to_server`, `github_refresh`, `github_fine_grained_pat`, `anthropic_api_key`, `openai_api_key`, `slack_token`, `stripe_live_key`, `google_api_key`, `pem_private_key`, `jwt` | token boundaries; random-looking body for `sk-` keys; decoded JWT header is a JSON object with `"alg"` |
//!
//! # Boundaries
//!
//! Boundaries are ASCII-based: a match must not be glued to an ASCII letter,
//! digit or `_` (so a card number inside a longer digit run, or an AWS key id
//! inside a longer identifier, is not a match), while non-ASCII neighbours
//! (CJK text without spaces, typographic punctuation) are allowed. Numeric
//! formats are additionally rejected when they continue a number through
//! `.`, `,`, `-` or `/` (`0.4111111111111111`, `v1.415.555.0132`), and a
//! grouped card number is rejected when it is only a slice of a longer
//! regular 4-digit grouping.
//!
//! Email policy, applied consistently: an address-shaped token is an email
//! wherever it appears, including URL paths and query strings
//! (`https://x.com/u/alice@example.com`), `mailto:` links and URL userinfo.
//! `https://x.com/a@b` has no TLD and is not a match. The only exclusion is
//! the scp/SSH form `user@host:path` (`git@github.com:org/repo.git`).
//!
//! # Output
//!
//! [`PiiScanner::scan`] returns matches sorted by `(start, end, kind)`,
//! non-overlapping within a kind (on overlap the longer match wins, then the
//! more specific matcher). A match that lies strictly inside a longer match
//! of another kind is dropped (for example card-like digits inside an IBAN);
//! partial overlaps across kinds are kept and merged by
//! [`PiiScanner::redact`].
//!
//! # Known limitations
//!
//! - Detection is syntactic. A well-formed, checksum-valid value is reported
//!   even if it is a documented test value (`4111 1111 1111 1111`,
//!   `AKIAIOSFODNN7EXAMPLE`); there is no allow-list.
//! - Email: ASCII addresses only (no internationalised local parts or IDN
//!   domains, no quoted local parts, no `'` in the local part); TLDs are not
//!   checked against the IANA list, only against a short list of file
//!   extensions.
//! - Phone: only E.164 with a leading `+` and the NANP shapes above. National
//!   formats of other countries without `+` (`020 7946 0958`), space-separated
//!   NANP (`415 555 0132`) and bare digit runs are not detected. An E.164
//!   number followed by a further space-separated number may absorb it (up to
//!   15 digits in total). Any `+` followed by 8–15 digits (for example an
//!   added line `+12345678` in a diff) is reported as a phone number.
//! - Credit card: only the brands and groupings listed above; a number
//!   preceded by another 4-digit group with the same separator is ignored.
//! - US SSN: the dashed form only; bare 9-digit SSNs and SSNs the SSA
//!   voided individually (`078-05-1120`) are not distinguished.
//! - IBAN: upper-case only; countries outside the built-in registry table
//!   are not detected; grouping other than by 4 with single spaces is not
//!   detected.
//! - Secrets: only the listed token formats. Generic high-entropy strings,
//!   passwords, `sk_test_` Stripe keys and unprefixed API keys are not
//!   detected. `sk-`/`sk-ant-` keys need a digit, an upper-case and a
//!   lower-case letter in their body (so kebab-case words are not keys); an
//!   `ASIA…` key id needs a digit (so upper-case words are not keys). A PEM
//!   match covers the whole block when its `-----END … PRIVATE KEY-----` line
//!   follows within 64 KiB, otherwise the header line only.
//! - Cost: every regex is linear-time; a rejected candidate is re-searched
//!   from its next character only for the bounded-length formats (phone,
//!   SSN, IBAN) and skipped whole otherwise, so a scan stays roughly linear
//!   in the text length.

use regex::{Regex, RegexSet};
use std::fmt;

#[cfg(test)]
mod tests;

/// A category of personal data or credential the scanner can detect.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PiiKind {
    /// An email address.
    Email,
    /// A phone number (E.164 or North-American).
    Phone,
    /// A payment card number that passes the Luhn check.
    CreditCard,
    /// A US social security number in `AAA-GG-SSSS` form.
    UsSsn,
    /// An international bank account number with a valid checksum.
    Iban,
    /// A credential: API key, access token, private key or JWT.
    Secret,
}

impl PiiKind {
    /// Every kind, in declaration (and sort) order.
    pub const ALL: [PiiKind; 6] =
        [PiiKind::Email, PiiKind::Phone, PiiKind::CreditCard, PiiKind::UsSsn, PiiKind::Iban, PiiKind::Secret];

    /// The stable wire name, identical to the serde representation.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            PiiKind::Email => "EMAIL",
            PiiKind::Phone => "PHONE",
            PiiKind::CreditCard => "CREDIT_CARD",
            PiiKind::UsSsn => "US_SSN",
            PiiKind::Iban => "IBAN",
            PiiKind::Secret => "SECRET",
        }
    }

    const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for PiiKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One confirmed finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PiiMatch {
    /// What was found.
    pub kind: PiiKind,
    /// Byte offset of the first byte of the value in the scanned text.
    pub start: usize,
    /// Byte offset one past the last byte of the value in the scanned text.
    pub end: usize,
    /// Which format matched, e.g. `"email"`, `"e164"`, `"visa"`, `"aws_access_key_id"`.
    pub detail: &'static str,
}

/// A set of [`PiiKind`]s, stored as a bit set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct PiiKinds(u8);

/// Serialised as a list of kinds, e.g. `["EMAIL", "SECRET"]`.
impl serde::Serialize for PiiKinds {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

impl<'de> serde::Deserialize<'de> for PiiKinds {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let kinds = Vec::<PiiKind>::deserialize(deserializer)?;
        Ok(kinds.into_iter().collect())
    }
}

impl PiiKinds {
    /// The empty set.
    pub const EMPTY: PiiKinds = PiiKinds(0);

    /// Whether `k` is in the set.
    #[must_use]
    pub fn contains(self, k: PiiKind) -> bool {
        self.0 & k.bit() != 0
    }

    /// Adds `k` to the set.
    pub fn insert(&mut self, k: PiiKind) {
        self.0 |= k.bit();
    }

    /// Whether the set has no kinds.
    #[must_use]
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The kinds in the set, in [`PiiKind::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = PiiKind> {
        PiiKind::ALL.into_iter().filter(move |k| self.contains(*k))
    }

    /// Whether the two sets share at least one kind.
    #[must_use]
    pub fn intersects(self, other: PiiKinds) -> bool {
        self.0 & other.0 != 0
    }
}

impl FromIterator<PiiKind> for PiiKinds {
    fn from_iter<I: IntoIterator<Item = PiiKind>>(iter: I) -> Self {
        let mut set = PiiKinds::EMPTY;
        for k in iter {
            set.insert(k);
        }
        set
    }
}

impl From<PiiKind> for PiiKinds {
    fn from(k: PiiKind) -> Self {
        PiiKinds(k.bit())
    }
}

/// Failure to build a [`PiiScanner`].
#[derive(Debug, thiserror::Error)]
pub enum PiiError {
    /// A built-in pattern did not compile (a bug in this module, or a regex
    /// crate built without the features it needs).
    #[error("pii matcher `{name}` failed to compile: {message}")]
    Compile {
        /// The matcher's name.
        name: &'static str,
        /// The regex crate's error text.
        message: String,
    },
}

/// How a regex candidate is confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Email,
    E164,
    Nanp,
    CardRun,
    Ssn,
    Iban,
    Aws,
    GitHub,
    GitHubFineGrained,
    Anthropic,
    OpenAi,
    Slack,
    Stripe,
    Google,
    Pem,
    Jwt,
}

impl Rule {
    /// After a rejected candidate, resume at its end (true) or at the next
    /// character after its start (false). Resuming at the end is only done
    /// where no accepted match can start inside a rejected candidate, which
    /// keeps long rejected tokens from being rescanned.
    fn resume_at_end(self) -> bool {
        !matches!(self, Rule::E164 | Rule::Nanp | Rule::Ssn | Rule::Iban)
    }
}

struct Spec {
    name: &'static str,
    kind: PiiKind,
    rule: Rule,
    /// The pattern that finds candidates.
    pattern: &'static str,
    /// The pattern used in the `RegexSet` pre-check when it differs from
    /// `pattern`: a necessary condition that is rarer than a candidate.
    gate: Option<&'static str>,
}

/// Matchers in priority order: on a same-kind tie (same span) the earlier
/// one wins, so specific formats precede generic ones.
const SPECS: &[Spec] = &[
    Spec {
        name: "email",
        kind: PiiKind::Email,
        rule: Rule::Email,
        pattern: r"[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+[A-Za-z]{2,63}",
        gate: None,
    },
    Spec {
        name: "phone_e164",
        kind: PiiKind::Phone,
        rule: Rule::E164,
        pattern: r"\+[1-9](?:[ -]?[0-9]){7,14}",
        gate: None,
    },
    Spec {
        name: "phone_nanp",
        kind: PiiKind::Phone,
        rule: Rule::Nanp,
        pattern: r"(?:\+?1[ .-]?)?(?:\([0-9]{3}\) ?|[0-9]{3}[.-])[0-9]{3}[.-][0-9]{4}",
        gate: None,
    },
    Spec {
        name: "credit_card",
        kind: PiiKind::CreditCard,
        rule: Rule::CardRun,
        pattern: r"[0-9]+(?:[ -][0-9]+)*",
        // Any digit starts a run; only 13 digits with single separators can
        // hold a card number.
        gate: Some(r"[0-9](?:[ -]?[0-9]){12}"),
    },
    Spec {
        name: "us_ssn",
        kind: PiiKind::UsSsn,
        rule: Rule::Ssn,
        pattern: r"[0-9]{3}-[0-9]{2}-[0-9]{4}",
        gate: None,
    },
    Spec {
        name: "iban",
        kind: PiiKind::Iban,
        rule: Rule::Iban,
        pattern: r"[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,40}",
        gate: None,
    },
    Spec {
        name: "aws_access_key_id",
        kind: PiiKind::Secret,
        rule: Rule::Aws,
        pattern: r"(?:AKIA|ASIA)[A-Z0-9]{16}",
        gate: None,
    },
    Spec {
        name: "github_token",
        kind: PiiKind::Secret,
        rule: Rule::GitHub,
        pattern: r"gh[pousr]_[A-Za-z0-9]{36,255}",
        gate: None,
    },
    Spec {
        name: "github_fine_grained_pat",
        kind: PiiKind::Secret,
        rule: Rule::GitHubFineGrained,
        pattern: r"github_pat_[A-Za-z0-9_]{22,255}",
        gate: None,
    },
    Spec {
        name: "anthropic_api_key",
        kind: PiiKind::Secret,
        rule: Rule::Anthropic,
        pattern: r"sk-ant-[A-Za-z0-9_-]{20,}",
        gate: None,
    },
    Spec {
        name: "openai_api_key",
        kind: PiiKind::Secret,
        rule: Rule::OpenAi,
        pattern: r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",
        gate: None,
    },
    Spec {
        name: "slack_token",
        kind: PiiKind::Secret,
        rule: Rule::Slack,
        pattern: r"xox[baprs]-[A-Za-z0-9-]{20,}",
        gate: None,
    },
    Spec {
        name: "stripe_live_key",
        kind: PiiKind::Secret,
        rule: Rule::Stripe,
        pattern: r"[rs]k_live_[A-Za-z0-9]{16,}",
        gate: None,
    },
    Spec {
        name: "google_api_key",
        kind: PiiKind::Secret,
        rule: Rule::Google,
        pattern: r"AIza[0-9A-Za-z_-]{35}",
        gate: None,
    },
    Spec {
        name: "pem_private_key",
        kind: PiiKind::Secret,
        rule: Rule::Pem,
        pattern: r"-----BEGIN (?:[A-Z0-9]+ ){0,4}PRIVATE KEY(?: BLOCK)?-----",
        gate: None,
    },
    Spec {
        name: "jwt",
        kind: PiiKind::Secret,
        rule: Rule::Jwt,
        pattern: r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*",
        gate: None,
    },
];

/// How far after a PEM header the matching END line is looked for.
const PEM_BLOCK_WINDOW: usize = 64 * 1024;

/// At most this many characters of a JWT header are decoded.
const JWT_HEADER_MAX: usize = 4096;

/// The compiled detector. Build it once with [`PiiScanner::new`] and share it;
/// scanning takes `&self` and is deterministic.
#[derive(Debug, Clone)]
pub struct PiiScanner {
    set: RegexSet,
    matchers: Vec<Matcher>,
}

#[derive(Debug, Clone)]
struct Matcher {
    kind: PiiKind,
    rule: Rule,
    regex: Regex,
}

/// A confirmed match before the final sort, with the index of its matcher.
#[derive(Debug, Clone, Copy)]
struct Found {
    kind: PiiKind,
    start: usize,
    end: usize,
    detail: &'static str,
    priority: usize,
}

impl PiiScanner {
    /// Compiles every matcher.
    ///
    /// # Errors
    ///
    /// [`PiiError::Compile`] if a built-in pattern fails to compile, which
    /// only happens if the `regex` crate lacks a feature the patterns need.
    pub fn new() -> Result<Self, PiiError> {
        let mut matchers = Vec::with_capacity(SPECS.len());
        for spec in SPECS {
            let regex = Regex::new(spec.pattern)
                .map_err(|e| PiiError::Compile { name: spec.name, message: e.to_string() })?;
            matchers.push(Matcher { kind: spec.kind, rule: spec.rule, regex });
        }
        let set = RegexSet::new(SPECS.iter().map(|s| s.gate.unwrap_or(s.pattern)))
            .map_err(|e| PiiError::Compile { name: "regex_set", message: e.to_string() })?;
        Ok(PiiScanner { set, matchers })
    }

    /// All confirmed matches, sorted by `(start, end, kind)`, non-overlapping
    /// within a kind, every one validated (boundaries, Luhn, mod-97, …).
    #[must_use]
    pub fn scan(&self, text: &str) -> Vec<PiiMatch> {
        if !self.set.is_match(text) {
            return Vec::new();
        }
        let candidates = self.set.matches(text);
        let mut found = Vec::new();
        for idx in &candidates {
            if let Some(m) = self.matchers.get(idx) {
                scan_one(m, idx, text, &mut found);
            }
        }
        resolve(found)
    }

    /// The set of kinds present. When no pattern matches at all this is a
    /// single `RegexSet` pass without allocation; otherwise it equals the set
    /// of kinds of [`PiiScanner::scan`].
    #[must_use]
    pub fn kinds(&self, text: &str) -> PiiKinds {
        if !self.set.is_match(text) {
            return PiiKinds::EMPTY;
        }
        self.scan(text).iter().map(|m| m.kind).collect()
    }

    /// `text` with every match replaced by `[REDACTED:KIND]`. Overlapping
    /// matches of different kinds are merged into one redaction labelled with
    /// the kind of the longest of them.
    #[must_use]
    pub fn redact(&self, text: &str) -> String {
        let matches = self.scan(text);
        if matches.is_empty() {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut cursor = 0;
        let mut i = 0;
        while let Some(first) = matches.get(i) {
            let mut end = first.end;
            let mut label = first;
            let mut j = i + 1;
            while let Some(next) = matches.get(j) {
                if next.start >= end {
                    break;
                }
                if next.end - next.start > label.end - label.start {
                    label = next;
                }
                end = end.max(next.end);
                j += 1;
            }
            out.push_str(text.get(cursor..first.start).unwrap_or(""));
            out.push_str("[REDACTED:");
            out.push_str(label.kind.as_str());
            out.push(']');
            cursor = end;
            i = j;
        }
        out.push_str(text.get(cursor..).unwrap_or(""));
        out
    }
}

/// Runs one matcher over the whole text, confirming each candidate.
fn scan_one(m: &Matcher, priority: usize, text: &str, out: &mut Vec<Found>) {
    let mut pos = 0;
    while pos <= text.len() {
        let Some(hit) = m.regex.find_at(text, pos) else {
            break;
        };
        let (start, end) = (hit.start(), hit.end());
        let mut push = |s: usize, e: usize, detail: &'static str| {
            out.push(Found { kind: m.kind, start: s, end: e, detail, priority });
        };
        if m.rule == Rule::CardRun {
            confirm_card_run(text, start, end, &mut push);
            pos = end;
            continue;
        }
        match confirm(m.rule, text, start, end) {
            Some((e, detail)) => {
                push(start, e, detail);
                pos = e.max(start + 1);
            }
            None if m.rule.resume_at_end() => pos = end,
            None => pos = next_char_boundary(text, start),
        }
        // Never search from inside a multi-byte character.
        while pos < text.len() && !text.is_char_boundary(pos) {
            pos += 1;
        }
    }
}

/// Per-kind overlap removal, cross-kind containment removal, final sort.
fn resolve(mut found: Vec<Found>) -> Vec<PiiMatch> {
    // Same kind: longest first at each start, then the more specific matcher.
    found.sort_by(|a, b| {
        (a.kind, a.start, std::cmp::Reverse(a.end), a.priority).cmp(&(
            b.kind,
            b.start,
            std::cmp::Reverse(b.end),
            b.priority,
        ))
    });
    let mut kept: Vec<Found> = Vec::with_capacity(found.len());
    for f in found {
        match kept.last() {
            Some(last) if last.kind == f.kind && f.start < last.end => {}
            _ => kept.push(f),
        }
    }
    // Different kinds: drop a match strictly inside a longer one.
    kept.sort_by_key(|f| (f.start, std::cmp::Reverse(f.end), f.kind));
    let mut result: Vec<PiiMatch> = Vec::with_capacity(kept.len());
    let mut cover: Option<(usize, usize)> = None;
    for f in kept {
        if let Some((cs, ce)) = cover
            && ce >= f.end
            && (cs < f.start || ce > f.end)
        {
            continue;
        }
        if cover.is_none_or(|(_, ce)| f.end > ce) {
            cover = Some((f.start, f.end));
        }
        result.push(PiiMatch { kind: f.kind, start: f.start, end: f.end, detail: f.detail });
    }
    result.sort_by_key(|m| (m.start, m.end, m.kind));
    result
}

/// Confirms a single-match candidate; returns the (possibly adjusted) end and
/// the detail.
fn confirm(rule: Rule, text: &str, start: usize, end: usize) -> Option<(usize, &'static str)> {
    let value = text.get(start..end)?;
    match rule {
        Rule::Email => confirm_email(text, start, end, value).then_some((end, "email")),
        Rule::E164 => confirm_e164(text, start, end).then_some((end, "e164")),
        Rule::Nanp => confirm_nanp(text, start, end, value).then_some((end, "nanp")),
        Rule::Ssn => confirm_ssn(text, start, end, value).then_some((end, "ssn")),
        Rule::Iban => confirm_iban(text, start, value).map(|e| (e, "iban")),
        Rule::CardRun => None,
        Rule::Aws => {
            let ok = token_bounded(text, start, end, is_word)
                && (value.starts_with("AKIA") || value.bytes().any(|b| b.is_ascii_digit()));
            ok.then_some((end, "aws_access_key_id"))
        }
        Rule::GitHub => {
            let detail = match value.as_bytes().get(2) {
                Some(b'p') => "github_pat",
                Some(b'o') => "github_oauth",
                Some(b'u') => "github_user_to_server",
                Some(b's') => "github_server_to_server",
                _ => "github_refresh",
            };
            token_bounded(text, start, end, is_word).then_some((end, detail))
        }
        Rule::GitHubFineGrained => {
            token_bounded(text, start, end, is_word).then_some((end, "github_fine_grained_pat"))
        }
        Rule::Anthropic => {
            let body = value.get("sk-ant-".len()..).unwrap_or("");
            (token_bounded(text, start, end, is_token_char) && looks_random(body))
                .then_some((end, "anthropic_api_key"))
        }
        Rule::OpenAi => {
            let body = value.get("sk-".len()..).unwrap_or("");
            (token_bounded(text, start, end, is_token_char) && looks_random(body))
                .then_some((end, "openai_api_key"))
        }
        Rule::Slack => {
            let ok = token_bounded(text, start, end, is_token_char)
                && value.bytes().skip(5).any(|b| b.is_ascii_digit());
            ok.then_some((end, "slack_token"))
        }
        Rule::Stripe => token_bounded(text, start, end, is_word).then_some((end, "stripe_live_key")),
        Rule::Google => token_bounded(text, start, end, is_token_char).then_some((end, "google_api_key")),
        Rule::Pem => Some((pem_block_end(text, end), "pem_private_key")),
        Rule::Jwt => confirm_jwt(text, start, end, value).then_some((end, "jwt")),
    }
}

// ---------------------------------------------------------------- boundaries

fn is_word(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Characters of base64url-ish tokens (`sk-…`, `AIza…`, `xox…`).
fn is_token_char(c: char) -> bool {
    is_word(c) || c == '-'
}

fn prev_chars(text: &str, i: usize) -> (Option<char>, Option<char>) {
    let mut it = text.get(..i).unwrap_or("").chars().rev();
    (it.next(), it.next())
}

fn next_chars(text: &str, i: usize) -> (Option<char>, Option<char>) {
    let mut it = text.get(i..).unwrap_or("").chars();
    (it.next(), it.next())
}

fn next_char_boundary(text: &str, i: usize) -> usize {
    i + text.get(i..).and_then(|s| s.chars().next()).map_or(1, char::len_utf8)
}

/// A token must not be glued to a character of its own alphabet.
fn token_bounded(text: &str, start: usize, end: usize, glue: fn(char) -> bool) -> bool {
    let (before, _) = prev_chars(text, start);
    let (after, _) = next_chars(text, end);
    !before.is_some_and(glue) && !after.is_some_and(glue)
}

fn is_number_joiner(c: char) -> bool {
    matches!(c, '.' | ',' | '-' | '/')
}

/// The number does not continue to the left (`x415`, `3.4111…`, `12-415…`).
fn numeric_left_ok(text: &str, start: usize) -> bool {
    match prev_chars(text, start) {
        (Some(c), _) if is_word(c) => false,
        (Some(c), Some(d)) if is_number_joiner(c) => !d.is_ascii_digit(),
        _ => true,
    }
}

/// The number does not continue to the right (`…0132x`, `…1111.50`).
fn numeric_right_ok(text: &str, end: usize) -> bool {
    match next_chars(text, end) {
        (Some(c), _) if is_word(c) => false,
        (Some(c), Some(d)) if is_number_joiner(c) => !d.is_ascii_digit(),
        _ => true,
    }
}

// --------------------------------------------------------------------- email

/// File extensions that are not TLDs, so `icon@2x.png` is a file name.
const NON_TLD_EXTENSIONS: &[&str] = &[
    "bmp", "css", "gif", "htm", "html", "ico", "jpeg", "jpg", "js", "json", "jsx", "lock", "log", "pdf",
    "png", "scss", "svg", "toml", "ts", "tsx", "txt", "webp", "yaml", "yml",
];

fn confirm_email(text: &str, start: usize, end: usize, value: &str) -> bool {
    let Some((local, domain)) = value.split_once('@') else {
        return false;
    };
    if local.len() > 64 || domain.len() > 253 || domain.split('.').any(|l| l.len() > 63) {
        return false;
    }
    let tld = domain.rsplit('.').next().unwrap_or("");
    if NON_TLD_EXTENSIONS.iter().any(|ext| ext.eq_ignore_ascii_case(tld)) {
        return false;
    }
    match prev_chars(text, start) {
        (Some(c), _) if is_word(c) || matches!(c, '.' | '%' | '+' | '-' | '@') => return false,
        _ => {}
    }
    match next_chars(text, end) {
        (Some(c), _) if is_word(c) || matches!(c, '-' | '@') => false,
        (Some('.'), Some(d)) if is_word(d) => false,
        // scp / SSH remote: `git@github.com:org/repo.git`, `user@host:22`
        (Some(':'), Some(d)) if !d.is_whitespace() => false,
        _ => true,
    }
}

// --------------------------------------------------------------------- phone

fn confirm_e164(text: &str, start: usize, end: usize) -> bool {
    let (before, _) = prev_chars(text, start);
    !before.is_some_and(|c| is_word(c) || c == '+') && numeric_right_ok(text, end)
}

fn confirm_nanp(text: &str, start: usize, end: usize, value: &str) -> bool {
    if !numeric_left_ok(text, start) || !numeric_right_ok(text, end) {
        return false;
    }
    if !value.contains('(') {
        // `…AAA?EEE?SSSS`: both separators must be the same character.
        let b = value.as_bytes();
        let n = b.len();
        if n < 12 || b.get(n - 5) != b.get(n - 9) {
            return false;
        }
    }
    let digits: Vec<u8> = value.bytes().filter(u8::is_ascii_digit).collect();
    let local = match digits.len() {
        10 => &digits[..],
        11 if digits.first() == Some(&b'1') => &digits[1..],
        _ => return false,
    };
    // NPA and NXX both start with 2–9.
    matches!(local.first(), Some(b'2'..=b'9')) && matches!(local.get(3), Some(b'2'..=b'9'))
}

// ----------------------------------------------------------------------- ssn

fn confirm_ssn(text: &str, start: usize, end: usize, value: &str) -> bool {
    if !numeric_left_ok(text, start) || !numeric_right_ok(text, end) {
        return false;
    }
    let (Some(area), Some(group), Some(serial)) = (value.get(0..3), value.get(4..6), value.get(7..11)) else {
        return false;
    };
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

// ---------------------------------------------------------------------- card

/// Splits a maximal run of digit groups and reports every card number in it.
fn confirm_card_run(text: &str, start: usize, end: usize, push: &mut impl FnMut(usize, usize, &'static str)) {
    let Some(run) = text.get(start..end) else {
        return;
    };
    // (group start, group end) absolute, and the separator before each group.
    // A 13–19 digit card needs a run of at least 13 bytes.
    if run.len() < 13 {
        return;
    }
    let mut groups: Vec<(usize, usize, u8)> = Vec::new();
    let mut gs = start;
    let mut sep = 0u8;
    for (i, b) in run.bytes().enumerate() {
        if b == b' ' || b == b'-' {
            groups.push((gs, start + i, sep));
            gs = start + i + 1;
            sep = b;
        }
    }
    groups.push((gs, end, sep));
    let n = groups.len();
    let first_ok = numeric_left_ok(text, start);
    let last_ok = numeric_right_ok(text, end);
    let len_of = |k: usize| groups.get(k).map_or(0, |g| g.1 - g.0);
    let mut i = 0;
    while i < n {
        if i == 0 && !first_ok {
            i += 1;
            continue;
        }
        let mut accepted = None;
        for j in (i + 1..=n.min(i + 5)).rev() {
            if j == n && !last_ok {
                continue;
            }
            let Some(slice) = groups.get(i..j) else {
                continue;
            };
            if let Some(brand) = card_candidate(text, slice) {
                // A grouped number must not be a slice of a longer 4-grouping.
                if j - i > 1 {
                    let sep = slice.get(1).map_or(0, |g| g.2);
                    let before = i > 0 && slice.first().map(|g| g.2) == Some(sep) && len_of(i - 1) == 4;
                    let after = groups.get(j).is_some_and(|g| g.2 == sep) && len_of(j) == 4;
                    if before || after {
                        continue;
                    }
                }
                accepted = Some((j, brand));
                break;
            }
        }
        match accepted {
            Some((j, brand)) => {
                if let (Some(first), Some(last)) = (groups.get(i), groups.get(j - 1)) {
                    push(first.0, last.1, brand);
                }
                i = j;
            }
            None => i += 1,
        }
    }
}

/// Whether `groups` (consecutive groups of one run) form a valid card layout,
/// brand and checksum; returns the brand.
fn card_candidate(text: &str, groups: &[(usize, usize, u8)]) -> Option<&'static str> {
    let lens: Vec<usize> = groups.iter().map(|g| g.1 - g.0).collect();
    let layout_ok = match lens.as_slice() {
        [n] => (13..=19).contains(n),
        [4, 4, 4, 4] | [4, 6, 4 | 5] => true,
        [4, 4, 4, x] | [4, 4, 4, 4, x] => (1..=3).contains(x),
        _ => false,
    };
    if !layout_ok {
        return None;
    }
    // One kind of separator inside the number.
    if let Some(sep) = groups.get(1).map(|g| g.2)
        && groups.iter().skip(1).any(|g| g.2 != sep)
    {
        return None;
    }
    let mut digits = [0u8; 19];
    let mut n = 0;
    for g in groups {
        for b in text.get(g.0..g.1)?.bytes() {
            *digits.get_mut(n)? = b;
            n += 1;
        }
    }
    let digits = digits.get(..n)?;
    let brand = card_brand(digits)?;
    luhn_valid(digits).then_some(brand)
}

/// Brand from the IIN prefix and length (ASCII digits).
fn card_brand(digits: &[u8]) -> Option<&'static str> {
    let prefix =
        |k: usize| -> u32 { digits.iter().take(k).fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')) };
    let len = digits.len();
    let p1 = prefix(1);
    let p2 = prefix(2);
    let p3 = prefix(3);
    let p4 = prefix(4);
    if p1 == 4 && matches!(len, 13 | 16 | 19) {
        Some("visa")
    } else if ((51..=55).contains(&p2) || (2221..=2720).contains(&p4)) && len == 16 {
        Some("mastercard")
    } else if (p2 == 34 || p2 == 37) && len == 15 {
        Some("amex")
    } else if (p4 == 6011 || p2 == 65) && (16..=19).contains(&len) {
        Some("discover")
    } else if (3528..=3589).contains(&p4) && (16..=19).contains(&len) {
        Some("jcb")
    } else if ((300..=305).contains(&p3) || p2 == 36 || p2 == 38) && (14..=19).contains(&len) {
        Some("diners")
    } else {
        None
    }
}

/// Luhn check over ASCII digits (anything else, or nothing, is invalid).
fn luhn_valid(digits: &[u8]) -> bool {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let v = u32::from(d - b'0');
            if i % 2 == 1 {
                let dbl = v * 2;
                if dbl > 9 { dbl - 9 } else { dbl }
            } else {
                v
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

// ---------------------------------------------------------------------- iban

/// IBAN lengths per country, from the SWIFT IBAN registry (sorted).
const IBAN_LENGTHS: &[(&str, usize)] = &[
    ("AD", 24),
    ("AE", 23),
    ("AL", 28),
    ("AT", 20),
    ("AZ", 28),
    ("BA", 20),
    ("BE", 16),
    ("BG", 22),
    ("BH", 22),
    ("BI", 27),
    ("BR", 29),
    ("BY", 28),
    ("CH", 21),
    ("CR", 22),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DJ", 27),
    ("DK", 18),
    ("DO", 28),
    ("EE", 20),
    ("EG", 29),
    ("ES", 24),
    ("FI", 18),
    ("FK", 18),
    ("FO", 18),
    ("FR", 27),
    ("GB", 22),
    ("GE", 22),
    ("GI", 23),
    ("GL", 18),
    ("GR", 27),
    ("GT", 28),
    ("HN", 28),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IL", 23),
    ("IQ", 23),
    ("IS", 26),
    ("IT", 27),
    ("JO", 30),
    ("KW", 30),
    ("KZ", 20),
    ("LB", 28),
    ("LC", 32),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("LY", 25),
    ("MC", 27),
    ("MD", 24),
    ("ME", 22),
    ("MK", 19),
    ("MN", 20),
    ("MR", 27),
    ("MT", 31),
    ("MU", 30),
    ("NI", 28),
    ("NL", 18),
    ("NO", 15),
    ("OM", 23),
    ("PK", 24),
    ("PL", 28),
    ("PS", 29),
    ("PT", 25),
    ("QA", 29),
    ("RO", 24),
    ("RS", 22),
    ("RU", 33),
    ("SA", 24),
    ("SC", 31),
    ("SD", 18),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("SO", 23),
    ("ST", 25),
    ("SV", 28),
    ("TL", 23),
    ("TN", 24),
    ("TR", 26),
    ("UA", 29),
    ("VA", 22),
    ("VG", 24),
    ("XK", 20),
    ("YE", 30),
];

fn iban_length(country: &str) -> Option<usize> {
    IBAN_LENGTHS
        .binary_search_by(|(c, _)| (*c).cmp(country))
        .ok()
        .and_then(|i| IBAN_LENGTHS.get(i))
        .map(|(_, l)| *l)
}

/// Confirms an IBAN candidate and returns its end: exactly the registry
/// length of alphanumerics, spaces only between groups of 4, mod-97 valid.
fn confirm_iban(text: &str, start: usize, value: &str) -> Option<usize> {
    let (before, _) = prev_chars(text, start);
    if before.is_some_and(is_word) {
        return None;
    }
    let want = iban_length(value.get(..2)?)?;
    let mut compact = [0u8; 34];
    let mut count: usize = 0;
    let mut end = None;
    for (i, b) in value.bytes().enumerate() {
        if b == b' ' {
            if !count.is_multiple_of(4) {
                return None;
            }
            continue;
        }
        *compact.get_mut(count)? = b;
        count += 1;
        if count == want {
            end = Some(start + i + 1);
            break;
        }
    }
    let end = end?;
    let (after, _) = next_chars(text, end);
    if after.is_some_and(is_word) {
        return None;
    }
    let compact = std::str::from_utf8(compact.get(..count)?).ok()?;
    iban_mod97_valid(compact).then_some(end)
}

/// ISO 7064 MOD 97-10 check of a compact IBAN (upper-case, no spaces):
/// move the first four characters to the end, map `A`–`Z` to 10–35, and the
/// resulting number mod 97 must be 1.
fn iban_mod97_valid(compact: &str) -> bool {
    let b = compact.as_bytes();
    if b.len() < 5 || !b.iter().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()) {
        return false;
    }
    let rotated = b.iter().skip(4).chain(b.iter().take(4));
    let mut rem: u32 = 0;
    for &c in rotated {
        rem = if c.is_ascii_digit() {
            (rem * 10 + u32::from(c - b'0')) % 97
        } else {
            (rem * 100 + u32::from(c - b'A') + 10) % 97
        };
    }
    rem == 1
}

// ------------------------------------------------------------------- secrets

/// A random key body has a digit, an upper-case and a lower-case letter;
/// kebab-case words (`sk-learn-compatible-transformers`) do not.
fn looks_random(body: &str) -> bool {
    body.bytes().any(|b| b.is_ascii_digit())
        && body.bytes().any(|b| b.is_ascii_uppercase())
        && body.bytes().any(|b| b.is_ascii_lowercase())
}

/// Extends a PEM header to the end of its `-----END … PRIVATE KEY-----`
/// line when that follows within [`PEM_BLOCK_WINDOW`] bytes.
fn pem_block_end(text: &str, header_end: usize) -> usize {
    let mut limit = (header_end + PEM_BLOCK_WINDOW).min(text.len());
    while limit > header_end && !text.is_char_boundary(limit) {
        limit -= 1;
    }
    let Some(window) = text.get(header_end..limit) else {
        return header_end;
    };
    let Some(at) = window.find("-----END ") else {
        return header_end;
    };
    let after_marker = at + "-----END ".len();
    let Some(close) = window.get(after_marker..).and_then(|w| w.find("-----")) else {
        return header_end;
    };
    let label = window.get(after_marker..after_marker + close).unwrap_or("");
    if label.ends_with("PRIVATE KEY") || label.ends_with("PRIVATE KEY BLOCK") {
        header_end + after_marker + close + "-----".len()
    } else {
        header_end
    }
}

fn confirm_jwt(text: &str, start: usize, end: usize, value: &str) -> bool {
    let (before, _) = prev_chars(text, start);
    if before.is_some_and(|c| is_token_char(c) || c == '.') {
        return false;
    }
    let (after, _) = next_chars(text, end);
    if after.is_some_and(is_token_char) {
        return false;
    }
    let header = value.split('.').next().unwrap_or("");
    if header.len() > JWT_HEADER_MAX {
        return false;
    }
    let Some(decoded) = base64url_decode(header) else {
        return false;
    };
    let Ok(json) = std::str::from_utf8(&decoded) else {
        return false;
    };
    let json = json.trim();
    json.starts_with('{') && json.contains("\"alg\"")
}

/// Decodes unpadded base64url; `None` on an invalid length or character.
fn base64url_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = ((acc << 6) | u32::from(v)) & 0xFFFF;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xFF) as u8);
        }
    }
    Some(out)
}
