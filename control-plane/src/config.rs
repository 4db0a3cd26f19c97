//! Node configuration: command-line flags, `AOS_*` environment variables and
//! an optional TOML file, merged in that order of precedence over built-in
//! defaults, plus the redacted rendering logged at start.
//!
//! Flags and environment variables are read by clap (a flag beats its
//! variable); this module only merges what clap found with the file. The
//! file may not hold secrets: the signing key comes from `AOS_SIGNING_KEY`
//! or a key file (mode 0600), and the effective configuration names its
//! source, never its value.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default: build a Raft snapshot every this many log entries.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 5_000;
/// Default Raft heartbeat (elections time out after 3–6 heartbeats).
pub const DEFAULT_HEARTBEAT_MS: u64 = 50;
/// Default interval of the leader's retention job.
pub const DEFAULT_RETENTION_INTERVAL_MS: u64 = 60_000;
/// Default validity of an issued policy snapshot.
pub const DEFAULT_MAX_STALENESS_SECS: u64 = 24 * 60 * 60;

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The config file is not valid TOML for this schema (message has line
    /// and column).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong and where.
        message: String,
    },
    /// A required setting is given nowhere.
    #[error("`{field}` is required: pass --{flag}, set {env} or put `{field}` in the config file")]
    Missing {
        /// The TOML key.
        field: &'static str,
        /// The flag without dashes.
        flag: &'static str,
        /// The environment variable.
        env: &'static str,
    },
    /// A setting is out of range.
    #[error("`{field}` = {value}: {why}")]
    Invalid {
        /// The TOML key.
        field: &'static str,
        /// The value given.
        value: String,
        /// The rule it breaks.
        why: &'static str,
    },
}

/// What a TOML config file may hold; every key is optional and unknown keys
/// are refused (a typo must not silently fall back to a default).
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Raft node id.
    pub node_id: Option<u64>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// gRPC listen address.
    pub grpc_addr: Option<SocketAddr>,
    /// Admin REST listen address.
    pub http_addr: Option<SocketAddr>,
    /// Address peers use for this node's gRPC.
    pub advertise_grpc: Option<String>,
    /// Fewest log entries between Raft snapshots (see `snapshot_trigger`).
    pub snapshot_every: Option<u64>,
    /// Signing key files (the first is the primary).
    pub signing_key_files: Option<Vec<PathBuf>>,
    /// Raft heartbeat in milliseconds.
    pub heartbeat_ms: Option<u64>,
    /// Validity of issued policy snapshots in seconds.
    pub max_staleness_secs: Option<u64>,
    /// Edge-agent gateway (mutual TLS) listen address.
    pub agent_addr: Option<SocketAddr>,
    /// Cluster CA key file (hex Ed25519 seed, mode 0600).
    pub ca_key_file: Option<PathBuf>,
    /// Master key file (hex, mode 0600) wrapping tenants' data keys.
    pub master_key_file: Option<PathBuf>,
    /// Extra host names or IPs for this node's gateway certificate.
    pub tls_names: Option<Vec<String>>,
    /// Let alert webhooks target loopback, private and link-local
    /// addresses (off: tenants could otherwise make the leader call
    /// internal services).
    pub alert_private_targets: Option<bool>,
    /// SMTP relay for EMAIL alert channels (`smtps://host[:port]`,
    /// `smtp://host[:port]` with STARTTLS required, or
    /// `smtp+plain://host[:port]`); credentials come from the environment.
    pub smtp_url: Option<String>,
    /// Sender address of alert emails, e.g. `AOS <alerts@example.com>`.
    pub smtp_from: Option<String>,
    /// How often the leader prunes records past their tenant's retention,
    /// in milliseconds.
    pub retention_interval_ms: Option<u64>,
}

impl ConfigFile {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text).map_err(|message| ConfigError::Parse { path: path.display().to_string(), message })
    }

    /// Parses TOML text; the error names the key and line.
    pub fn parse(text: &str) -> Result<ConfigFile, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }
}

/// What flags and environment supplied (`None` = not given): the same
/// settings as the file.
pub type Supplied = ConfigFile;

