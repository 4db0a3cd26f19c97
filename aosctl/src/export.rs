//! `aosctl export …`: take evidence out of the cluster and check it offline
//! (issue 8, GAP-025..027).
//!
//! - `evidence --tenant T (--run R | --incident I | --from MS --to MS) --out FILE`:
//!   downloads a signed evidence bundle (a tar; see `aos_core::export`).
//! - `report --tenant T (--run R | --incident I) --out FILE`: the PDF report.
//! - `debrief --tenant T --from MS --to MS --out FILE`: the executive debrief.
//! - `soc2 --tenant T --from MS --to MS --out FILE`: the SOC2 bundle.
//! - `keys --out FILE`: saves the cluster's snapshot keys (public halves),
//!   the trust anchor `verify` needs.
//! - `verify BUNDLE (--keys FILE | --public-key HEX…)`: checks the bundle
//!   offline — every file against the manifest, the manifest's signature
//!   against keys the caller trusts — and names the first problem; exit 1
//!   when it fails.
//!
//! Downloads show a progress bar on stderr when it is a terminal, and
//! nothing otherwise.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use aos_core::export::{BundleError, Subject, open};
use aos_core::snapshot::TrustedKeys;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::client::segment;
use crate::output::{timestamp, write_json};
use crate::{CliError, Output, Remote};

/// Export subcommands.
#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// Download a signed evidence bundle for a run, an incident or a period.
    Evidence {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// A run.
        #[arg(long, conflicts_with_all = ["incident", "from", "to"])]
        run: Option<String>,
        /// An incident.
        #[arg(long, conflicts_with_all = ["run", "from", "to"])]
        incident: Option<String>,
        /// Start of a period, Unix ms.
        #[arg(long, requires = "to")]
        from: Option<u64>,
        /// End of a period (exclusive), Unix ms.
        #[arg(long, requires = "from")]
        to: Option<u64>,
        /// Where to write the bundle.
        #[arg(long, short = 'f')]
        out: PathBuf,
    },
    /// Download the PDF report of a run or an incident: every incident field, the decision
    /// trail, the policies in force.
    Report {
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// A run.
        #[arg(long, conflicts_with = "incident", required_unless_present = "incident")]
        run: Option<String>,
        /// An incident.
        #[arg(long)]
        incident: Option<String>,
        /// Where to write the PDF.
        #[arg(long, short = 'f')]
        out: PathBuf,
    },
    /// Download the one-page executive debrief of a period (PDF).
    Debrief(Period),
    /// Download the SOC2 bundle of a period: the evidence mapped to trust-services criteria,
    /// signed like an evidence bundle.
    Soc2(Period),
    /// Save the cluster's snapshot keys (public), to verify bundles offline.
    Keys {
        /// Where to write them (JSON).
        #[arg(long, short = 'f')]
        out: PathBuf,
    },
    /// Check a bundle offline against trusted keys; exit 1 when it fails.
    Verify {
        /// The bundle (a tar file).
        bundle: PathBuf,
        /// Trusted keys: the JSON `export keys` saved (or `GET /api/v1/snapshot-keys`).
        #[arg(long, required_unless_present = "public_key")]
        keys: Option<PathBuf>,
        /// A trusted ed25519 public key, hex (repeatable).
        #[arg(long)]
        public_key: Vec<String>,
    },
}

/// A period export's arguments.
#[derive(Debug, clap::Args)]
pub struct Period {
    /// The tenant.
    #[arg(long)]
    tenant: String,
    /// Start, Unix ms.
    #[arg(long)]
    from: u64,
    /// End (exclusive), Unix ms.
    #[arg(long)]
    to: u64,
    /// Where to write the file.
    #[arg(long, short = 'f')]
    out: PathBuf,
}

