//! The hallucination detector reads workload-supplied text: it must never
//! panic, and its score must stay within 0..=1.
#![no_main]

use aos_core::grounding::{Passage, check};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mid = (0..=text.len() / 2).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
    let (response, passage) = text.split_at(mid);
    let passages = [Passage { doc_id: "d".into(), text: passage.into() }];
    let report = check(response, &[], &passages);
    assert!((0.0..=1.0).contains(&report.score), "{report:?}");
});
