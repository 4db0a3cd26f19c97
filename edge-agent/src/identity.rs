//! The edge agent's identity with the control plane: joining with a join
//! token, and the key, certificate and CA it keeps afterwards.
//!
//! A join token reads `aosj_<secret>.<sha256 of the cluster CA cert>`. The
//! CA hash is a pin (as kubeadm's discovery hash): before the secret is
//! sent anywhere, the agent opens a TLS connection, finds the certificate
//! with that hash in the chain the gateway presents, and verifies the
//! gateway's certificate against it. Only then is `Join` called, over TLS
//! verified against that CA. The private key is generated here and never
//! leaves the agent: the control plane sees a CSR and returns a client
//! certificate bound to one tenant.
//!
//! The identity lives in `<data-dir>/identity.json` (mode 0600).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rcgen::{CertificateParams, DnType, KeyPair, PKCS_ED25519};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{DigitallySignedStruct, SignatureScheme};

/// The name every control-plane node's gateway certificate carries.
pub const SERVER_NAME: &str = "aos-control-plane.internal";
/// File holding the identity in the data directory.
pub const IDENTITY_FILE: &str = "identity.json";

/// Why joining or loading the identity failed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The join token is not `aosj_<secret>.<64 hex>`.
    #[error("join token: {0}")]
    BadToken(String),
    /// No node presented a certificate chain containing the pinned CA.
    #[error(
        "{endpoint}: the gateway's certificate does not chain to the CA pinned by the join token ({reason})"
    )]
    PinMismatch {
        /// The node tried.
        endpoint: String,
        /// Detail.
        reason: String,
    },
    /// The control plane refused the join.
    #[error("{endpoint} refused the join: {message}")]
    Refused {
        /// The node.
        endpoint: String,
        /// Its reason.
        message: String,
    },
    /// The node could not be reached.
    #[error("{endpoint}: {reason}")]
    Unreachable {
        /// The node.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// Key or CSR generation failed.
    #[error("key generation: {0}")]
    Key(String),
    /// The identity file cannot be read or written.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// A parsed join token.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    secret: String,
    ca_sha256: String,
}

impl std::fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinToken").field("ca_sha256", &self.ca_sha256).finish_non_exhaustive()
    }
}

impl JoinToken {
    /// Parses `aosj_<secret>.<ca sha256 hex>`; the error never echoes the
    /// secret.
    pub fn parse(text: &str) -> Result<JoinToken, IdentityError> {
        let text = text.trim();
        let Some((secret, pin)) = text.rsplit_once('.') else {
            return Err(IdentityError::BadToken(
                "expected `aosj_<secret>.<CA hash>` as printed by `aosctl agent token create`".to_owned(),
            ));
        };
        if !secret.starts_with("aosj_") || secret.len() < 16 {
            return Err(IdentityError::BadToken("the secret part must start with `aosj_`".to_owned()));
        }
        if pin.len() != 64 || !pin.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(IdentityError::BadToken("the CA hash must be 64 hex characters".to_owned()));
        }
        Ok(JoinToken { secret: secret.to_owned(), ca_sha256: pin.to_ascii_lowercase() })
    }

    /// The pinned CA certificate hash.
    pub fn ca_sha256(&self) -> &str {
        &self.ca_sha256
    }
}

/// What the agent keeps after joining.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentIdentity {
    /// This edge agent's id.
    pub edge_agent_id: String,
    /// The one tenant it serves.
    pub tenant_id: String,
    /// Private key, PKCS#8 PEM.
    pub key_pem: String,
    /// Client certificate, PEM.
    pub cert_pem: String,
    /// Cluster CA certificate, PEM.
    pub ca_pem: String,
    /// Snapshot keys trusted at join.
    pub trusted_snapshot_keys: Vec<String>,
}

impl std::fmt::Debug for AgentIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentIdentity")
            .field("edge_agent_id", &self.edge_agent_id)
            .field("tenant_id", &self.tenant_id)
            .finish_non_exhaustive()
    }
}

