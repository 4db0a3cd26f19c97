//! The hallucination detector (GAP-023): a deterministic grounding check of
//! an LLM response against the documents the run retrieved through governed
//! data access. Its score feeds the evaluator's hallucination monitor, which
//! never blocks unless a policy opts in (INV-002).
//!
//! ## Method (`lexical-grounding/v1`)
//!
//! 1. The response is split into **claims**: sentences (ended by `.`, `!`,
//!    `?`, `;` or a line break) with at least [`MIN_CLAIM_TERMS`] content
//!    terms. Questions and very short sentences are not claims.
//! 2. A claim's **terms** are its lower-cased alphanumeric words minus
//!    common English stop words, with a trailing plural `s` dropped;
//!    **numbers** (digits, with `.`/`,` inside) are kept exactly.
//! 3. A claim is **supported** when one retrieved passage holds at least
//!    [`SUPPORT_RATIO`] of its terms *and every number in it*. Numbers are
//!    where fabrications hide (amounts, dates, ids), so one wrong number is
//!    enough to leave a claim unsupported.
//! 4. **Citations**: a document id the response cites (`[doc:ID]` in the
//!    text, or the ids the workload reports) that the run never retrieved is
//!    an unsupported claim of its own.
//! 5. The score is `unsupported / (claims + citations)`, from 0 (all
//!    grounded) to 1 (nothing grounded); with nothing to check it is 0.
//!
//! ## Limits, honestly
//!
//! It is lexical: a paraphrase with different words reads as unsupported,
//! and a claim that recombines words from a passage into a false statement
//! (negation, swapped subjects) reads as supported. It knows nothing the
//! run did not retrieve through the agent, so it only applies to runs that
//! retrieved something. It is English-centric (stop words, sentence ends).
//! It is a cheap, explainable screen that flags responses for review, not
//! a fact checker — which is why it is non-blocking by default. Its
//! accuracy on the labelled set in `grounding/tests.rs` is asserted there.

use std::collections::{BTreeSet, VecDeque};

use serde::Serialize;

/// The method's name, recorded with every score.
pub const METHOD: &str = "lexical-grounding/v1";
/// A sentence needs this many content terms to be a claim.
pub const MIN_CLAIM_TERMS: usize = 3;
/// Share of a claim's terms one passage must hold.
pub const SUPPORT_RATIO: f64 = 0.6;
/// Unsupported claims and unknown citations listed in a report (the
/// counts are exact).
pub const MAX_LISTED: usize = 5;
/// Longest response checked (the rest is not).
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Most claims checked per response.
pub const MAX_CLAIMS: usize = 50;
/// Most citations checked per response.
pub const MAX_CITATIONS: usize = 100;
/// Most passages a corpus holds.
pub const MAX_PASSAGES: usize = 1_000;
/// Most passage text a corpus holds.
pub const MAX_CORPUS_BYTES: usize = 512 * 1024;

/// One retrieved document (or row) the response may draw on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passage {
    /// The document id retrieval evidence recorded.
    pub doc_id: String,
    /// Its text.
    pub text: String,
}

/// What the check found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroundingReport {
    /// [`METHOD`].
    pub method: &'static str,
    /// Hallucination score, `0.0..=1.0`.
    pub score: f64,
    /// Claims checked.
    pub claims: usize,
    /// Claims no passage supports.
    pub unsupported: usize,
    /// The first [`MAX_LISTED`] unsupported claims (truncated to 200
    /// characters each).
    pub unsupported_claims: Vec<String>,
    /// The first [`MAX_LISTED`] cited document ids the run never
    /// retrieved.
    pub unknown_citations: Vec<String>,
    /// Whether the response was longer than what was checked.
    pub truncated: bool,
}

