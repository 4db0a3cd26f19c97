//! `aosctl governance …`: the kill switch and degraded mode (issue 5;
//! GAP-069, GAP-070). `state` shows the global setting, the caller's tenant
//! (or `--tenant`) and, for operators, every tenant setting; `enable`,
//! `degrade`, `disable` and `halt` change it with a required reason,
//! optionally for one tenant and for a limited time (`--ttl 15m`).

use std::io::Write;

use clap::Subcommand;
use serde_json::{Value, json};

use crate::output::{Table, cell, text, timestamp, write_json};
use crate::{CliError, Output, Remote};

/// Governance subcommands.
#[derive(Debug, Subcommand)]
pub enum GovernanceCommand {
    /// Show the governance state.
    State {
        /// Also show this tenant's setting and effective mode.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Back to normal enforcement.
    Enable(Change),
    /// Refuse new runs; in-flight runs continue with outcomes downgraded to WARN.
    Degrade(Change),
    /// Bypass governance (decisions still computed and recorded as BYPASSED).
    Disable(Change),
    /// Emergency stop: kill in-flight runs, refuse new ones.
    Halt(Change),
}

/// A change of mode.
#[derive(Debug, clap::Args)]
pub struct Change {
    /// Why (required; goes to the audit ledger).
    #[arg(long)]
    reason: String,
    /// Only this tenant (default: the global setting).
    #[arg(long)]
    tenant: Option<String>,
    /// Return to ENFORCING after this long, e.g. `90s`, `15m`, `2h`.
    #[arg(long)]
    ttl: Option<String>,
    /// Return only when every connected edge agent concerned has applied
    /// the new version (or after `--wait-timeout`, failing).
    #[arg(long)]
    wait: bool,
    /// How long `--wait` waits, e.g. `30s`.
    #[arg(long, default_value = "30s")]
    wait_timeout: String,
}

/// Runs a governance subcommand.
pub fn run(cmd: GovernanceCommand, remote: &Remote) -> Result<(), CliError> {
    let client = remote.client()?;
    let mut out = std::io::stdout().lock();
    let (action, change) = match cmd {
        GovernanceCommand::State { tenant } => {
            let query: Vec<(&str, String)> = tenant.into_iter().map(|t| ("tenant", t)).collect();
            let answer = client
                .get("/api/v1/ops/governance/state", &query)
                .map_err(CliError::request("reading the governance state"))?;
            return match remote.output {
                Output::Json => Ok(write_json(&mut out, &answer)?),
                Output::Table => Ok(state_table(&mut out, &answer)?),
            };
        }
        GovernanceCommand::Enable(c) => ("enable", c),
        GovernanceCommand::Degrade(c) => ("degrade", c),
        GovernanceCommand::Disable(c) => ("disable", c),
        GovernanceCommand::Halt(c) => ("halt", c),
    };
    let ttl_seconds = change.ttl.as_deref().map(parse_duration_secs).transpose().map_err(CliError::Usage)?;
    let wait_timeout = parse_duration_secs(&change.wait_timeout).map_err(CliError::Usage)?;
    let body = json!({ "reason": change.reason, "tenant": change.tenant, "ttl_seconds": ttl_seconds });
    let scope = change.tenant.as_deref().map_or_else(|| "global".to_owned(), |t| format!("tenant `{t}`"));
    let answer = client
        .post(&format!("/api/v1/ops/governance/{action}"), &body)
        .map_err(CliError::request(format!("{action} ({scope})")))?;
    match remote.output {
        Output::Json => write_json(&mut out, &answer)?,
        Output::Table => writeln!(
            out,
            "governance {scope}: {action} committed, version {} (audit seq {})",
            cell(&answer["result"], "governance_version"),
            cell(&answer, "audit_seq")
        )?,
    }
    if change.wait {
        let version = answer["result"]["governance_version"].as_u64().unwrap_or(0);
        wait_for_agents(&client, &mut out, change.tenant.as_deref(), version, wait_timeout)?;
    }
    Ok(())
}

/// Polls the agent lists until every connected agent of the tenant (or of
/// every tenant) has acknowledged `version`, printing the convergence.
fn wait_for_agents(
    client: &crate::client::Client,
    out: &mut impl Write,
    tenant: Option<&str>,
    version: u64,
    timeout_secs: u64,
) -> Result<(), CliError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(timeout_secs);
    let mut last = String::new();
    loop {
        let tenants: Vec<String> = match tenant {
            Some(t) => vec![t.to_owned()],
            None => client
                .get("/api/v1/tenants", &[])
                .map_err(CliError::request("listing tenants"))?
                .get("tenants")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|t| t["tenant_id"].as_str().map(str::to_owned))
                .collect(),
        };
        let (mut on, mut laggards) = (0usize, Vec::new());
        for t in &tenants {
            let listed = client
                .get(&format!("/api/v1/tenants/{t}/agents"), &[])
                .map_err(CliError::request(format!("listing edge agents of tenant `{t}`")))?;
            for a in listed.get("agents").and_then(Value::as_array).into_iter().flatten() {
                if a.get("connected_node").is_none_or(Value::is_null) {
                    continue;
                }
                if a["acked_governance_version"].as_u64().is_some_and(|v| v >= version) {
                    on += 1;
                } else {
                    laggards.push(format!("{} ({})", text(a, "agent_id"), text(a, "name")));
                }
            }
        }
        let line = format!("{on}/{} connected agents on v{version}", on + laggards.len());
        if line != last {
            writeln!(out, "{line}")?;
            last = line;
        }
        if laggards.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            writeln!(out, "not yet applied by: {}", laggards.join(", "))?;
            return Err(CliError::Failed(format!(
                "{} agents had not applied governance version {version} after {timeout_secs} s",
                laggards.len()
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn state_table(out: &mut impl Write, answer: &Value) -> std::io::Result<()> {
    writeln!(out, "governance version {}", cell(answer, "version"))?;
    let mut table = Table::new(&["SCOPE", "MODE", "REASON", "SET BY", "EXPIRES"]);
    let row = |scope: String, s: &Value| {
        vec![
            scope,
            cell(s, "mode"),
            text(s, "reason").to_owned(),
            cell(s, "set_by"),
            s.get("expires_at_ms").and_then(Value::as_u64).map_or_else(|| "never".to_owned(), timestamp),
        ]
    };
    table.row(row("global".to_owned(), &answer["global"]));
    for (tenant, setting) in answer.get("tenants").and_then(Value::as_object).into_iter().flatten() {
        table.row(row(format!("tenant {tenant}"), setting));
    }
    table.write(out)?;
    if let Some(t) = answer.get("tenant") {
        writeln!(out, "tenant {}: effective mode {}", text(t, "tenant_id"), text(t, "effective"))?;
    }
    Ok(())
}

/// `90s`, `15m`, `2h`, `1d` or plain seconds.
pub(crate) fn parse_duration_secs(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 =
        digits.parse().map_err(|_| format!("--ttl {text:?}: expected a number with s, m, h or d"))?;
    let factor = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("--ttl {text:?}: unknown unit {unit:?} (use s, m, h or d)")),
    };
    match n.checked_mul(factor) {
        Some(0) | None => Err(format!("--ttl {text:?}: must be positive and reasonable")),
        Some(secs) => Ok(secs),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration_secs;

    #[test]
    fn ttls_read_like_people_write_them() {
        assert_eq!(parse_duration_secs("90s"), Ok(90));
        assert_eq!(parse_duration_secs("15m"), Ok(900));
        assert_eq!(parse_duration_secs("2h"), Ok(7_200));
        assert_eq!(parse_duration_secs("1d"), Ok(86_400));
        assert_eq!(parse_duration_secs("45"), Ok(45));
        for bad in ["", "m", "15x", "0m", "-5m", "99999999999999999999d"] {
            let err = parse_duration_secs(bad).unwrap_err();
            assert!(err.contains("--ttl"), "{bad}: {err}");
        }
    }
}
