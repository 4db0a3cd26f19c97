//! `aosctl policy …`: offline policy-as-code tooling.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use aos_core::document::{DocumentFormat, parse_document};
use clap::Subcommand;
use serde_json::json;

use crate::Output;

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
}

/// Runs a policy subcommand.
pub fn run(cmd: PolicyCommand, output: Output) -> ExitCode {
    match cmd {
        PolicyCommand::Validate { files } => validate(&files, output),
        PolicyCommand::Schema => {
            print!("{}", aos_core::schema::policy_document_schema_pretty());
            ExitCode::SUCCESS
        }
    }
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
