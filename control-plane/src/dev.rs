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
