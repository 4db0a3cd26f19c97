//! Exports end to end (issue 8, GAP-025..027): an incident's signed
//! evidence bundle verifies offline against the cluster's published keys
//! and fails, naming the file, once tampered with; its PDF report holds
//! every field of the incident (read back with `pdftotext`); the executive
//! debrief and the SOC2 bundle cover a period; every export is in the
//! ledger with the hash of what was handed out.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::agent_sync::{Acme, EdgeAgent, acme_with_policy, call_with_key};
use crate::incidents::{breach, incidents};
use crate::support::{out, wait_for};

/// The text of a PDF, by poppler's `pdftotext` (scripts/verify installs
/// poppler-utils).
fn pdf_text(path: &std::path::Path) -> String {
    let output = Command::new("pdftotext")
        .args(["-layout", "-enc", "UTF-8"])
        .arg(path)
        .arg("-")
        .output()
        .expect("pdftotext (Debian's poppler-utils; scripts/verify installs it)");
    assert!(output.status.success(), "pdftotext: {}", String::from_utf8_lossy(&output.stderr));
    // Collapse the layout's runs of spaces so values can be searched for.
    String::from_utf8_lossy(&output.stdout).split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Every scalar of an incident as the report prints it.
fn scalars(prefix: &str, value: &Value, into: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                scalars(k, v, into);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| scalars(prefix, v, into)),
        Value::String(s) => into.push((prefix.to_owned(), s.clone())),
        Value::Null => {}
        other => into.push((prefix.to_owned(), other.to_string())),
    }
}