/// Where the snapshot signing key comes from; rendered without the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum SigningKeySource {
    /// `AOS_SIGNING_KEY` (the value is never logged).
    Env,
    /// Key files, the first being the primary.
    Files {
        /// The files.
        paths: Vec<PathBuf>,
    },
}

/// The configuration a node runs with, after merging.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StartConfig {
    /// The config file read, if any.
    pub config_file: Option<PathBuf>,
    /// Raft node id (≥ 1).
    pub node_id: u64,
    /// Data directory.
    pub data_dir: PathBuf,
    /// gRPC listen address.
    pub grpc_addr: SocketAddr,
    /// Admin REST listen address.
    pub http_addr: SocketAddr,
    /// Address peers use for this node's gRPC.
    pub advertise_grpc: String,
    /// Fewest log entries between Raft snapshots (see `snapshot_trigger`).
    pub snapshot_every: u64,
    /// Raft heartbeat in milliseconds.
    pub heartbeat_ms: u64,
    /// Validity of issued policy snapshots in seconds.
    pub max_staleness_secs: u64,
    /// Where the signing key is read from.
    pub signing_key: SigningKeySource,
    /// Edge-agent gateway address (`None`: agents are not served).
    pub agent_addr: Option<SocketAddr>,
    /// Where the cluster CA key is read from.
    pub ca_key: SigningKeySource,
    /// The CA key file given explicitly, if any.
    #[serde(skip)]
    pub explicit_ca_key_file: Option<PathBuf>,
    /// Extra names for the gateway certificate.
    pub tls_names: Vec<String>,
    /// Whether alert webhooks may target private addresses.
    pub alert_private_targets: bool,
    /// SMTP relay URL (no credentials in it), if email alerts are on.
    pub smtp_url: Option<String>,
    /// Sender of alert emails (required with `smtp_url`).
    pub smtp_from: Option<String>,
    /// Retention job interval in milliseconds.
    pub retention_interval_ms: u64,
    /// The master key file given explicitly, if any (default
    /// `<data-dir>/master.key`; `AOS_MASTER_KEY` wins).
    pub master_key_file: Option<PathBuf>,
    /// The key files given explicitly (flag, env or file); empty means the
    /// default `<data-dir>/signing.key`, which `--init` may create.
    #[serde(skip)]
    pub explicit_signing_key_files: Vec<PathBuf>,
}

