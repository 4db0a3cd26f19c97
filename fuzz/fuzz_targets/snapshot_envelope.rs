//! Snapshot envelopes from the network: verification must refuse garbage
//! without panicking, and a decodable envelope must re-encode to the same
//! bytes (one encoding per envelope).
#![no_main]

use aos_core::snapshot::{Envelope, SnapshotSigner, TrustedKeys, VerifyOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = Envelope::decode(data) {
        assert_eq!(envelope.encode(), data, "envelope encoding is not canonical");
    }
    let Ok(signer) = SnapshotSigner::from_secret_bytes(&[5u8; 32]) else { return };
    let mut trusted = TrustedKeys::new();
    trusted.insert(signer.verifying_key());
    let _ = aos_core::verify(data, &trusted, &VerifyOptions { tenant_id: "t", last_accepted_version: None, now_ms: 0 });
});
