//! `aosctl` against a real single-node control plane: both binaries run as
//! separate processes on loopback, the first `--endpoint` is dead so every
//! command proves failover to the second.

use serde_json::Value;

use crate::support::{Ctl, binary, err, free_port, out, start_single_node};

#[test]
fn aosctl_operates_a_real_cluster_with_failover() {
    binary("aosctl");
    let dir = tempfile::tempdir().unwrap();
    let node = start_single_node(dir.path(), &[]);
    let (op, http, grpc, data) =
        (node.operator_key.clone(), node.http.clone(), node.grpc.clone(), node.data.clone());

    let dead = format!("http://127.0.0.1:{}", free_port());
    let ctl = Ctl { endpoints: vec![dead.clone(), format!("http://{http}")] };

    // Status through the second endpoint: node 1 leads.
    let status = ctl.ok(&op, &["cluster", "status"]);
    let row = status.lines().find(|l| l.starts_with("1 ")).unwrap_or_default();
    assert!(row.contains(&grpc) && row.contains("leader"), "{status}");

    // Tenant and a policy-author key (secret shown once).
    let created = ctl.ok(&op, &["tenant", "create", "acme", "--name", "Acme"]);
    assert!(created.contains("acme"), "{created}");
    let listed = ctl.ok("", &["--token-file", data.join("operator.key").to_str().unwrap(), "tenant", "list"]);
    assert!(listed.contains("Acme"), "{listed}");
    let key = ctl.ok(&op, &["key", "create", "--tenant", "acme", "--name", "ci", "--role", "policy_author"]);
    assert!(key.to_lowercase().contains("store it now"), "{key}");
    let author = key
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .map(str::trim)
        .filter(|s| s.starts_with("aos_"))
        .unwrap_or_else(|| panic!("no secret in {key}"))
        .to_owned();

    // A dry run plans three creations and changes nothing.
    let apply = ["policy", "apply", "--tenant", "acme", "-f", "deploy/examples/budgets.yaml"];
    let plan = ctl.ok(&author, &[&apply[..], &["--dry-run"]].concat());
    assert_eq!(plan.lines().filter(|l| l.trim_start().starts_with("create")).count(), 3, "{plan}");
    let policies = |ctl: &Ctl| -> Vec<Value> {
        let text = ctl.ok(&author, &["-o", "json", "policy", "list", "--tenant", "acme"]);
        let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        json["policies"].as_array().cloned().unwrap()
    };
    assert!(policies(&ctl).is_empty(), "a dry run must not change anything");

    // Applied for real: three policies at version 1.
    let applied = ctl.ok(&author, &apply);
    assert_eq!(applied.lines().filter(|l| l.starts_with("created")).count(), 3, "{applied}");
    assert!(applied.contains("pol-run-tokens") && applied.contains("version 1"), "{applied}");
    let listed = policies(&ctl);
    assert_eq!(listed.len(), 3, "{listed:?}");
    let table = ctl.ok(&author, &["policy", "list", "--tenant", "acme"]);
    assert!(table.contains("pol-run-tokens"), "{table}");

    // Suspend needs a reason, checked before anything is sent.
    let o = ctl.run(&author, &["policy", "suspend", "--tenant", "acme", "pol-run-tokens"]);
    assert!(matches!(o.status.code(), Some(1 | 2)), "{:?}", o.status);
    assert!(err(&o).contains("--reason"), "{}", err(&o));
    let suspended = ctl
        .ok(&author, &["policy", "suspend", "--tenant", "acme", "pol-run-tokens", "--reason", "incident 7"]);
    assert!(suspended.contains("SUSPENDED"), "{suspended}");

    // A join token for edge agents: the secret once, then listed without it.
    let token = ctl.ok(&op, &["agent", "token", "create", "--tenant", "acme", "--ttl-secs", "3600"]);
    let secret = token.lines().find_map(|l| l.strip_prefix("secret: ")).map(str::trim).unwrap_or_default();
    assert!(secret.starts_with("aosj_"), "{token}");
    let tokens = ctl.ok(&op, &["agent", "token", "list", "--tenant", "acme"]);
    assert!(tokens.contains("jt-") && !tokens.contains(&secret[5..]), "{tokens}");
    let agents = ctl.ok(&op, &["-o", "json", "agent", "list", "--tenant", "acme"]);
    assert_eq!(serde_json::from_str::<Value>(&agents).unwrap()["agents"], serde_json::json!([]));

    // One signing key, registered at --init, signs and is held here.
    let keys = ctl.ok(&op, &["cluster", "signing-key", "list"]);
    let row = keys.lines().find(|l| l.contains("active")).unwrap_or_else(|| panic!("{keys}"));
    assert!(row.contains("yes"), "{keys}");

    // The ledger verifies end to end.
    let verified = ctl.ok(&op, &["audit", "verify"]);
    assert!(verified.starts_with("chain ok: "), "{verified}");

    // A wrong key: refused, the server's code on stderr, the key never echoed.
    let o = ctl.run("aos_not_a_real_key", &["tenant", "list"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("UNAUTHENTICATED"), "{}", err(&o));
    assert!(!err(&o).contains("aos_not_a_real_key") && !out(&o).contains("aos_not_a_real_key"));

    // Nothing reachable: EX_UNAVAILABLE.
    let dead_only = Ctl { endpoints: vec![dead, format!("http://127.0.0.1:{}", free_port())] };
    let o = dead_only.run(&op, &["cluster", "status"]);
    assert_eq!(o.status.code(), Some(69), "{}", err(&o));
    assert!(err(&o).contains("no endpoint reachable"), "{}", err(&o));
    drop(node);
}
