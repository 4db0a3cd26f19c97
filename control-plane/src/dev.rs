//! Dev mode: a single-node cluster in a local data directory, seeded with a
//! demo tenant, a tenant admin key and the example policies, so a new user
//! has something real to call right away. Re-running it keeps what exists.

use std::path::{Path, PathBuf};

use aos_core::document::{DocumentFormat, parse_document};
use aos_core::policy::ActorRole;
use aos_cp_state::{ActorRef, ActorType, Command, CommandResult, Proposal};

use crate::bootstrap::write_secret;
use crate::http::secret_hash;
use crate::node::{Node, NodeError};
use crate::write::propose;

/// The demo tenant's id.
pub const DEMO_TENANT: &str = "demo";
/// The demo tenant admin key's id.
pub const DEMO_ADMIN_KEY_ID: &str = "demo-admin";

/// The example policy documents shipped in `deploy/examples/`.
const EXAMPLES: [(&str, &str); 3] = [
    ("budgets.yaml", include_str!("../../deploy/examples/budgets.yaml")),
    ("data-access.yaml", include_str!("../../deploy/examples/data-access.yaml")),
    ("privacy.yaml", include_str!("../../deploy/examples/privacy.yaml")),
];

/// What dev mode created (or found).
#[derive(Debug)]
pub struct DemoSeed {
    /// File holding the demo tenant admin key, when created now.
    pub admin_key_file: Option<PathBuf>,
    /// The secret, when created now (shown once).
    pub admin_key: Option<String>,
    /// Policies applied.
    pub policies: usize,
}

fn system() -> ActorRef {
    ActorRef {
        actor_id: "dev-seed".to_owned(),
        actor_type: ActorType::System,
        role: ActorRole::Admin,
        tenant_id: None,
    }
}

async fn apply(node: &Node, request_id: String, command: Command) -> Result<(), NodeError> {
    let proposal = Proposal { request_id, actor: system(), at_ms: crate::now_ms(), command };
    let committed = propose(node, proposal).await.map_err(|e| NodeError::Raft(e.to_string()))?;
    match committed.result {
        CommandResult::Applied(_) => Ok(()),
        CommandResult::Rejected(r) => Err(NodeError::Raft(format!("dev seed refused: {}", r.message))),
    }
}

/// Seeds the demo tenant once.
pub async fn seed(node: &Node, data_dir: &Path) -> Result<DemoSeed, NodeError> {
    let exists = node.state().read(|s| s.0.tenant(DEMO_TENANT).is_some());
    if exists {
        return Ok(DemoSeed { admin_key_file: None, admin_key: None, policies: 0 });
    }
    apply(
        node,
        "dev-seed-tenant".to_owned(),
        Command::CreateTenant { tenant_id: DEMO_TENANT.to_owned(), name: "Demo tenant".to_owned() },
    )
    .await?;

    let mut secret_bytes = [0u8; 32];
    getrandom::fill(&mut secret_bytes).map_err(|e| NodeError::Raft(format!("no randomness: {e}")))?;
    let secret = format!("aos_{}_{}", DEMO_TENANT, hex::encode(secret_bytes));
    apply(
        node,
        "dev-seed-admin-key".to_owned(),
        Command::CreateApiKey {
            tenant_id: Some(DEMO_TENANT.to_owned()),
            key_id: DEMO_ADMIN_KEY_ID.to_owned(),
            name: "demo tenant admin".to_owned(),
            role: ActorRole::Admin,
            secret_hash: secret_hash(&secret),
        },
    )
    .await?;
    let key_file = data_dir.join("demo-admin.key");
    write_secret(&key_file, &secret)
        .map_err(|e| NodeError::Serve { what: "demo key file", source: Box::new(e) })?;

    // The example policies name the demo knowledge plane, so it comes first.
    seed_knowledge_base(node, data_dir).await?;

    let mut policies = 0;
    for (name, text) in EXAMPLES {
        let doc = parse_document(text, DocumentFormat::Yaml)
            .map_err(|e| NodeError::Raft(format!("example {name} is invalid: {e}")))?;
        for policy in doc.policies {
            let request_id = format!("dev-seed-policy-{}", policy.id);
            apply(node, request_id, Command::ApplyPolicy { tenant_id: DEMO_TENANT.to_owned(), policy })
                .await?;
            policies += 1;
        }
    }
    Ok(DemoSeed { admin_key_file: Some(key_file), admin_key: Some(secret), policies })
}

