//! `aosctl source …` and `aosctl plane …`: a tenant's data sources and
//! knowledge planes (issue 6). Credentials are read from a file, an
//! environment variable or stdin — never from the command line, where the
//! process list and shell history would keep them — and are never printed.

use std::io::{Read, Write};
use std::path::PathBuf;

use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::{Body, Method, segment};
use crate::output::{Table, cell, text, write_json};
use crate::{CliError, Output, Remote};

/// Data-source subcommands.
#[derive(Debug, Subcommand)]
pub enum SourceCommand {
    /// List a tenant's sources with status and whether a credential is set.
    List {
        /// The tenant.
        #[arg(long)]
        tenant: String,
    },
    /// One source (JSON; never the credential).
    Show {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The source id.
        source_id: String,
    },
    /// Create or reconfigure a source from a YAML or JSON file (a changed
    /// source must be verified again before it serves).
    Apply {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The source document.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Set a source's credential (PostgreSQL password, HTTP Authorization
    /// header value). Exactly one of --from-file, --from-env, --stdin.
    Credential {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The source id.
        source_id: String,
        /// Read the secret from this file (trailing newline dropped).
        #[arg(long, conflicts_with_all = ["from_env", "stdin"])]
        from_file: Option<PathBuf>,
        /// Read the secret from this environment variable.
        #[arg(long, conflicts_with = "stdin")]
        from_env: Option<String>,
        /// Read the secret from stdin (trailing newline dropped).
        #[arg(long)]
        stdin: bool,
    },
    /// Probe the source with its credential (read-only); VERIFIED or ERROR.
    Verify {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The source id.
        source_id: String,
    },
    /// Enable a verified (or disabled) source.
    Enable {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The source id.
        source_id: String,
        /// Why (audited).
        #[arg(long)]
        reason: String,
    },
    /// Disable a source: access through it is refused at once.
    Disable {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// The source id.
        source_id: String,
        /// Why (audited).
        #[arg(long)]
        reason: String,
    },
}

/// Knowledge-plane subcommands.
#[derive(Debug, Subcommand)]
pub enum PlaneCommand {
    /// List a tenant's planes.
    List {
        /// The tenant.
        #[arg(long)]
        tenant: String,
    },
    /// Create or change a plane (inactive until activated).
    Apply {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Plane id.
        #[arg(long)]
        id: String,
        /// Display name.
        #[arg(long)]
        name: String,
        /// PUBLIC, INTERNAL, CONFIDENTIAL or RESTRICTED.
        #[arg(long)]
        sensitivity: String,
        /// ALLOW or DENY (default: ALLOW for PUBLIC, DENY otherwise).
        #[arg(long = "default")]
        default_policy: Option<String>,
        /// A bound source (repeat for several).
        #[arg(long = "source")]
        sources: Vec<String>,
    },
    /// Activate a plane as its owner (requires --confirm).
    Activate {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Plane id.
        plane_id: String,
        /// Why (audited).
        #[arg(long)]
        reason: String,
        /// Confirm that the plane's sources may be exposed to policies.
        #[arg(long)]
        confirm: bool,
    },
    /// Withdraw a plane's activation.
    Deactivate {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// Plane id.
        plane_id: String,
        /// Why (audited).
        #[arg(long)]
        reason: String,
    },
}

fn sources_path(tenant: &str) -> String {
    format!("/api/v1/tenants/{}/sources", segment(tenant))
}

fn source_line(out: &mut impl Write, answer: &Value) -> Result<(), CliError> {
    let r = &answer["result"];
    writeln!(
        out,
        "source `{}` is {}{}",
        text(&r["source"], "source_id"),
        text(r, "status"),
        r["last_probe"]["detail"].as_str().map_or_else(String::new, |d| format!(" ({d})"))
    )?;
    Ok(())
}

fn read_secret(
    from_file: Option<PathBuf>,
    from_env: Option<String>,
    stdin: bool,
) -> Result<String, CliError> {
    let raw = match (from_file, from_env, stdin) {
        (Some(path), None, false) => {
            std::fs::read_to_string(&path).map_err(|source| CliError::Input { path, source })?
        }
        (None, Some(var), false) => std::env::var(&var)
            .map_err(|_| CliError::Usage(format!("environment variable {var} is not set")))?,
        (None, None, true) => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| CliError::Input { path: PathBuf::from("<stdin>"), source })?;
            text
        }
        _ => {
            return Err(CliError::Usage(
                "give the secret with exactly one of --from-file, --from-env or --stdin (never on the command line)"
                    .to_owned(),
            ));
        }
    };
    let secret =
        raw.strip_suffix('\n').map_or(raw.as_str(), |s| s.strip_suffix('\r').unwrap_or(s)).to_owned();
    if secret.is_empty() {
        return Err(CliError::Usage("the secret is empty".to_owned()));
    }
    Ok(secret)
}

