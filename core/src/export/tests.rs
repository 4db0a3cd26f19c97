use super::*;

fn signer(seed: u8) -> SnapshotSigner {
    SnapshotSigner::from_secret_bytes(&[seed; 32]).unwrap()
}

fn trusting(signer: &SnapshotSigner) -> TrustedKeys {
    let mut trusted = TrustedKeys::new();
    trusted.insert(signer.verifying_key());
    trusted
}

fn header() -> BundleHeader {
    BundleHeader {
        kind: BundleKind::Evidence,
        tenant_id: "acme".into(),
        subject: Subject::Run { run_id: "run-1".into() },
        generated_at_ms: 1_700_000_000_000,
        generated_by: "op-1".into(),
        ledger_head: LedgerHead { seq: 42, hash: "ab".repeat(32) },
    }
}

fn files() -> Vec<BundleFile> {
    vec![
        BundleFile { path: "records.jsonl".into(), bytes: b"{\"kind\":\"LLM_RUN_RECORD\"}\n".to_vec() },
        BundleFile { path: "policies/pol-1.json".into(), bytes: b"{\"id\":\"pol-1\"}".to_vec() },
    ]
}

/// An archive's entries: (path, bytes).
type Entries = Vec<(String, Vec<u8>)>;

/// Rebuilds an archive from (path, bytes) pairs, as a tamperer would.
fn repack(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, bytes) in entries {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        // Raw name bytes: the tar crate would refuse to write `..`, a
        // tamperer's tool would not.
        header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        builder.append(&header, &bytes[..]).unwrap();
    }
    builder.into_inner().unwrap()
}

fn unpack(archive: &[u8]) -> Entries {
    let mut reader = tar::Archive::new(archive);
    reader
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            (path, bytes)
        })
        .collect()
}

#[test]
fn a_sealed_bundle_opens_with_its_files_and_manifest() {
    let key = signer(1);
    let archive = seal(header(), files(), &key).unwrap().archive;
    let bundle = open(&archive, &trusting(&key)).unwrap();
    assert_eq!(bundle.manifest.tenant_id, "acme");
    assert_eq!(bundle.manifest.subject, Subject::Run { run_id: "run-1".into() });
    assert_eq!(bundle.manifest.files.len(), 2);
    assert_eq!(bundle.files["policies/pol-1.json"], b"{\"id\":\"pol-1\"}");
    // Deterministic: the same inputs give the same bytes.
    assert_eq!(archive, seal(header(), files(), &key).unwrap().archive);
}

#[test]
fn every_kind_of_tampering_is_named() {
    let key = signer(1);
    let archive = seal(header(), files(), &key).unwrap().archive;
    let trusted = trusting(&key);
    let entries = unpack(&archive);
    let edit = |f: &dyn Fn(&mut Entries)| {
        let mut e = entries.clone();
        f(&mut e);
        open(&repack(&e), &trusted).unwrap_err()
    };
    // A record changed.
    let err = edit(&|e| e.iter_mut().find(|(p, _)| p == "records.jsonl").unwrap().1[2] ^= 1);
    assert!(matches!(&err, BundleError::Altered { path, .. } if path == "records.jsonl"), "{err}");
    // A file removed, one added.
    let err = edit(&|e| e.retain(|(p, _)| p != "policies/pol-1.json"));
    assert_eq!(err, BundleError::Missing("policies/pol-1.json".into()));
    let err = edit(&|e| e.push(("extra.txt".into(), b"x".to_vec())));
    assert_eq!(err, BundleError::Unlisted("extra.txt".into()));
    // The manifest edited to match an altered record: the signature breaks.
    let err = edit(&|e| {
        let manifest = e.iter_mut().find(|(p, _)| p == MANIFEST_PATH).unwrap();
        let text = String::from_utf8(manifest.1.clone()).unwrap().replace("run-1", "run-2");
        manifest.1 = text.into_bytes();
    });
    assert_eq!(err, BundleError::BadSignature);
    // Re-signed by another key: not trusted.
    let forged = seal(header(), files(), &signer(2)).unwrap().archive;
    assert!(matches!(open(&forged, &trusted), Err(BundleError::UntrustedKey(_))));
    // Missing signature, garbage, a path that climbs out, a duplicate.
    let err = edit(&|e| e.retain(|(p, _)| p != SIGNATURE_PATH));
    assert!(matches!(err, BundleError::BadManifest { path: SIGNATURE_PATH, .. }), "{err}");
    assert!(matches!(
        open(b"not a tar archive at all", &trusted),
        Err(BundleError::NotAnArchive(_)) | Err(BundleError::BadManifest { .. })
    ));
    let err = edit(&|e| e.push(("a/../../etc/passwd".into(), Vec::new())));
    assert!(matches!(err, BundleError::BadEntry { .. }), "{err}");
    let err = edit(&|e| {
        let first = e[2].clone();
        e.push(first);
    });
    assert!(matches!(err, BundleError::Duplicate(_)), "{err}");
    // Bytes appended after the archive ride along unauthenticated: refused.
    let mut appended = archive.clone();
    appended.extend_from_slice(&[0; 1024]);
    appended.extend_from_slice(b"smuggled");
    assert!(matches!(open(&appended, &trusted), Err(BundleError::NotAnArchive(_))));
    let mut padded = archive.clone();
    padded.extend_from_slice(&[0; 4096]);
    assert!(open(&padded, &trusted).is_ok(), "zero padding is how tar ends");
}

#[test]
fn sealing_refuses_unsafe_or_reserved_paths() {
    let key = signer(1);
    for path in ["/abs", "a/../b", "manifest.json", "", "a//b", "win\\path"] {
        let file = BundleFile { path: path.into(), bytes: Vec::new() };
        assert!(seal(header(), vec![file], &key).is_err(), "{path}");
    }
    let twice = vec![files()[0].clone(), files()[0].clone()];
    assert!(matches!(seal(header(), twice, &key), Err(BundleError::Duplicate(_))));
}
