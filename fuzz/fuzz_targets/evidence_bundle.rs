//! Evidence bundles come from anywhere (an auditor's mailbox): opening one
//! must never panic, and must never accept bytes not signed by a trusted
//! key.
#![no_main]

use aos_core::export::open;
use aos_core::snapshot::{SnapshotSigner, TrustedKeys};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let signer = SnapshotSigner::from_secret_bytes(&[7; 32]).expect("32 bytes");
    let mut trusted = TrustedKeys::new();
    trusted.insert(signer.verifying_key());
    // Random bytes cannot carry a valid signature by this key.
    assert!(open(data, &trusted).is_err());
});
