//! The edge-agent gateway's bad paths against a real node: unknown join
//! tokens (audited), garbage CSRs, calls without a client certificate, with
//! a certificate from another CA, and with a CA-signed certificate that no
//! registered agent holds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly")]

mod support;

use std::time::Duration;

use aos_control_plane::pki::{ClusterCa, SERVER_NAME};
use aos_edge_agent::identity::{IdentityError, JoinToken, cert_pem, join, new_key_and_csr};
use aos_proto::agent::agent_gateway_client::AgentGatewayClient;
use aos_proto::agent::agent_snapshot_message::Kind;
use aos_proto::agent::{AgentSnapshotMessage, Hello, JoinRequest};
use support::{NodeProc, TEST_CA_KEY, call, operator_key, tenant_with_admin, wait_healthy};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

fn ca() -> ClusterCa {
    ClusterCa::from_seed_hex(TEST_CA_KEY, "test").unwrap()
}

async fn channel(node: &NodeProc, identity: Option<Identity>) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca().cert_pem()))
        .domain_name(SERVER_NAME);
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    Endpoint::from_shared(format!("https://{}", node.agents))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

async fn watch_status(node: &NodeProc, identity: Option<Identity>) -> tonic::Status {
    let channel = match channel(node, identity).await {
        Ok(c) => c,
        Err(e) => return tonic::Status::unavailable(format!("connect: {e}")),
    };
    let hello =
        AgentSnapshotMessage { kind: Some(Kind::Hello(Hello { current_version: 0, governance_version: 0 })) };
    match AgentGatewayClient::new(channel).watch_snapshots(tokio_stream::iter(vec![hello])).await {
        Ok(mut stream) => match stream.get_mut().message().await {
            Err(status) => status,
            Ok(_) => panic!("the watch was served"),
        },
        Err(status) => status,
    }
}

/// A certificate for a fresh key signed by `ca` as an agent of `tenant`.
fn agent_identity(ca: &ClusterCa, tenant: &str) -> Identity {
    let (key, csr) = new_key_and_csr("intruder").unwrap();
    let cert = ca.issue_agent(&csr, "ea-ghost", tenant, 1_800_000_000 - 86_400 * 300).unwrap();
    Identity::from_pem(cert_pem(&cert.der), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_refuses_what_it_must_and_audits_failed_joins() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProc::start(1, dir.path(), true);
    let operator = operator_key(&node);
    wait_healthy(&mut node);
    let admin = tenant_with_admin(&node, &operator, "acme");

    // An unknown token: refused and written to the ledger.
    let forged = JoinToken::parse(&format!("aosj_{}.{}", "ab".repeat(32), ca().sha256_hex())).unwrap();
    match join(std::slice::from_ref(&node.agents), &forged, "host").await {
        Err(IdentityError::Refused { message, .. }) => {
            assert!(message.contains("unknown join token"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let (_, audit) = call("GET", &node.url("/api/v1/audit"), Some(&operator), None);
    assert!(audit.to_string().contains("JOIN_EDGE_AGENT"), "{audit}");

    // A real token with a garbage CSR: 400-like, and nobody registered.
    let (status, created) = call(
        "POST",
        &node.url("/api/v1/tenants/acme/agent-tokens"),
        Some(&admin),
        Some(serde_json::json!({})),
    );
    assert_eq!(status, 200, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    let mut client = AgentGatewayClient::new(channel(&node, None).await.unwrap());
    let status = client
        .join(JoinRequest { join_token: secret, csr_der: b"not a csr".to_vec(), agent_name: "host".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    assert!(status.message().contains("csr_der"), "{status}");
    let (_, agents) = call("GET", &node.url("/api/v1/tenants/acme/agents"), Some(&admin), None);
    assert_eq!(agents["agents"].as_array().unwrap().len(), 0, "{agents}");

    // Without a client certificate only Join is served.
    let status = watch_status(&node, None).await;
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
    // A certificate from another CA fails the TLS handshake.
    let stranger = ClusterCa::from_seed_hex(&"99".repeat(32), "stranger").unwrap();
    let status = watch_status(&node, Some(agent_identity(&stranger, "acme"))).await;
    assert_ne!(status.code(), tonic::Code::Ok, "{status}");
    assert!(!status.message().contains("served"), "{status}");
    // A certificate from our CA that no registered agent holds.
    let status = watch_status(&node, Some(agent_identity(&ca(), "acme"))).await;
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status}");
}
