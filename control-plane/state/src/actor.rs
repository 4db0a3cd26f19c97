//! Who proposed a command: the authenticated principal, as resolved by the
//! API layer and carried in every proposal and audit entry (seed §5.4: "who
//! created the policy (`actor_id`, `actor_type`)").

use aos_core::policy::ActorRole;
use serde::{Deserialize, Serialize};

/// The kind of principal behind a proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ActorType {
    /// A person, authenticated interactively.
    Human,
    /// A caller authenticated with an API key; `actor_id` is the key id.
    ApiKey,
    /// The control plane itself (bootstrap, maintenance).
    System,
}

impl ActorType {
    /// The spelling used in documents and the ledger, e.g. `API_KEY`.
    pub fn as_str(self) -> &'static str {
        match self {
            ActorType::Human => "HUMAN",
            ActorType::ApiKey => "API_KEY",
            ActorType::System => "SYSTEM",
        }
    }
}

/// The principal behind a proposal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorRef {
    /// Human actor id, API key id, or a system component name.
    pub actor_id: String,
    /// What kind of principal this is.
    pub actor_type: ActorType,
    /// The role the principal holds in its scope.
    pub role: ActorRole,
    /// The tenant the principal belongs to; `None` for a cluster operator,
    /// whose scope is every tenant.
    pub tenant_id: Option<String>,
}

impl ActorRef {
    /// Whether this is a cluster-operator principal (no tenant).
    pub fn is_operator(&self) -> bool {
        self.tenant_id.is_none()
    }
}