#[test]
fn evidence_of_an_incident_is_signed_verifiable_offline_and_reported_in_pdf() {
    let dir = tempfile::tempdir().unwrap();
    let Acme { node, ctl, op, gateway, token } = acme_with_policy(dir.path());
    let agent = EdgeAgent::start(&dir.path().join("agent"), &gateway, Some(&token));
    wait_for("the snapshot", Duration::from_secs(30), || (agent.snapshot_version() > 0).then_some(()));
    let started_ms = aos_now_ms();
    let run = breach(&agent);
    let incident =
        wait_for("the incident", Duration::from_secs(30), || incidents(&ctl, &op).into_iter().next());
    let id = incident["incident_id"].as_str().unwrap().to_owned();
    ctl.ok(&op, &["incident", "ack", "--tenant", "acme", &id, "--note", "looking"]);
    // The run's records reach the control plane too (the run state at least).
    let records_url = format!("http://{}/api/v1/tenants/acme/activity/runs/{run}", node.http);
    wait_for("the run's records", Duration::from_secs(30), || {
        let (_, body) = call_with_key("GET", &records_url, Some(&op), None);
        (body["records"].as_array()?.len() >= 3).then_some(())
    });

    // Bundle + trust anchor, then offline verification.
    let keys = dir.path().join("keys.json");
    let bundle = dir.path().join("incident.tar");
    ctl.ok(&op, &["export", "keys", "-f", keys.to_str().unwrap()]);
    ctl.ok(
        &op,
        &["export", "evidence", "--tenant", "acme", "--incident", &id, "-f", bundle.to_str().unwrap()],
    );
    let verify = |path: &std::path::Path, extra: &[&str]| {
        let mut args = vec!["-o", "json", "export", "verify", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        let o = ctl.run("", &args);
        (o.status.code(), serde_json::from_str::<Value>(&out(&o)).unwrap_or(Value::Null))
    };
    let (code, verified) = verify(&bundle, &["--keys", keys.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{verified}");
    assert_eq!(verified["manifest"]["subject"]["incident_id"], id.as_str());
    let files: Vec<&str> = verified["manifest"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    for expected in
        ["README.txt", "audit.jsonl", "incidents.json", "policies.json", "records.jsonl", "snapshots.json"]
    {
        assert!(files.contains(&expected), "{files:?}");
    }
    // The tar holds the run's records and the acknowledgement from the ledger.
    let archive = std::fs::read(&bundle).unwrap();
    let text = String::from_utf8_lossy(&archive);
    assert!(
        text.contains(&run) && text.contains("INCIDENT_ACKNOWLEDGED"),
        "the records and the ledger entry"
    );
    assert!(text.contains("pol-run-tokens"), "the policy in force");

    // Tampered: one byte of a record changed; another key; no key at all.
    let at = text.find("\"LLM_RUN_RECORD\"").or_else(|| text.find(&run)).unwrap();
    let mut tampered = archive.clone();
    tampered[at + 2] ^= 0x01;
    let tampered_path = dir.path().join("tampered.tar");
    std::fs::write(&tampered_path, &tampered).unwrap();
    let (code, refused) = verify(&tampered_path, &["--keys", keys.to_str().unwrap()]);
    assert_eq!((code, refused["valid"].as_bool()), (Some(1), Some(false)), "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("altered"), "{refused}");
    let stranger = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    let (code, untrusted) = verify(&bundle, &["--public-key", stranger]);
    assert_eq!((code, untrusted["kind"].as_str()), (Some(1), Some("UNTRUSTED_KEY")), "{untrusted}");
    let no_trust = ctl.run("", &["export", "verify", bundle.to_str().unwrap()]);
    assert_eq!(no_trust.status.code(), Some(2), "a trust anchor is required");

    // The PDF report names every field of the incident.
    let report = dir.path().join("incident.pdf");
    ctl.ok(&op, &["export", "report", "--tenant", "acme", "--incident", &id, "-f", report.to_str().unwrap()]);
    let pdf = pdf_text(&report);
    let (_, current) = call_with_key(
        "GET",
        &format!("http://{}/api/v1/tenants/acme/incidents/{id}", node.http),
        Some(&op),
        None,
    );
    let incident_json = if current.get("incident").is_some() { current["incident"].clone() } else { current };
    let mut fields = Vec::new();
    scalars("", &incident_json, &mut fields);
    assert!(fields.len() >= 15, "{fields:?}");
    for key in incident_json.as_object().unwrap().keys() {
        assert!(pdf.contains(key.as_str()), "field `{key}` missing from the PDF:\n{pdf}");
    }
    for (key, value) in &fields {
        // Long values (hashes) may wrap: their first 40 characters are on one line.
        let probe: String = value.chars().take(40).collect();
        assert!(pdf.contains(&probe), "value of `{key}` (`{value}`) missing from the PDF:\n{pdf}");
    }
    assert!(pdf.contains("Decision trail") && pdf.contains("STOP"), "{pdf}");
    assert!(pdf.contains("Policies in force") && pdf.contains("pol-run-tokens v1"), "{pdf}");

    // A period: the debrief and the SOC2 bundle.
    let (from, to) = (started_ms.saturating_sub(60_000).to_string(), (aos_now_ms() + 60_000).to_string());
    let debrief = dir.path().join("debrief.pdf");
    ctl.ok(
        &op,
        &[
            "export",
            "debrief",
            "--tenant",
            "acme",
            "--from",
            &from,
            "--to",
            &to,
            "-f",
            debrief.to_str().unwrap(),
        ],
    );
    let text = pdf_text(&debrief);
    assert!(text.contains("TOKEN_LIMIT 1"), "incidents by category:\n{text}");
    assert!(text.contains("pol-run-tokens"), "top policies:\n{text}");
    assert!(text.contains("page 1 of 1"), "one page:\n{text}");
    let soc2 = dir.path().join("soc2.tar");
    ctl.ok(
        &op,
        &["export", "soc2", "--tenant", "acme", "--from", &from, "--to", &to, "-f", soc2.to_str().unwrap()],
    );
    let (code, verified_soc2) = verify(&soc2, &["--keys", keys.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{verified_soc2}");
    assert_eq!(verified_soc2["manifest"]["kind"], "SOC2");
    let soc2_text = String::from_utf8_lossy(&std::fs::read(&soc2).unwrap()).into_owned();
    for criterion in ["CC6.1", "CC7.2", "CC8.1"] {
        assert!(soc2_text.contains(criterion), "{criterion}");
    }

    // Every export is in the ledger with the hash of what was handed out.
    let audit = ctl.ok(&op, &["-o", "json", "audit", "list", "--tenant", "acme", "--limit", "1000"]);
    let manifest_sha = verified["manifest_sha256"].as_str().unwrap();
    assert!(audit.contains(manifest_sha), "the bundle's manifest hash is in the ledger");
    assert_eq!(audit.matches("\"EVIDENCE_EXPORTED\"").count(), 4, "{audit}");

    // Bad requests: two subjects, an unknown run, a report of a period, no key.
    let base = format!("http://{}/api/v1/tenants/acme/exports", node.http);
    for (url, status) in [
        (format!("{base}/evidence?run_id={run}&incident_id={id}"), 400),
        (format!("{base}/evidence?run_id=run-unknown"), 404),
        (format!("{base}/evidence?from_ms=10&to_ms=5"), 400),
        (format!("{base}/report.pdf?from_ms=1&to_ms=2"), 400),
        (format!("{base}/debrief.pdf?run_id={run}"), 400),
        (format!("{base}/evidence?bogus=1"), 400),
    ] {
        let (got, body) = call_with_key("GET", &url, Some(&op), None);
        assert_eq!(got, status, "{url}: {body}");
        assert!(body["error"]["message"].is_string(), "{url}: {body}");
    }
    let (got, _) = call_with_key("GET", &format!("{base}/evidence?run_id={run}"), None, None);
    assert_eq!(got, 401);
    // Another tenant's admin, and an SRE of this one for the ledger-bearing
    // bundle and the audit log: refused, and the refusals are in the ledger.
    ctl.ok(&op, &["tenant", "create", "globex", "--name", "Globex"]);
    let key = |tenant: &str, role: &str| -> String {
        let out =
            ctl.ok(&op, &["-o", "json", "key", "create", "--tenant", tenant, "--name", role, "--role", role]);
        serde_json::from_str::<Value>(&out).unwrap()["secret"].as_str().unwrap().to_owned()
    };
    let (globex, sre) = (key("globex", "admin"), key("acme", "sre"));
    let logs_base = format!("http://{}/api/v1/tenants/acme", node.http);
    for (url, who) in [
        (format!("{base}/evidence?run_id={run}"), &globex),
        (format!("{base}/report.pdf?run_id={run}"), &globex),
        (format!("{logs_base}/logs/llm-runs"), &globex),
        (format!("{logs_base}/retention"), &globex),
        (format!("{base}/evidence?run_id={run}"), &sre),
        (format!("{logs_base}/logs/audit"), &sre),
    ] {
        let (got, body) = call_with_key("GET", &url, Some(who), None);
        assert_eq!((got, body["error"]["code"].as_str()), (403, Some("FORBIDDEN")), "{url}: {body}");
    }
    let (got, _) = call_with_key("GET", &format!("{base}/report.pdf?run_id={run}"), Some(&sre), None);
    assert_eq!(got, 200, "an SRE may read the report");
    let audit = ctl.ok(&op, &["-o", "json", "audit", "list", "--tenant", "acme", "--limit", "1000"]);
    assert!(audit.contains("EXPORT_EVIDENCE"), "the refused export is in the ledger");
}

fn aos_now_ms() -> u64 {
    u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis())
        .unwrap()
}

/// The three logs page by run, policy and cursor; retention prunes records
/// past their age but never the audit ledger, which still verifies.
#[test]
fn logs_are_paged_and_retention_prunes_records_but_never_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let Acme { node, ctl, op, gateway, token } =
        crate::agent_sync::acme_with_args(dir.path(), &["--retention-interval-ms", "200"]);
    let agent = EdgeAgent::start(&dir.path().join("agent"), &gateway, Some(&token));
    wait_for("the snapshot", Duration::from_secs(30), || (agent.snapshot_version() > 0).then_some(()));
    // Run A: stopped before its second call. Run B: two quiet calls.
    let run = breach(&agent);
    let quiet = agent.start_run();
    assert_eq!(agent.step(&quiet, 100)["allowed"], true);
    assert_eq!(agent.step(&quiet, 100)["allowed"], true);
    let logs = |query: &str| {
        let url = format!("http://{}/api/v1/tenants/acme/logs/{query}", node.http);
        call_with_key("GET", &url, Some(&op), None)
    };
    let llm = wait_for("run B's two LLM run records", Duration::from_secs(30), || {
        let (_, page) = logs(&format!("llm-runs?run_id={quiet}"));
        let entries = page["entries"].as_array()?.clone();
        (entries.len() == 2).then_some(entries)
    });
    assert!(llm.iter().all(|e| e["kind"] == "LLM_RUN_RECORD" && e["run_id"] == quiet.as_str()));
    // Paged: one at a time with the cursor.
    let (_, first) = logs(&format!("llm-runs?run_id={quiet}&limit=1"));
    let cursor = first["next_after"].as_u64().expect("a cursor while more match");
    let (_, second) = logs(&format!("llm-runs?run_id={quiet}&limit=1&after={cursor}"));
    assert_eq!(second["entries"].as_array().unwrap().len(), 1);
    assert!(second["next_after"].is_null(), "{second}");
    assert_ne!(first["entries"][0]["seq"], second["entries"][0]["seq"]);
    // Run A was stopped before its second call: one call on record.
    let (_, stopped_run) = logs(&format!("llm-runs?run_id={run}"));
    assert_eq!(stopped_run["entries"].as_array().unwrap().len(), 1, "{stopped_run}");
    // By policy: a call that reported more than the run's budget is stopped
    // at its usage report; only its record names the policy.
    let over = agent.start_run();
    let (_, admitted) =
        agent.post(&format!("/api/v1/runs/{over}/steps"), serde_json::json!({"estimated_tokens": 10}));
    let step = admitted["step_id"].as_str().unwrap().to_owned();
    let (status, stopped) = agent.post(
        &format!("/api/v1/runs/{over}/steps/{step}/usage"),
        serde_json::json!({"input_tokens": 900, "output_tokens": 900}),
    );
    assert_eq!((status, stopped["decision"]["outcome"].as_str()), (200, Some("STOP")), "{stopped}");
    let by_policy = wait_for("the stopped call's LLM run record", Duration::from_secs(30), || {
        let (_, page) = logs("llm-runs?policy_id=pol-run-tokens");
        let entries = page["entries"].as_array()?.clone();
        (!entries.is_empty()).then_some(entries)
    });
    assert_eq!(by_policy.len(), 1, "{by_policy:?}");
    assert_eq!(by_policy[0]["run_id"], over.as_str());
    assert_eq!(by_policy[0]["body"]["outcome"], "STOP");
    assert_eq!(by_policy[0]["body"]["policy_id"], "pol-run-tokens");
    let (_, audit) = logs("audit?policy_id=pol-run-tokens");
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"POLICY_CREATED"), "{actions:?}");
    let (_, system) = logs("system");
    assert!(!system["entries"].as_array().unwrap().is_empty(), "the agent's system records: {system}");
    // Bad queries.
    assert_eq!(logs("bogus").0, 404);
    assert_eq!(logs("llm-runs?from_ms=5&to_ms=5").0, 400);
    assert_eq!(logs("llm-runs?limit=0").0, 400);

    // Retention: 1 s. The leader prunes; the ledger stays whole.
    let retention = format!("http://{}/api/v1/tenants/acme/retention", node.http);
    let (status, bad) =
        call_with_key("PUT", &retention, Some(&op), Some(serde_json::json!({"max_age_seconds": 0})));
    assert_eq!(status, 400, "{bad}");
    let (status, set) =
        call_with_key("PUT", &retention, Some(&op), Some(serde_json::json!({"max_age_seconds": 1})));
    assert_eq!(status, 200, "{set}");
    let pruned = wait_for("the runs' records pruned", Duration::from_secs(30), || {
        let (_, view) = call_with_key("GET", &retention, Some(&op), None);
        let (_, page) = logs("llm-runs");
        (page["entries"].as_array()?.is_empty() && view["pruned"].as_u64()? >= 4).then_some(view)
    });
    assert_eq!(pruned["max_age_seconds"], 1, "{pruned}");
    let verified = ctl.ok(&op, &["audit", "verify"]);
    assert!(verified.starts_with("chain ok"), "{verified}");
    let (_, audit) = logs("audit?limit=1000");
    let applied: Vec<&Value> =
        audit["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "RETENTION_APPLIED").collect();
    assert!(!applied.is_empty(), "retention is in the ledger");
    assert!(applied[0]["after"]["pruned_sha256"].as_str().is_some_and(|h| h.len() == 64), "{}", applied[0]);
    // An incident outlives its records: the incident engine keeps it.
    assert!(!incidents(&ctl, &op).is_empty());
}