const STOP_WORDS: &[&str] = &[
    "a", "about", "after", "all", "also", "an", "and", "any", "are", "as", "at", "be", "been", "before",
    "but", "by", "can", "could", "did", "do", "does", "for", "from", "had", "has", "have", "he", "her",
    "his", "how", "i", "if", "in", "into", "is", "it", "its", "may", "more", "most", "must", "no", "not",
    "of", "on", "or", "our", "she", "should", "so", "such", "than", "that", "the", "their", "them", "then",
    "there", "these", "they", "this", "those", "to", "up", "was", "we", "were", "what", "when", "which",
    "while", "who", "will", "with", "would", "you", "your",
];

/// A word's normal form, or `None` for a stop word.
fn term(word: &str) -> Option<String> {
    let lower = word.to_lowercase();
    if STOP_WORDS.binary_search(&lower.as_str()).is_ok() {
        return None;
    }
    let stem = match lower.strip_suffix('s') {
        Some(s) if s.len() >= 3 && !s.ends_with('s') => s.to_owned(),
        _ => lower,
    };
    Some(stem)
}

fn is_number(token: &str) -> bool {
    token.chars().any(|c| c.is_ascii_digit())
}

/// Tokens: runs of alphanumerics, with `.` and `,` kept inside numbers
/// (`1,250.50`), `-` and `_` inside words (`pol-1`).
fn tokens(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut current = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let next_alnum = chars.get(i + 1).is_some_and(|n| n.is_alphanumeric());
        let joins = match c {
            '.' | ',' => {
                current.chars().last().is_some_and(|p| p.is_ascii_digit())
                    && chars.get(i + 1).is_some_and(char::is_ascii_digit)
            }
            '-' | '_' => !current.is_empty() && next_alnum,
            _ => c.is_alphanumeric(),
        };
        if joins {
            current.push(c);
        } else if !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[derive(Debug, Clone)]
struct Terms {
    words: BTreeSet<String>,
    numbers: BTreeSet<String>,
}

fn terms(text: &str) -> Terms {
    let mut words = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for token in tokens(text) {
        if is_number(&token) && token.chars().all(|c| c.is_ascii_digit() || c == '.' || c == ',') {
            numbers.insert(token.replace(',', ""));
        } else if let Some(t) = term(&token) {
            words.insert(t);
        }
    }
    Terms { words, numbers }
}

/// Sentences of `text`.
fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let bytes = text.as_bytes();
    for (i, c) in text.char_indices() {
        let end = match c {
            '!' | '?' | ';' | '\n' => true,
            // A full stop ends a sentence unless it sits inside a number.
            '.' => {
                !(i > 0 && bytes[i - 1].is_ascii_digit() && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
            }
            _ => false,
        };
        if end {
            out.push(&text[start..=i]);
            start = i + c.len_utf8();
        }
    }
    if start < text.len() {
        out.push(&text[start..]);
    }
    out.into_iter().map(str::trim).filter(|s| !s.is_empty()).collect()
}

/// `[doc:ID]` citations in the text, and the text without them (a cited id
/// is not a claim, and may hold a `.`).
fn citations(text: &str) -> (Vec<String>, String) {
    let mut ids = Vec::new();
    let mut stripped = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("[doc:") {
        let after = &rest[at + 5..];
        match after.find(']') {
            Some(end) if end <= 200 => {
                let id = after[..end].trim();
                if !id.is_empty() {
                    ids.push(id.to_owned());
                }
                stripped.push_str(&rest[..at]);
                rest = &after[end + 1..];
            }
            _ => {
                stripped.push_str(&rest[..at + 5]);
                rest = after;
            }
        }
    }
    stripped.push_str(rest);
    (ids, stripped)
}

/// Retrieved passages, their terms computed once when retrieved, so a
/// check costs at most [`MAX_CLAIMS`] × [`MAX_PASSAGES`] small set
/// intersections. The oldest passages go first past [`MAX_PASSAGES`] or
/// [`MAX_CORPUS_BYTES`] of text.
#[derive(Debug, Clone, Default)]
pub struct Corpus {
    passages: VecDeque<Indexed>,
    bytes: usize,
}

#[derive(Debug, Clone)]
struct Indexed {
    doc_id: String,
    terms: Terms,
    bytes: usize,
}

impl Corpus {
    /// Adds a passage.
    pub fn push(&mut self, passage: Passage) {
        if passage.text.is_empty() {
            return;
        }
        let bytes = passage.text.len();
        self.passages.push_back(Indexed { terms: terms(&passage.text), doc_id: passage.doc_id, bytes });
        self.bytes += bytes;
        while self.passages.len() > MAX_PASSAGES || (self.bytes > MAX_CORPUS_BYTES && self.passages.len() > 1)
        {
            if let Some(old) = self.passages.pop_front() {
                self.bytes -= old.bytes;
            }
        }
    }

    /// Passages held.
    pub fn len(&self) -> usize {
        self.passages.len()
    }

    /// Whether nothing was retrieved.
    pub fn is_empty(&self) -> bool {
        self.passages.is_empty()
    }

    /// Text bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl FromIterator<Passage> for Corpus {
    fn from_iter<I: IntoIterator<Item = Passage>>(iter: I) -> Corpus {
        let mut corpus = Corpus::default();
        iter.into_iter().for_each(|p| corpus.push(p));
        corpus
    }
}

/// Checks `response` against the `corpus`; `cited` are document ids the
/// workload says the response relies on (added to those cited in the
/// text). Only the first [`MAX_RESPONSE_BYTES`] of the response, its first
/// [`MAX_CLAIMS`] claims and [`MAX_CITATIONS`] citations are checked.
pub fn check(response: &str, cited: &[String], corpus: &Corpus) -> GroundingReport {
    let full_len = response.len();
    let mut cut = full_len.min(MAX_RESPONSE_BYTES);
    while !response.is_char_boundary(cut) {
        cut -= 1;
    }
    let response = &response[..cut];
    let mut claims = 0;
    let mut unsupported_claims = Vec::new();
    let mut unsupported = 0;
    let (in_text, prose) = citations(response);
    for sentence in sentences(&prose) {
        if claims >= MAX_CLAIMS {
            break;
        }
        if sentence.ends_with('?') {
            continue;
        }
        let claim = terms(sentence);
        let total = claim.words.len() + claim.numbers.len();
        if total < MIN_CLAIM_TERMS {
            continue;
        }
        claims += 1;
        let supported = corpus.passages.iter().any(|p| {
            let p = &p.terms;
            if !claim.numbers.is_subset(&p.numbers) {
                return false;
            }
            let held =
                claim.words.intersection(&p.words).count() + claim.numbers.intersection(&p.numbers).count();
            #[allow(clippy::cast_precision_loss)]
            let ratio = held as f64 / total as f64;
            ratio >= SUPPORT_RATIO
        });
        if !supported {
            unsupported += 1;
            if unsupported_claims.len() < MAX_LISTED {
                unsupported_claims.push(sentence.chars().take(200).collect());
            }
        }
    }
    let mut all_cited: BTreeSet<String> = in_text.into_iter().collect();
    all_cited.extend(cited.iter().cloned());
    let all_cited: Vec<String> = all_cited.into_iter().take(MAX_CITATIONS).collect();
    let retrieved: BTreeSet<&str> = corpus.passages.iter().map(|p| p.doc_id.as_str()).collect();
    let unknown: Vec<&String> = all_cited.iter().filter(|c| !retrieved.contains(c.as_str())).collect();
    let checked = claims + all_cited.len();
    let failed = unsupported + unknown.len();
    #[allow(clippy::cast_precision_loss)]
    let score = if checked == 0 { 0.0 } else { failed as f64 / checked as f64 };
    GroundingReport {
        method: METHOD,
        score,
        claims,
        unsupported,
        unsupported_claims,
        unknown_citations: unknown.into_iter().take(MAX_LISTED).cloned().collect(),
        truncated: cut < full_len || claims >= MAX_CLAIMS,
    }
}

#[cfg(test)]
mod tests;
