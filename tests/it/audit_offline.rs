//! `aosctl audit verify --data-dir`: the ledger rebuilt offline from a copy
//! of a node's data directory verifies, and a single altered entry on disk
//! is named by seq (issue 3, tamper evidence).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::support::{Ctl, binary, copy_dir, err, out, start_single_node, wait_for};

/// Runs `aosctl -o json audit verify --data-dir DIR`: (exit code, JSON).
fn verify_offline(dir: &Path) -> (Option<i32>, Value, String) {
    let ctl = Ctl { endpoints: vec![] };
    let o = ctl.run("", &["-o", "json", "audit", "verify", "--data-dir", dir.to_str().unwrap()]);
    let json =
        serde_json::from_str(&out(&o)).unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", out(&o), err(&o)));
    (o.status.code(), json, err(&o))
}

#[test]
fn offline_verify_passes_on_a_copy_and_names_a_tampered_entry() {
    binary("aosctl");
    let root = tempfile::tempdir().unwrap();
    // Small snapshot interval: the ledger is materialised in the on-disk
    // snapshot, which is what a tamperer would edit.
    let mut node = start_single_node(root.path(), &["--snapshot-every", "8"]);
    let ctl = Ctl { endpoints: vec![format!("http://{}", node.http)] };
    let op = node.operator_key.clone();
    ctl.ok(&op, &["tenant", "create", "acme", "--name", "Acme"]);
    for i in 0..12 {
        ctl.ok(&op, &["key", "create", "--tenant", "acme", "--name", &format!("k{i}"), "--role", "auditor"]);
    }
    let snapshot_index = wait_for("a Raft snapshot", Duration::from_secs(30), || {
        let text = ctl.ok(&op, &["-o", "json", "cluster", "status"]);
        let status: Value = serde_json::from_str(&text).ok()?;
        status["snapshot_index"].as_u64().filter(|i| *i >= 8)
    });
    let online: Value =
        serde_json::from_str(&ctl.ok(&op, &["-o", "json", "audit", "list", "--limit", "1000"])).unwrap();
    let online = online["entries"].as_array().cloned().unwrap();
    assert!(online.len() >= 13, "{} entries", online.len());

    // kill -9, then work on a copy, as an investigator would.
    let _ = node.guard.child.kill();
    let _ = node.guard.child.wait();
    let copy = root.path().join("copy");
    copy_dir(&node.data, &copy);

    let (code, verdict, stderr) = verify_offline(&copy);
    assert_eq!(code, Some(0), "{verdict} {stderr}");
    assert_eq!(verdict["ok"], true, "{verdict}");
    let offline_count = verdict["entries"].as_u64().unwrap();
    // Everything up to the snapshot is on disk for sure (log indices 1 and 2
    // of a single-node cluster are its membership and blank entries, which
    // carry no proposal); the head entry agrees with what the node served.
    assert!(
        offline_count + 2 >= snapshot_index && offline_count <= online.len() as u64,
        "offline {offline_count}, snapshot index {snapshot_index}, online {}",
        online.len()
    );
    let head = online[usize::try_from(offline_count).unwrap() - 1]["hash"].clone();
    assert_eq!(verdict["head"], head, "offline head must be the online entry with the same seq");

    // Alter one field of entry 3 inside the stored snapshot.
    {
        // No flusher thread: it would hold the database (and its file
        // lock) for a moment after the drop, racing aosctl's open below.
        // The snapshot's bytes are in a file beside the database, named by a record in its
        // snapshot tree with the file's length and CRC-32, which a careful forger rewrites too.
        let db = sled::Config::new().path(copy.join("raft")).flush_every_ms(None).open().unwrap();
        let tree = db.open_tree("raft_snapshot").unwrap();
        let mut record: Value =
            serde_json::from_slice(&tree.get("file").unwrap().expect("a stored snapshot")).unwrap();
        let file = copy.join("raft").join("state-snapshots").join(record["name"].as_str().unwrap());
        let mut snapshot: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let entry = &mut snapshot["state"]["audit"]["entries"][2];
        assert_eq!(entry["seq"], 3, "{entry}");
        entry["target"] = Value::String("key/someone-else".to_owned());
        let forged = serde_json::to_vec(&snapshot).unwrap();
        std::fs::write(&file, &forged).unwrap();
        record["len"] = forged.len().into();
        record["crc32"] = crc32fast::hash(&forged).into();
        tree.insert("file", serde_json::to_vec(&record).unwrap()).unwrap();
        db.flush().unwrap();
    }
    let (code, verdict, stderr) = verify_offline(&copy);
    assert_eq!(code, Some(1), "{verdict} {stderr}");
    assert_eq!(verdict["ok"], false, "{verdict}");
    assert_eq!(verdict["broken_seq"], 3, "{verdict}");
    assert!(verdict["reason"].as_str().unwrap().contains("hash mismatch"), "{verdict}");

    // Not a store at all: a clear error, exit 1, nothing created.
    let empty = root.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = Ctl { endpoints: vec![] }.run("", &["audit", "verify", "--data-dir", empty.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("not a node's raft store"), "{}", err(&o));
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
}