impl AgentIdentity {
    /// The identity file under `data_dir`.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(IDENTITY_FILE)
    }

    /// Loads the identity, if the agent has joined.
    pub fn load(data_dir: &Path) -> Result<Option<AgentIdentity>, IdentityError> {
        let path = Self::path(data_dir);
        let file_err = |reason: String| IdentityError::File { path: path.display().to_string(), reason };
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| file_err(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(file_err(e.to_string())),
        }
    }

    /// Writes the identity (mode 0600, synced).
    pub fn save(&self, data_dir: &Path) -> Result<(), IdentityError> {
        use std::io::Write;
        let path = Self::path(data_dir);
        let file_err = |reason: String| IdentityError::File { path: path.display().to_string(), reason };
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| file_err(e.to_string()))?;
        let tmp = path.with_extension("json.tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(|e| file_err(e.to_string()))?;
        file.write_all(&bytes).and_then(|()| file.sync_all()).map_err(|e| file_err(e.to_string()))?;
        std::fs::rename(&tmp, &path).map_err(|e| file_err(e.to_string()))
    }

    /// The TLS configuration for mutual TLS with any node.
    pub fn client_tls(&self) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(&self.ca_pem))
            .identity(tonic::transport::Identity::from_pem(&self.cert_pem, &self.key_pem))
            .domain_name(SERVER_NAME)
    }
}

/// A fresh key and a CSR for it (DER).
pub fn new_key_and_csr(agent_name: &str) -> Result<(KeyPair, Vec<u8>), IdentityError> {
    let key = KeyPair::generate_for(&PKCS_ED25519).map_err(|e| IdentityError::Key(e.to_string()))?;
    let mut params = CertificateParams::default();
    params.distinguished_name.remove(DnType::CommonName);
    params.distinguished_name.push(DnType::CommonName, agent_name);
    let csr = params.serialize_request(&key).map_err(|e| IdentityError::Key(e.to_string()))?;
    Ok((key, csr.der().to_vec()))
}

/// PEM of a DER certificate.
pub fn cert_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// Connects to `endpoint` (`host:port`) over TLS, finds the certificate
/// whose SHA-256 is `pin` in the chain the server presents, verifies the
/// server's certificate against it, and returns it (DER).
pub async fn fetch_pinned_ca(endpoint: &str, pin: &str) -> Result<Vec<u8>, IdentityError> {
    let unreachable = |reason: String| IdentityError::Unreachable { endpoint: endpoint.to_owned(), reason };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        Arc::new(PinnedCa { pin: pin.to_owned(), provider: Arc::clone(&provider), found: Mutex::default() });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| unreachable(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::clone(&verifier) as Arc<dyn ServerCertVerifier>)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp =
        tokio::time::timeout(std::time::Duration::from_secs(5), tokio::net::TcpStream::connect(endpoint))
            .await
            .map_err(|_| unreachable("connect timed out".to_owned()))?
            .map_err(|e| unreachable(e.to_string()))?;
    let name = ServerName::try_from(SERVER_NAME).map_err(|e| unreachable(e.to_string()))?;
    let handshake = connector.connect(name, tcp).await;
    let found = verifier.found.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    match (handshake, found) {
        (Ok(_stream), Some(Ok(ca))) => Ok(ca),
        (_, Some(Err(reason))) => Err(IdentityError::PinMismatch { endpoint: endpoint.to_owned(), reason }),
        (Err(e), _) => Err(unreachable(format!("TLS handshake: {e}"))),
        (Ok(_), None) => Err(unreachable("the server presented no certificate".to_owned())),
    }
}

/// Verifies a server against the CA in its own chain whose hash is pinned.
#[derive(Debug)]
struct PinnedCa {
    pin: String,
    provider: Arc<rustls::crypto::CryptoProvider>,
    /// The pinned CA (DER) once seen, or why verification failed.
    found: Mutex<Option<Result<Vec<u8>, String>>>,
}

impl PinnedCa {
    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> Result<Vec<u8>, String> {
        let ca = intermediates
            .iter()
            .find(|c| hex::encode(Sha256::digest(c.as_ref())) == self.pin)
            .ok_or_else(|| "no certificate in the presented chain has the pinned hash".to_owned())?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned()).map_err(|e| format!("pinned CA unusable: {e}"))?;
        let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::clone(&self.provider),
        )
        .build()
        .map_err(|e| e.to_string())?;
        webpki
            .verify_server_cert(end_entity, &[], server_name, &[], now)
            .map_err(|e| format!("server certificate does not verify against the pinned CA: {e}"))?;
        Ok(ca.as_ref().to_vec())
    }
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let result = self.check(end_entity, intermediates, server_name, now);
        let ok = result.is_ok();
        *self.found.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(result);
        if ok {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General("certificate does not match the join token's CA pin".to_owned()))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// Joins through the first node in `endpoints` that answers: pins the CA,
