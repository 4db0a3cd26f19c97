//! `aosctl policy …`: offline policy-as-code tooling (`validate`,
//! `schema`) and the cluster's policies (`apply`, `list`, `get`, and the
//! lifecycle moves `activate`, `suspend`, `retire`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use aos_core::document::{DocumentFormat, parse_document};
use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::{Body, Method, segment};
use crate::output::{Table, cell, short_hash, text, timestamp, write_json};
use crate::{CliError, Output, Remote};

/// Exit code when an input cannot be read (sysexits `EX_NOINPUT`).
const EX_NOINPUT: u8 = 66;

/// Policy subcommands.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Parse and validate policy documents (YAML or JSON); every error is
    /// printed with its file, field path and line.
    Validate {
        /// Documents to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the JSON Schema of policy documents.
    Schema,
    /// Apply a policy document (YAML or JSON) to a tenant: new policies
    /// are created, changed ones get a new version.
    Apply {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The document.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Show what would change, per policy, without changing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// List a tenant's policies.
    List {
        /// The tenant.
        #[arg(long)]
        tenant: String,
    },
    /// Show a policy (latest version and history) or one version of it.
    Get {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Policy id.
        id: String,
        /// A specific version.
        #[arg(long)]
        version: Option<u64>,
    },
    /// Move a policy to ACTIVE.
    Activate {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Policy id.
        id: String,
        /// Why (recorded in the audit ledger).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Move a policy to SUSPENDED (a reason is required).
    Suspend {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Policy id.
        id: String,
        /// Why (recorded in the audit ledger).
        #[arg(long)]
        reason: String,
    },
    /// Move a policy to RETIRED, which is final (a reason is required).
    Retire {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Policy id.
        id: String,
        /// Why (recorded in the audit ledger).
        #[arg(long)]
        reason: String,
    },
}

/// Runs a policy subcommand.
pub fn run(cmd: PolicyCommand, remote: &Remote) -> ExitCode {
    let result = match cmd {
        PolicyCommand::Validate { files } => return validate(&files, remote.output),
        PolicyCommand::Schema => {
            print!("{}", aos_core::schema::policy_document_schema_pretty());
            return ExitCode::SUCCESS;
        }
        PolicyCommand::Apply { tenant, file, dry_run } => apply(remote, &tenant, &file, dry_run),
        PolicyCommand::List { tenant } => list(remote, &tenant),
        PolicyCommand::Get { tenant, id, version } => get(remote, &tenant, &id, version),
        PolicyCommand::Activate { tenant, id, reason } => {
            transition(remote, &tenant, &id, "activate", reason)
        }
        PolicyCommand::Suspend { tenant, id, reason } => {
            transition(remote, &tenant, &id, "suspend", Some(reason))
        }
        PolicyCommand::Retire { tenant, id, reason } => {
            transition(remote, &tenant, &id, "retire", Some(reason))
        }
    };
    crate::finish(result)
}

fn policies_path(tenant: &str) -> String {
    format!("/api/v1/tenants/{}/policies", segment(tenant))
}

fn apply(remote: &Remote, tenant: &str, file: &std::path::Path, dry_run: bool) -> Result<(), CliError> {
    let bytes = std::fs::read(file).map_err(|source| CliError::Input { path: file.to_owned(), source })?;
    let content_type = if file.extension().is_some_and(|e| e == "json") {
        "application/json"
    } else if file.extension().is_some_and(|e| e == "yaml" || e == "yml") {
        "application/yaml"
    } else {
        match std::str::from_utf8(&bytes).map(DocumentFormat::detect) {
            Ok(DocumentFormat::Json) => "application/json",
            _ => "application/yaml",
        }
    };
    let client = remote.client()?;
    let query = if dry_run { vec![("dry_run", "true".to_owned())] } else { Vec::new() };
    let what = format!(
        "applying `{}` to tenant `{tenant}`{}",
        file.display(),
        if dry_run { " (dry run)" } else { "" }
    );
    let answer = client
        .request(Method::Post, &policies_path(tenant), &query, &Body::Raw { content_type, bytes: &bytes })
        .map_err(CliError::request(what))?;
    let mut out = std::io::stdout().lock();
    match remote.output {
        Output::Json => write_json(&mut out, &answer)?,
        Output::Table if dry_run => write_plan(&mut out, &answer)?,
        Output::Table => write_applied(&mut out, &answer)?,
    }
    Ok(())
}

fn write_plan(out: &mut impl Write, answer: &Value) -> std::io::Result<()> {
    writeln!(out, "dry run: nothing was changed")?;
    for plan in answer.get("policies").and_then(Value::as_array).into_iter().flatten() {
        let id = text(plan, "policy_id");
        match text(plan, "action") {
            "create" => writeln!(
                out,
                "  create     {id}  version {}  {}",
                cell(plan, "version"),
                cell(plan, "status")
            )?,
            "unchanged" => writeln!(out, "  unchanged  {id}  version {}", cell(plan, "version"))?,
            "update" => {
                writeln!(
                    out,
                    "  update     {id}  version {} -> {}  {}",
                    cell(plan, "current_version"),
                    cell(plan, "version"),
                    cell(plan, "status")
                )?;
                for change in plan.get("changes").and_then(Value::as_array).into_iter().flatten() {
                    let side = |k: &str| change.get(k).map_or_else(|| "null".to_owned(), ToString::to_string);
                    writeln!(out, "      {}: {} -> {}", text(change, "path"), side("before"), side("after"))?;
                }
            }
            other => writeln!(out, "  {other:<10} {id}  {}", text(plan, "message"))?,
        }
    }
    Ok(())
}

fn write_applied(out: &mut impl Write, answer: &Value) -> std::io::Result<()> {
    for applied in answer.get("applied").and_then(Value::as_array).into_iter().flatten() {
        let Some(r) = applied.get("result") else { continue };
        let flag = |k: &str| r.get(k).and_then(Value::as_bool) == Some(true);
        let verb = if flag("created") {
            "created"
        } else if flag("changed") {
            "updated"
        } else {
            "unchanged"
        };
        let note = if flag("limit_adjusted") { "  (thresholds changed)" } else { "" };
        writeln!(
            out,
            "{verb:<10} {}  version {}  {}{note}",
            text(r, "policy_id"),
            cell(r, "version"),
            cell(r, "status")
        )?;
    }
    Ok(())
}

fn list(remote: &Remote, tenant: &str) -> Result<(), CliError> {
    let client = remote.client()?;
    let answer = client
        .get(&policies_path(tenant), &[])
        .map_err(CliError::request(format!("listing policies of tenant `{tenant}`")))?;
    let mut out = std::io::stdout().lock();
    match remote.output {
        Output::Json => write_json(&mut out, &answer)?,
        Output::Table => {
            let mut table = Table::new(&["POLICY", "STATUS", "VERSION", "THRESHOLD HASH", "NAME"]);
            for p in answer.get("policies").and_then(Value::as_array).into_iter().flatten() {
                table.row(vec![
                    cell(p, "policy_id"),
                    cell(p, "status"),
                    cell(p, "latest_version"),
                    short_hash(text(p, "threshold_hash")).to_owned(),
                    cell(p, "name"),
                ]);
            }
            if table.is_empty() {
                writeln!(out, "no policies in tenant `{tenant}`")?;
            } else {
                table.write(&mut out)?;
            }
        }
    }
    Ok(())
}

fn get(remote: &Remote, tenant: &str, id: &str, version: Option<u64>) -> Result<(), CliError> {
    let client = remote.client()?;
    let mut path = format!("{}/{}", policies_path(tenant), segment(id));
    if let Some(v) = version {
        path.push_str(&format!("/versions/{v}"));
    }
    let what = match version {
        Some(v) => format!("reading version {v} of policy `{id}` in tenant `{tenant}`"),
        None => format!("reading policy `{id}` in tenant `{tenant}`"),
    };
    let answer = client.get(&path, &[]).map_err(CliError::request(what))?;
    let mut out = std::io::stdout().lock();
    if remote.output == Output::Json {
        write_json(&mut out, &answer)?;
        return Ok(());
    }
    let shown_version = answer.get("version").or_else(|| answer.get("latest_version"));
    writeln!(
        out,
        "policy {}  version {}  {}  threshold hash {}",
        text(&answer, "policy_id"),
        shown_version.map_or_else(|| "-".to_owned(), ToString::to_string),
        cell(&answer, "status"),
        text(&answer, "threshold_hash")
    )?;
    if let Some(reason) = answer.get("status_reason").and_then(Value::as_str) {
        writeln!(out, "status reason: {reason}")?;
    }
    if let Some(versions) = answer.get("versions").and_then(Value::as_array) {
        let mut table =
            Table::new(&["VERSION", "STATUS", "CREATED", "CREATED BY", "AUDIT SEQ", "THRESHOLD HASH"]);
        for v in versions {
            table.row(vec![
                cell(v, "version"),
                cell(v, "status"),
                v.get("created_at_ms").and_then(Value::as_u64).map_or_else(String::new, timestamp),
                cell(v, "created_by"),
                cell(v, "audit_seq"),
                short_hash(text(v, "threshold_hash")).to_owned(),
            ]);
        }
        table.write(&mut out)?;
    }
    if let Some(policy) = answer.get("policy") {
        writeln!(out, "---")?;
        write_json(&mut out, policy)?;
    }
    Ok(())
}

fn transition(
    remote: &Remote,
    tenant: &str,
    id: &str,
    action: &str,
    reason: Option<String>,
) -> Result<(), CliError> {
    if reason.as_deref().is_some_and(|r| r.trim().is_empty()) {
        return Err(CliError::Usage("--reason must not be empty".to_owned()));
    }
    let client = remote.client()?;
    let path = format!("{}/{}/{action}", policies_path(tenant), segment(id));
    let body = match reason {
        Some(reason) => json!({ "reason": reason }),
        None => json!({}),
    };
    let answer = client
        .post(&path, &body)
        .map_err(CliError::request(format!("{action}: policy `{id}` in tenant `{tenant}`")))?;
    let mut out = std::io::stdout().lock();
    match remote.output {
        Output::Json => write_json(&mut out, &answer)?,
        Output::Table => {
            let result = answer.get("result").unwrap_or(&Value::Null);
            writeln!(
                out,
                "policy `{id}`: {} -> {}  (version {}, audit seq {}, snapshot version {})",
                cell(result, "from"),
                cell(result, "to"),
                cell(result, "version"),
                cell(&answer, "audit_seq"),
                cell(&answer, "tenant_snapshot_version")
            )?;
        }
    }
    Ok(())
}

fn validate(files: &[PathBuf], output: Output) -> ExitCode {
    let mut worst = 0u8;
    let mut reports = Vec::new();
    for file in files {
        let name = file.display().to_string();
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) => {
                worst = worst.max(EX_NOINPUT);
                reports.push(json!({"file": name, "ok": false, "errors": [{"path": "", "message": format!("cannot read: {e}")}]}));
                continue;
            }
        };
        let format = if file.extension().is_some_and(|e| e == "json") {
            DocumentFormat::Json
        } else {
            DocumentFormat::detect(&text)
        };
        match parse_document(&text, format) {
            Ok(doc) => {
                let policies: Vec<_> = doc
                    .policies
                    .iter()
                    .map(|p| json!({"id": p.id, "status": p.status.as_str(), "threshold_hash": p.threshold_hash_hex()}))
                    .collect();
                reports.push(json!({"file": name, "ok": true, "policies": policies}));
            }
            Err(e) => {
                worst = worst.max(1);
                reports.push(json!({"file": name, "ok": false, "errors": e.field_errors()}));
            }
        }
    }
    let mut out = std::io::stdout().lock();
    let written = match output {
        Output::Json => writeln!(out, "{}", serde_json::Value::Array(reports)),
        Output::Table => print_table(&mut out, &reports),
    };
    if written.is_err() {
        return ExitCode::from(74);
    }
    ExitCode::from(worst)
}

fn print_table(out: &mut impl Write, reports: &[serde_json::Value]) -> std::io::Result<()> {
    for report in reports {
        let file = report["file"].as_str().unwrap_or_default();
        if report["ok"].as_bool() == Some(true) {
            let count = report["policies"].as_array().map_or(0, Vec::len);
            writeln!(out, "ok    {file} ({count} policies)")?;
            for p in report["policies"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "      {:<32} {:<10} {}",
                    p["id"].as_str().unwrap_or_default(),
                    p["status"].as_str().unwrap_or_default(),
                    p["threshold_hash"].as_str().unwrap_or_default().get(..12).unwrap_or_default()
                )?;
            }
        } else {
            writeln!(out, "FAIL  {file}")?;
            for e in report["errors"].as_array().into_iter().flatten() {
                let path = e["path"].as_str().unwrap_or_default();
                let message = e["message"].as_str().unwrap_or_default();
                let location = e["location"]
                    .as_array()
                    .map(|l| format!(" (line {}, column {})", l[0], l[1]))
                    .unwrap_or_default();
                if path.is_empty() {
                    writeln!(out, "      {message}{location}")?;
                } else {
                    writeln!(out, "      {path}: {message}{location}")?;
                }
            }
        }
    }
    Ok(())
}