impl StartConfig {
    /// Merges flags/env over the file over defaults. `signing_key_in_env`
    /// and `ca_key_in_env` say whether `AOS_SIGNING_KEY` and `AOS_CA_KEY`
    /// are set (each wins over any key file).
    pub fn resolve(
        supplied: Supplied,
        file: Option<(PathBuf, ConfigFile)>,
        signing_key_in_env: bool,
        ca_key_in_env: bool,
    ) -> Result<StartConfig, ConfigError> {
        let (config_file, file) = match file {
            Some((path, file)) => (Some(path), file),
            None => (None, ConfigFile::default()),
        };
        let node_id = supplied.node_id.or(file.node_id).ok_or(ConfigError::Missing {
            field: "node_id",
            flag: "node-id",
            env: "AOS_NODE_ID",
        })?;
        if node_id == 0 {
            return Err(ConfigError::Invalid {
                field: "node_id",
                value: "0".into(),
                why: "must be at least 1",
            });
        }
        let data_dir = supplied.data_dir.or(file.data_dir).ok_or(ConfigError::Missing {
            field: "data_dir",
            flag: "data-dir",
            env: "AOS_DATA_DIR",
        })?;
        let grpc_addr = supplied.grpc_addr.or(file.grpc_addr).ok_or(ConfigError::Missing {
            field: "grpc_addr",
            flag: "grpc-addr",
            env: "AOS_GRPC_ADDR",
        })?;
        let http_addr = supplied.http_addr.or(file.http_addr).ok_or(ConfigError::Missing {
            field: "http_addr",
            flag: "http-addr",
            env: "AOS_HTTP_ADDR",
        })?;
        let advertise_grpc =
            supplied.advertise_grpc.or(file.advertise_grpc).unwrap_or_else(|| grpc_addr.to_string());
        let snapshot_every =
            supplied.snapshot_every.or(file.snapshot_every).unwrap_or(DEFAULT_SNAPSHOT_EVERY);
        if snapshot_every == 0 {
            return Err(ConfigError::Invalid {
                field: "snapshot_every",
                value: "0".into(),
                why: "must be at least 1",
            });
        }
        let heartbeat_ms = supplied.heartbeat_ms.or(file.heartbeat_ms).unwrap_or(DEFAULT_HEARTBEAT_MS);
        if !(10..=10_000).contains(&heartbeat_ms) {
            return Err(ConfigError::Invalid {
                field: "heartbeat_ms",
                value: heartbeat_ms.to_string(),
                why: "must be between 10 and 10000",
            });
        }
        let max_staleness_secs =
            supplied.max_staleness_secs.or(file.max_staleness_secs).unwrap_or(DEFAULT_MAX_STALENESS_SECS);
        if max_staleness_secs < 2 {
            return Err(ConfigError::Invalid {
                field: "max_staleness_secs",
                value: max_staleness_secs.to_string(),
                why: "must be at least 2 (snapshots are reissued at half their validity)",
            });
        }
        let explicit_signing_key_files =
            supplied.signing_key_files.or(file.signing_key_files).unwrap_or_default();
        let signing_key = if signing_key_in_env {
            SigningKeySource::Env
        } else if explicit_signing_key_files.is_empty() {
            SigningKeySource::Files { paths: vec![data_dir.join(crate::signing::SIGNING_KEY_FILE)] }
        } else {
            SigningKeySource::Files { paths: explicit_signing_key_files.clone() }
        };
        let explicit_ca_key_file = supplied.ca_key_file.or(file.ca_key_file);
        let ca_key = if ca_key_in_env {
            SigningKeySource::Env
        } else {
            SigningKeySource::Files {
                paths: vec![
                    explicit_ca_key_file.clone().unwrap_or_else(|| data_dir.join(crate::pki::CA_KEY_FILE)),
                ],
            }
        };
        let master_key_file = supplied.master_key_file.or(file.master_key_file);
        let agent_addr = supplied.agent_addr.or(file.agent_addr);
        let tls_names = supplied.tls_names.or(file.tls_names).unwrap_or_default();
        let alert_private_targets =
            supplied.alert_private_targets.or(file.alert_private_targets).unwrap_or(false);
        let smtp_url = supplied.smtp_url.or(file.smtp_url);
        let smtp_from = supplied.smtp_from.or(file.smtp_from);
        if smtp_url.is_some() && smtp_from.is_none() {
            return Err(ConfigError::Missing { field: "smtp_from", flag: "smtp-from", env: "AOS_SMTP_FROM" });
        }
        let retention_interval_ms = supplied
            .retention_interval_ms
            .or(file.retention_interval_ms)
            .unwrap_or(DEFAULT_RETENTION_INTERVAL_MS);
        if retention_interval_ms < 100 {
            return Err(ConfigError::Invalid {
                field: "retention_interval_ms",
                value: retention_interval_ms.to_string(),
                why: "must be at least 100",
            });
        }
        Ok(StartConfig {
            retention_interval_ms,
            smtp_url,
            smtp_from,
            master_key_file,
            alert_private_targets,
            agent_addr,
            ca_key,
            explicit_ca_key_file,
            tls_names,
            config_file,
            node_id,
            data_dir,
            grpc_addr,
            http_addr,
            advertise_grpc,
            snapshot_every,
            heartbeat_ms,
            max_staleness_secs,
            signing_key,
            explicit_signing_key_files,
        })
    }

    /// The heartbeat as a duration.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }

    /// The effective configuration as one line of JSON for the start-up log.
    /// It holds no secret by construction: the signing key appears only as
    /// its source.
    pub fn redacted_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn full_file() -> ConfigFile {
        ConfigFile::parse(
            r#"
            node_id = 2
            data_dir = "/var/lib/aos/node2"
            grpc_addr = "10.0.0.2:7071"
            http_addr = "10.0.0.2:7070"
            snapshot_every = 100
            heartbeat_ms = 80
            "#,
        )
        .unwrap()
    }