/// Runs a source subcommand.
pub fn run_source(cmd: SourceCommand, remote: &Remote) -> Result<(), CliError> {
    let client = remote.client()?;
    let mut out = std::io::stdout().lock();
    match cmd {
        SourceCommand::List { tenant } => {
            let answer = client
                .get(&sources_path(&tenant), &[])
                .map_err(CliError::request(format!("listing sources of tenant `{tenant}`")))?;
            match remote.output {
                Output::Json => write_json(&mut out, &answer)?,
                Output::Table => {
                    let mut table = Table::new(&["SOURCE", "TYPE", "STATUS", "CREDENTIAL", "LAST PROBE"]);
                    for s in answer.get("sources").and_then(Value::as_array).into_iter().flatten() {
                        table.row(vec![
                            cell(&s["source"], "source_id"),
                            cell(&s["source"], "asset_type"),
                            cell(s, "status"),
                            if s["has_credential"] == true { "set".to_owned() } else { "-".to_owned() },
                            s["last_probe"]["detail"].as_str().unwrap_or("-").to_owned(),
                        ]);
                    }
                    table.write(&mut out)?;
                }
            }
        }
        SourceCommand::Show { tenant, source_id } => {
            let answer = client
                .get(&format!("{}/{}", sources_path(&tenant), segment(&source_id)), &[])
                .map_err(CliError::request(format!("reading source `{source_id}`")))?;
            write_json(&mut out, &answer)?;
        }
        SourceCommand::Apply { tenant, file } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|source| CliError::Input { path: file.clone(), source })?;
            let document: Value = serde_yaml_ng::from_str(&text).map_err(|e| {
                CliError::Usage(format!("{}: not a YAML or JSON document: {e}", file.display()))
            })?;
            let answer = client
                .post(&sources_path(&tenant), &document)
                .map_err(CliError::request(format!("applying {}", file.display())))?;
            match remote.output {
                Output::Json => write_json(&mut out, &answer)?,
                Output::Table => source_line(&mut out, &answer)?,
            }
        }
        SourceCommand::Credential { tenant, source_id, from_file, from_env, stdin } => {
            let secret = read_secret(from_file, from_env, stdin)?;
            let path = format!("{}/{}/credential", sources_path(&tenant), segment(&source_id));
            let answer = client
                .request(Method::Put, &path, &[], &Body::Json(&json!({ "secret": secret })))
                .map_err(CliError::request(format!("setting the credential of `{source_id}`")))?;
            match remote.output {
                Output::Json => write_json(&mut out, &answer)?,
                Output::Table => writeln!(
                    out,
                    "credential of `{source_id}` set (sealed with data key {}); the source is {}: verify it",
                    text(&answer["result"], "credential_data_key_id"),
                    text(&answer["result"], "status")
                )?,
            }
        }
        SourceCommand::Verify { tenant, source_id } => {
            let path = format!("{}/{}/verify", sources_path(&tenant), segment(&source_id));
            let answer = client
                .request(Method::Post, &path, &[], &Body::Empty)
                .map_err(CliError::request(format!("verifying `{source_id}`")))?;
            match remote.output {
                Output::Json => write_json(&mut out, &answer)?,
                Output::Table => source_line(&mut out, &answer)?,
            }
            if answer["result"]["status"] == "ERROR" {
                return Err(CliError::Failed(format!("source `{source_id}` failed verification")));
            }
        }
        SourceCommand::Enable { tenant, source_id, reason } => {
            transition(
                remote,
                &mut out,
                &sources_path(&tenant),
                &source_id,
                "enable",
                json!({ "reason": reason }),
            )?;
        }
        SourceCommand::Disable { tenant, source_id, reason } => {
            transition(
                remote,
                &mut out,
                &sources_path(&tenant),
                &source_id,
                "disable",
                json!({ "reason": reason }),
            )?;
        }
    }
    Ok(())
}