/// The demo knowledge plane's id (named by `deploy/examples/data-access.yaml`).
pub const DEMO_PLANE: &str = "kp-public-docs";
/// The demo SQL source and its template.
pub const DEMO_SOURCE: &str = "kb-docs";

const DEMO_DOCS: [(&str, &str, &str, &str); 4] = [
    ("doc-1", "Refund policy", "billing", "Refunds are issued within 14 days of purchase."),
    ("doc-2", "Invoices", "billing", "Invoices are emailed on the first business day of the month."),
    ("doc-3", "Password reset", "account", "Reset your password from the sign-in page."),
    (
        "doc-4",
        "Data retention",
        "privacy",
        "Run records are kept for 90 days unless a policy says otherwise.",
    ),
];

/// A SQLite knowledge base in the data directory, registered as a verified,
/// enabled source behind the active PUBLIC plane `kp-public-docs`, so
/// `POST /api/v1/access` works in dev mode out of the box.
async fn seed_knowledge_base(node: &Node, data_dir: &Path) -> Result<(), NodeError> {
    let db = data_dir.join("demo-kb.db");
    let io = |e: rusqlite::Error| NodeError::Serve { what: "demo knowledge base", source: Box::new(e) };
    let _ = std::fs::remove_file(&db);
    let conn = rusqlite::Connection::open(&db).map_err(io)?;
    conn.execute_batch("CREATE TABLE docs (id TEXT PRIMARY KEY, title TEXT NOT NULL, topic TEXT NOT NULL, body TEXT NOT NULL)")
        .map_err(io)?;
    for (id, title, topic, body) in DEMO_DOCS {
        conn.execute("INSERT INTO docs VALUES (?1, ?2, ?3, ?4)", [id, title, topic, body]).map_err(io)?;
    }
    drop(conn);
    let source: aos_core::access::DataSource = serde_json::from_value(serde_json::json!({
        "source_id": DEMO_SOURCE,
        "asset_type": "SQL",
        "sql": {
            "engine": "SQLITE",
            "target": db.to_string_lossy(),
            "templates": [{
                "template_id": "docs-by-topic",
                "statement": "SELECT id, title, body FROM docs WHERE topic = :topic ORDER BY id",
                "params": [{"name": "topic", "type": "STRING"}],
                "max_rows": 20
            }]
        }
    }))
    .map_err(|e| NodeError::Raft(format!("demo source: {e}")))?;
    let tenant_id = DEMO_TENANT.to_owned();
    apply(
        node,
        "dev-seed-source".to_owned(),
        Command::PutDataSource { tenant_id: tenant_id.clone(), source: source.clone() },
    )
    .await?;
    let detail = node
        .connectors()
        .probe(&source, None, aos_connectors::ProbeSite::Edge)
        .await
        .map_err(|e| NodeError::Raft(format!("demo source probe: {e}")))?;
    let fingerprint = node
        .state()
        .read(|s| s.0.data_access().tenant(DEMO_TENANT)?.sources.get(DEMO_SOURCE).map(|r| r.fingerprint()))
        .unwrap_or_default();
    let probe = Command::RecordSourceProbe {
        tenant_id: tenant_id.clone(),
        source_id: DEMO_SOURCE.to_owned(),
        fingerprint,
        ok: true,
        detail,
    };
    apply(node, "dev-seed-source-probe".to_owned(), probe).await?;
    let enable = Command::TransitionSource {
        tenant_id: tenant_id.clone(),
        source_id: DEMO_SOURCE.to_owned(),
        to: aos_core::access::SourceStatus::Enabled,
        reason: "dev mode demo knowledge base".to_owned(),
    };
    apply(node, "dev-seed-source-enable".to_owned(), enable).await?;
    let plane = aos_cp_state::data_access::PlaneSpec {
        plane_id: DEMO_PLANE.to_owned(),
        name: "Public product docs".to_owned(),
        sensitivity: aos_core::snapshot::Sensitivity::Public,
        default_policy: None,
        bound_source_ids: vec![DEMO_SOURCE.to_owned()],
    };
    apply(
        node,
        "dev-seed-plane".to_owned(),
        Command::PutKnowledgePlane { tenant_id: tenant_id.clone(), plane },
    )
    .await?;
    let activate = Command::SetPlaneActivation {
        tenant_id,
        plane_id: DEMO_PLANE.to_owned(),
        active: true,
        reason: "dev mode demo knowledge base".to_owned(),
    };
    apply(node, "dev-seed-plane-activate".to_owned(), activate).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_examples_parse() {
        for (name, text) in EXAMPLES {
            assert!(parse_document(text, DocumentFormat::Yaml).is_ok(), "{name}");
        }
    }
}