    #[test]
    fn flags_and_env_beat_the_file_which_beats_defaults() {
        let supplied = Supplied { http_addr: Some(addr("127.0.0.1:9000")), ..Supplied::default() };
        let config =
            StartConfig::resolve(supplied, Some(("aos.toml".into(), full_file())), false, false).unwrap();
        assert_eq!(config.node_id, 2, "from the file");
        assert_eq!(config.http_addr, addr("127.0.0.1:9000"), "the flag wins");
        assert_eq!(config.snapshot_every, 100);
        assert_eq!(config.heartbeat_ms, 80);
        assert_eq!(config.max_staleness_secs, DEFAULT_MAX_STALENESS_SECS, "default");
        assert_eq!(config.advertise_grpc, "10.0.0.2:7071", "defaults to the gRPC address");
        assert_eq!(
            config.signing_key,
            SigningKeySource::Files { paths: vec![PathBuf::from("/var/lib/aos/node2/signing.key")] }
        );
    }

    #[test]
    fn a_missing_required_setting_names_all_three_ways_to_give_it() {
        let err =
            StartConfig::resolve(Supplied { node_id: Some(1), ..Supplied::default() }, None, false, false)
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("--data-dir") && err.contains("AOS_DATA_DIR") && err.contains("data_dir"),
            "{err}"
        );
    }

    #[test]
    fn out_of_range_values_are_refused_with_the_rule() {
        let file = ConfigFile { heartbeat_ms: Some(5), ..full_file() };
        let err =
            StartConfig::resolve(Supplied::default(), Some(("f".into(), file)), false, false).unwrap_err();
        assert!(
            err.to_string().contains("heartbeat_ms") && err.to_string().contains("10 and 10000"),
            "{err}"
        );
        let file = ConfigFile { node_id: Some(0), ..full_file() };
        assert!(StartConfig::resolve(Supplied::default(), Some(("f".into(), file)), false, false).is_err());
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key_and_line() {
        let err = ConfigFile::parse("node_id = 1\nheartbeat = 50\n").unwrap_err();
        assert!(err.contains("heartbeat") && err.contains("line 2"), "{err}");
        let err = ConfigFile::parse("node_id = 1\n\ngrpc_addr = \"not an address\"\n").unwrap_err();
        assert!(err.contains("grpc_addr") && err.contains("line 3"), "{err}");
    }

    #[test]
    fn an_smtp_relay_needs_a_sender() {
        let file = ConfigFile { smtp_url: Some("smtps://mail.example.com".into()), ..full_file() };
        let err = StartConfig::resolve(Supplied::default(), Some(("f".into(), file.clone())), false, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--smtp-from") && err.contains("AOS_SMTP_FROM"), "{err}");
        let file = ConfigFile { smtp_from: Some("aos@example.com".into()), ..file };
        let config =
            StartConfig::resolve(Supplied::default(), Some(("f".into(), file)), false, false).unwrap();
        assert_eq!(config.smtp_url.as_deref(), Some("smtps://mail.example.com"));
        assert_eq!(config.retention_interval_ms, DEFAULT_RETENTION_INTERVAL_MS);
    }

    #[test]
    fn the_retention_interval_comes_from_the_file_and_is_checked() {
        let parsed = ConfigFile::parse("retention_interval_ms = 500\n").unwrap();
        let file = ConfigFile { retention_interval_ms: parsed.retention_interval_ms, ..full_file() };
        let config =
            StartConfig::resolve(Supplied::default(), Some(("f".into(), file.clone())), false, false)
                .unwrap();
        assert_eq!(config.retention_interval_ms, 500);
        let file = ConfigFile { retention_interval_ms: Some(5), ..file };
        let err =
            StartConfig::resolve(Supplied::default(), Some(("f".into(), file)), false, false).unwrap_err();
        assert!(err.to_string().contains("retention_interval_ms"), "{err}");
    }

    #[test]
    fn the_file_cannot_carry_the_signing_key() {
        let err = ConfigFile::parse("signing_key = \"5a5a\"\n").unwrap_err();
        assert!(err.contains("signing_key"), "{err}");
    }

    #[test]
    fn the_effective_config_names_the_key_source_never_a_key() {
        let config =
            StartConfig::resolve(Supplied::default(), Some(("f".into(), full_file())), true, false).unwrap();
        let json = config.redacted_json();
        assert!(json.contains(r#""signing_key":{"source":"env"}"#), "{json}");
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["node_id"], 2);
    }
}