/// `POST {base}/{id}/{action}` with `body`; prints the new state.
fn transition(
    remote: &Remote,
    out: &mut impl Write,
    base: &str,
    id: &str,
    action: &str,
    body: Value,
) -> Result<(), CliError> {
    let answer = remote
        .client()?
        .post(&format!("{base}/{}/{action}", segment(id)), &body)
        .map_err(CliError::request(format!("{action} `{id}`")))?;
    match remote.output {
        Output::Json => write_json(out, &answer)?,
        Output::Table => {
            let r = &answer["result"];
            let state = r["status"].as_str().map_or_else(
                || if r["active"] == true { "active".to_owned() } else { "inactive".to_owned() },
                str::to_owned,
            );
            writeln!(out, "`{id}` is {state}")?;
        }
    }
    Ok(())
}

fn planes_path(tenant: &str) -> String {
    format!("/api/v1/tenants/{}/planes", segment(tenant))
}

/// Runs a plane subcommand.
pub fn run_plane(cmd: PlaneCommand, remote: &Remote) -> Result<(), CliError> {
    let client = remote.client()?;
    let mut out = std::io::stdout().lock();
    match cmd {
        PlaneCommand::List { tenant } => {
            let answer = client
                .get(&planes_path(&tenant), &[])
                .map_err(CliError::request(format!("listing planes of tenant `{tenant}`")))?;
            match remote.output {
                Output::Json => write_json(&mut out, &answer)?,
                Output::Table => {
                    let mut table = Table::new(&["PLANE", "SENSITIVITY", "DEFAULT", "ACTIVE", "SOURCES"]);
                    for p in answer.get("planes").and_then(Value::as_array).into_iter().flatten() {
                        let sources: Vec<&str> = p["plane"]["bound_source_ids"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                            .collect();
                        table.row(vec![
                            cell(&p["plane"], "plane_id"),
                            cell(&p["plane"], "sensitivity"),
                            cell(&p["plane"], "default_policy"),
                            if p["active"] == true { "yes".to_owned() } else { "no".to_owned() },
                            sources.join(","),
                        ]);
                    }
                    table.write(&mut out)?;
                }
            }
        }
        PlaneCommand::Apply { tenant, id, name, sensitivity, default_policy, sources } => {
            let body = json!({
                "plane_id": id, "name": name, "sensitivity": sensitivity.to_uppercase(),
                "default_policy": default_policy.map(|d| d.to_uppercase()), "bound_source_ids": sources,
            });
            let answer = client
                .post(&planes_path(&tenant), &body)
                .map_err(CliError::request(format!("applying plane `{id}`")))?;
            match remote.output {
                Output::Json => write_json(&mut out, &answer)?,
                Output::Table => writeln!(
                    out,
                    "plane `{id}` ({}, default {}) is {}",
                    text(&answer["result"]["plane"], "sensitivity"),
                    text(&answer["result"]["plane"], "default_policy"),
                    if answer["result"]["active"] == true {
                        "active"
                    } else {
                        "inactive: activate it as its owner"
                    }
                )?,
            }
        }
        PlaneCommand::Activate { tenant, plane_id, reason, confirm } => {
            let body = json!({ "reason": reason, "confirm": confirm });
            transition(remote, &mut out, &planes_path(&tenant), &plane_id, "activate", body)?;
        }
        PlaneCommand::Deactivate { tenant, plane_id, reason } => {
            transition(
                remote,
                &mut out,
                &planes_path(&tenant),
                &plane_id,
                "deactivate",
                json!({ "reason": reason }),
            )?;
        }
    }
    Ok(())
}