/// Runs an export subcommand.
pub fn run(cmd: ExportCommand, remote: &Remote) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match cmd {
        ExportCommand::Evidence { tenant, run, incident, from, to, out: file } => {
            let (query, what) = match (run, incident, from, to) {
                (Some(run), None, None, None) => (vec![("run_id", run.clone())], format!("run `{run}`")),
                (None, Some(id), None, None) => {
                    (vec![("incident_id", id.clone())], format!("incident `{id}`"))
                }
                (None, None, Some(from), Some(to)) => (
                    vec![("from_ms", from.to_string()), ("to_ms", to.to_string())],
                    format!("the period {from}..{to}"),
                ),
                _ => {
                    return Err(CliError::Usage("give one of --run, --incident, or --from with --to".into()));
                }
            };
            fetch(remote, &mut out, &tenant, "evidence", &query, &format!("evidence bundle of {what}"), &file)
        }
        ExportCommand::Report { tenant, run, incident, out: file } => {
            let (query, what) = match (run, incident) {
                (Some(run), None) => (vec![("run_id", run.clone())], format!("run `{run}`")),
                (None, Some(id)) => (vec![("incident_id", id.clone())], format!("incident `{id}`")),
                _ => return Err(CliError::Usage("give one of --run or --incident".into())),
            };
            fetch(remote, &mut out, &tenant, "report.pdf", &query, &format!("PDF report of {what}"), &file)
        }
        ExportCommand::Debrief(p) => {
            let query = [("from_ms", p.from.to_string()), ("to_ms", p.to.to_string())];
            fetch(remote, &mut out, &p.tenant, "debrief.pdf", &query, "executive debrief", &p.out)
        }
        ExportCommand::Soc2(p) => {
            let query = [("from_ms", p.from.to_string()), ("to_ms", p.to.to_string())];
            fetch(remote, &mut out, &p.tenant, "soc2", &query, "SOC2 bundle", &p.out)
        }
        ExportCommand::Keys { out: file } => {
            let client = remote.client()?;
            let keys = client
                .get("/api/v1/snapshot-keys", &[])
                .map_err(CliError::request("reading the snapshot keys"))?;
            let text = serde_json::to_vec_pretty(&keys).map_err(|e| CliError::Failed(e.to_string()))?;
            write_file(&file, &text)?;
            let count = keys["keys"].as_array().map_or(0, Vec::len);
            writeln!(out, "{count} snapshot key(s) written to {}", file.display())?;
            Ok(())
        }
        ExportCommand::Verify { bundle, keys, public_key } => {
            let trusted = trust(keys.as_deref(), &public_key)?;
            let size = std::fs::metadata(&bundle)
                .map_err(|source| CliError::Input { path: bundle.clone(), source })?
                .len();
            if size > aos_core::export::MAX_BUNDLE_BYTES as u64 {
                return Err(CliError::Failed(format!(
                    "{} is {size} bytes: larger than any bundle ({} bytes at most)",
                    bundle.display(),
                    aos_core::export::MAX_BUNDLE_BYTES
                )));
            }
            let archive =
                std::fs::read(&bundle).map_err(|source| CliError::Input { path: bundle.clone(), source })?;
            match open(&archive, &trusted) {
                Ok(verified) => {
                    let m = &verified.manifest;
                    match remote.output {
                        Output::Json => write_json(
                            &mut out,
                            &json!({
                                "valid": true,
                                "manifest_sha256": verified.manifest_sha256,
                                "manifest": m,
                            }),
                        )?,
                        Output::Table => {
                            writeln!(out, "bundle OK: {}", bundle.display())?;
                            writeln!(out, "  tenant       {}", m.tenant_id)?;
                            writeln!(out, "  subject      {}", describe(&m.subject))?;
                            writeln!(
                                out,
                                "  generated    {} by {}",
                                timestamp(m.generated_at_ms),
                                m.generated_by
                            )?;
                            writeln!(out, "  signed by    {}", m.key_id)?;
                            writeln!(out, "  ledger head  #{} {}", m.ledger_head.seq, m.ledger_head.hash)?;
                            writeln!(out, "  manifest     sha256 {}", verified.manifest_sha256)?;
                            for file in &m.files {
                                writeln!(
                                    out,
                                    "  {:<16} {:>10} bytes  sha256 {}",
                                    file.path, file.bytes, file.sha256
                                )?;
                            }
                        }
                    }
                    Ok(())
                }
                Err(e) => {
                    match remote.output {
                        Output::Json => write_json(
                            &mut out,
                            &json!({ "valid": false, "error": e.to_string(), "kind": kind(&e) }),
                        )?,
                        Output::Table => writeln!(out, "bundle INVALID: {}: {e}", bundle.display())?,
                    }
                    Err(CliError::Failed(format!("{} does not verify: {e}", bundle.display())))
                }
            }
        }
    }
}