/// sends the CSR, and returns the identity to save.
pub async fn join(
    endpoints: &[String],
    token: &JoinToken,
    agent_name: &str,
) -> Result<AgentIdentity, IdentityError> {
    let mut last =
        IdentityError::Unreachable { endpoint: "(none)".to_owned(), reason: "no endpoint given".to_owned() };
    for endpoint in endpoints {
        match join_one(endpoint, token, agent_name).await {
            Ok(identity) => return Ok(identity),
            // A refusal or a pin mismatch is final: another node would say
            // the same, and trying on would spread the secret.
            Err(e @ (IdentityError::Refused { .. } | IdentityError::PinMismatch { .. })) => return Err(e),
            Err(e) => {
                tracing::warn!(message = "join attempt failed", endpoint = %endpoint, error = %e);
                last = e;
            }
        }
    }
    Err(last)
}

async fn join_one(
    endpoint: &str,
    token: &JoinToken,
    agent_name: &str,
) -> Result<AgentIdentity, IdentityError> {
    let ca_der = fetch_pinned_ca(endpoint, token.ca_sha256()).await?;
    let ca_pem = cert_pem(&ca_der);
    let unreachable = |reason: String| IdentityError::Unreachable { endpoint: endpoint.to_owned(), reason };
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&ca_pem))
        .domain_name(SERVER_NAME);
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{endpoint}"))
        .map_err(|e| unreachable(e.to_string()))?
        .tls_config(tls)
        .map_err(|e| unreachable(e.to_string()))?
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(15))
        .connect()
        .await
        .map_err(|e| unreachable(format!("{e}: {}", source_chain(&e))))?;
    let (key, csr_der) = new_key_and_csr(agent_name)?;
    let mut client = aos_proto::agent::agent_gateway_client::AgentGatewayClient::new(channel);
    let answer = client
        .join(aos_proto::agent::JoinRequest {
            join_token: token.secret.clone(),
            csr_der,
            agent_name: agent_name.to_owned(),
        })
        .await
        .map_err(|status| match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                unreachable(status.message().to_owned())
            }
            _ => {
                IdentityError::Refused { endpoint: endpoint.to_owned(), message: status.message().to_owned() }
            }
        })?
        .into_inner();
    if answer.ca_certificate_der != ca_der {
        return Err(IdentityError::PinMismatch {
            endpoint: endpoint.to_owned(),
            reason: "the join answer names another CA than the pinned one".to_owned(),
        });
    }
    Ok(AgentIdentity {
        edge_agent_id: answer.agent_id,
        tenant_id: answer.tenant_id,
        key_pem: key.serialize_pem(),
        cert_pem: cert_pem(&answer.certificate_der),
        ca_pem,
        trusted_snapshot_keys: answer.trusted_snapshot_keys,
    })
}

/// The causes of an error, joined (transport errors hide the useful part).
pub fn source_chain(error: &dyn std::error::Error) -> String {
    let mut parts = Vec::new();
    let mut source = error.source();
    while let Some(e) = source {
        parts.push(e.to_string());
        source = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_tokens_parse_and_errors_never_echo_the_secret() {
        let pin = "ab".repeat(32);
        let token = JoinToken::parse(&format!(" aosj_0123456789abcdef.{pin} ")).unwrap();
        assert_eq!(token.ca_sha256(), pin);
        assert!(!format!("{token:?}").contains("0123456789abcdef"));
        for bad in [
            "aosj_0123456789abcdef",
            "nope_0123456789abcdef.ab",
            &format!("aosj_0123456789abcdef.{}", "zz".repeat(32)),
        ] {
            let err = JoinToken::parse(bad).unwrap_err().to_string();
            assert!(!err.contains("0123456789abcdef"), "{err}");
        }
    }

    #[test]
    fn the_identity_file_is_private_and_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert!(AgentIdentity::load(dir.path()).unwrap().is_none());
        let identity = AgentIdentity {
            edge_agent_id: "ea-1".into(),
            tenant_id: "acme".into(),
            key_pem: "KEY".into(),
            cert_pem: "CERT".into(),
            ca_pem: "CA".into(),
            trusted_snapshot_keys: vec!["aa".into()],
        };
        identity.save(dir.path()).unwrap();
        assert_eq!(AgentIdentity::load(dir.path()).unwrap(), Some(identity.clone()));
        assert!(!format!("{identity:?}").contains("KEY"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(AgentIdentity::path(dir.path())).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(AgentIdentity::path(dir.path()), b"{broken").unwrap();
        let err = AgentIdentity::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains(IDENTITY_FILE), "{err}");
    }
}
