//! The governance lever against a real node, through `aosctl` (issue 5):
//! who may pull it, tenant scoping, TTL expiry by the leader, and the
//! ledger.

use std::time::Duration;

use serde_json::Value;

use crate::support::{Ctl, start_single_node, wait_for};

fn state(ctl: &Ctl, key: &str, tenant: Option<&str>) -> Value {
    let mut args = vec!["-o", "json", "governance", "state"];
    if let Some(t) = tenant {
        args.extend(["--tenant", t]);
    }
    serde_json::from_str(&ctl.ok(key, &args)).unwrap()
}

fn key(ctl: &Ctl, op: &str, tenant: &str, role: &str) -> String {
    let created =
        ctl.ok(op, &["-o", "json", "key", "create", "--tenant", tenant, "--name", role, "--role", role]);
    let created: Value = serde_json::from_str(&created).unwrap();
    created["secret"].as_str().unwrap().to_owned()
}

#[test]
fn the_governance_lever_is_scoped_audited_and_expires() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_single_node(dir.path(), &[]);
    let op = node.operator_key.clone();
    let ctl = Ctl { endpoints: vec![format!("http://{}", node.http)] };
    for t in ["acme", "globex"] {
        ctl.ok(&op, &["tenant", "create", t]);
    }
    let sre = key(&ctl, &op, "acme", "sre");
    let auditor = key(&ctl, &op, "acme", "auditor");
    let initial = state(&ctl, &op, None);
    assert_eq!(
        (initial["version"].as_u64(), initial["global"]["mode"].as_str()),
        (Some(0), Some("ENFORCING"))
    );

    // A tenant SRE halts its own tenant, and only it.
    let out = ctl.ok(&sre, &["governance", "halt", "--tenant", "acme", "--reason", "runaway agent"]);
    assert!(out.contains("version 1"), "{out}");
    let acme = state(&ctl, &sre, None);
    assert_eq!(acme["tenant"]["effective"], "HALTED", "{acme}");
    assert!(acme.get("tenants").is_none(), "a tenant key sees only its tenant: {acme}");
    assert_eq!(state(&ctl, &op, Some("globex"))["tenant"]["effective"], "ENFORCING");

    // Refusals: the global lever, another tenant, the wrong role, no reason.
    for (key, args) in [
        (&sre, vec!["governance", "disable", "--reason", "x"]),
        (&sre, vec!["governance", "halt", "--tenant", "globex", "--reason", "x"]),
        (&auditor, vec!["governance", "enable", "--tenant", "acme", "--reason", "x"]),
    ] {
        let o = ctl.run(key, &args);
        assert!(!o.status.success(), "{args:?} must be refused");
        assert!(crate::support::err(&o).contains("403"), "{args:?}: {}", crate::support::err(&o));
    }
    let o = ctl.run(&sre, &["governance", "state", "--tenant", "globex"]);
    assert!(!o.status.success(), "a tenant key cannot read another tenant's governance");
    let o = ctl.run(&op, &["governance", "degrade", "--reason", "x", "--ttl", "15x"]);
    assert!(
        !o.status.success() && crate::support::err(&o).contains("unknown unit"),
        "{}",
        crate::support::err(&o)
    );

    // A global DEGRADED with a TTL: every tenant degraded (acme stays
    // HALTED: a halt wins), then the leader expires it.
    ctl.ok(&op, &["governance", "degrade", "--reason", "database failover", "--ttl", "1s"]);
    assert_eq!(state(&ctl, &op, Some("globex"))["tenant"]["effective"], "DEGRADED");
    assert_eq!(state(&ctl, &op, Some("acme"))["tenant"]["effective"], "HALTED");
    wait_for("the TTL expiry", Duration::from_secs(30), || {
        let s = state(&ctl, &op, Some("globex"));
        (s["global"]["mode"] == "ENFORCING").then_some(())
    });
    let table = ctl.ok(&op, &["governance", "state"]);
    assert!(
        table.contains("tenant acme") && table.contains("HALTED") && table.contains("runaway agent"),
        "{table}"
    );

    // Everything is in the ledger, refusals included.
    let audit = ctl.ok(&op, &["-o", "json", "audit", "list"]);
    assert_eq!(audit.matches("GOVERNANCE_CHANGED").count(), 2, "{audit}");
    assert_eq!(audit.matches("GOVERNANCE_EXPIRED").count(), 1, "{audit}");
    assert!(audit.matches("ACCESS_DENIED").count() >= 3, "{audit}");
}