/// Downloads `…/exports/{export}` to `file` and says so.
fn fetch(
    remote: &Remote,
    out: &mut impl Write,
    tenant: &str,
    export: &str,
    query: &[(&str, String)],
    what: &str,
    file: &Path,
) -> Result<(), CliError> {
    let client = remote.client()?;
    let path = format!("/api/v1/tenants/{}/exports/{export}", segment(tenant));
    let bytes = download(&client, &path, query, &format!("downloading the {what}"))?;
    write_file(file, &bytes)?;
    match remote.output {
        Output::Json => write_json(out, &json!({ "file": file, "bytes": bytes.len() }))?,
        Output::Table => writeln!(out, "{what} written to {} ({} bytes)", file.display(), bytes.len())?,
    }
    Ok(())
}

/// Downloads with a progress bar on a terminal.
pub(crate) fn download(
    client: &crate::client::Client,
    path: &str,
    query: &[(&str, String)],
    what: &str,
) -> Result<Vec<u8>, CliError> {
    let mut bar = Progress::new(what);
    let result = client.download(path, query, &mut |received, total| bar.update(received, total));
    bar.finish();
    result.map_err(CliError::request(what))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    std::fs::write(path, bytes).map_err(|source| CliError::Input { path: path.to_owned(), source })
}

/// The trusted keys: every key (trusted, active or retired: a bundle made
/// before a rotation still verifies) in a keys file, plus `--public-key`s.
fn trust(keys: Option<&Path>, hex_keys: &[String]) -> Result<TrustedKeys, CliError> {
    let mut trusted = TrustedKeys::new();
    if let Some(path) = keys {
        let text = std::fs::read_to_string(path)
            .map_err(|source| CliError::Input { path: path.to_owned(), source })?;
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            CliError::Usage(format!("{}: not the JSON `export keys` writes: {e}", path.display()))
        })?;
        let listed = value["keys"].as_array().ok_or_else(|| {
            CliError::Usage(format!("{}: expected {{\"keys\": [{{\"public_key\": …}}]}}", path.display()))
        })?;
        for key in listed {
            let hex = key["public_key"].as_str().unwrap_or_default();
            trusted
                .insert_hex(hex)
                .map_err(|e| CliError::Usage(format!("{}: key `{hex}`: {e}", path.display())))?;
        }
    }
    for hex in hex_keys {
        trusted.insert_hex(hex).map_err(|e| CliError::Usage(format!("--public-key `{hex}`: {e}")))?;
    }
    if trusted.ids().next().is_none() {
        return Err(CliError::Usage("no trusted key: the keys file lists none".into()));
    }
    Ok(trusted)
}

fn describe(subject: &Subject) -> String {
    match subject {
        Subject::Run { run_id } => format!("run {run_id}"),
        Subject::Incident { incident_id } => format!("incident {incident_id}"),
        Subject::Range { from_ms, to_ms } => format!("{} .. {}", timestamp(*from_ms), timestamp(*to_ms)),
    }
}

fn kind(e: &BundleError) -> &'static str {
    match e {
        BundleError::NotAnArchive(_) => "NOT_AN_ARCHIVE",
        BundleError::TooLarge(_) => "TOO_LARGE",
        BundleError::BadEntry { .. } => "BAD_ENTRY",
        BundleError::Duplicate(_) => "DUPLICATE",
        BundleError::BadManifest { .. } => "BAD_MANIFEST",
        BundleError::Missing(_) => "MISSING_FILE",
        BundleError::Unlisted(_) => "UNLISTED_FILE",
        BundleError::Altered { .. } => "ALTERED_FILE",
        BundleError::UntrustedKey(_) => "UNTRUSTED_KEY",
        BundleError::BadSignature => "BAD_SIGNATURE",
    }
}

/// A one-line progress bar on stderr, drawn only when stderr is a terminal.
struct Progress {
    what: String,
    tty: bool,
    drawn: bool,
}

impl Progress {
    fn new(what: &str) -> Progress {
        Progress { what: what.to_owned(), tty: std::io::stderr().is_terminal(), drawn: false }
    }

    fn update(&mut self, received: u64, total: Option<u64>) {
        if !self.tty {
            return;
        }
        let line = match total.filter(|t| *t > 0) {
            Some(total) => {
                let done = usize::try_from(received.min(total) * 30 / total).unwrap_or(30);
                format!(
                    "\r{} [{}{}] {}/{} KiB",
                    self.what,
                    "#".repeat(done),
                    " ".repeat(30 - done),
                    received / 1024,
                    total / 1024
                )
            }
            None => format!("\r{} {} KiB", self.what, received / 1024),
        };
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(line.as_bytes());
        let _ = err.flush();
        self.drawn = true;
    }

    fn finish(&mut self) {
        if self.drawn {
            let _ = writeln!(std::io::stderr());
        }
    }
}
