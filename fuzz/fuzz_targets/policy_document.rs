//! Policy documents from operators: parsing must never panic, and an
//! accepted document must survive a JSON round trip unchanged.
#![no_main]

use aos_core::document::{DocumentFormat, parse_document};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for format in [DocumentFormat::Yaml, DocumentFormat::Json] {
        if let Ok(doc) = parse_document(text, format) {
            let json = serde_json::to_string(&doc).expect("an accepted document serialises");
            let again = parse_document(&json, DocumentFormat::Json).expect("its JSON form is accepted");
            assert_eq!(again, doc);
        }
    }
});
