//! Scope index: built once when a snapshot is loaded so that finding the
//! policies that apply to a step costs a few hash lookups, not a scan.
//!
//! Policies are partitioned by binding moment (GAP-031) and by scope type.
//! Positions refer to the snapshot's id-sorted policy list, so every list is
//! in id order and the result never depends on the order policies were
//! authored or received (INV-005).

use std::collections::HashMap;

use crate::evaluate::RunScope;
use crate::policy::{BindAt, Policy, ScopeType};

#[derive(Debug, Default)]
struct RoleIndex {
    always: Vec<u32>,
    project: HashMap<String, Vec<u32>>,
    agent: HashMap<String, Vec<u32>>,
    api_key: HashMap<String, Vec<u32>>,
    human_actor: HashMap<String, Vec<u32>>,
}

/// Policy positions by binding moment and scope.
#[derive(Debug, Default)]
pub(crate) struct ScopeIndex {
    roles: [RoleIndex; 3],
}

impl ScopeIndex {
    pub(crate) fn build(tenant_id: &str, policies: &[Policy]) -> Self {
        let mut index = ScopeIndex::default();
        for (pos, policy) in policies.iter().enumerate() {
            let Ok(pos) = u32::try_from(pos) else { break };
            let role = &mut index.roles[policy.bind_at.index()];
            let map = match policy.scope.scope_type {
                ScopeType::AllRuns => {
                    role.always.push(pos);
                    continue;
                }
                ScopeType::Tenant => {
                    // Validation guarantees the ids name only this tenant.
                    if policy.scope.ids.is_empty() || policy.scope.ids.iter().any(|id| id == tenant_id) {
                        role.always.push(pos);
                    }
                    continue;
                }
                ScopeType::Project => &mut role.project,
                ScopeType::Agent => &mut role.agent,
                ScopeType::ApiKey => &mut role.api_key,
                ScopeType::HumanActor => &mut role.human_actor,
            };
            for id in &policy.scope.ids {
                map.entry(id.clone()).or_default().push(pos);
            }
        }
        index
    }

    /// Positions of the policies bound at `bind_at` whose scope selects the
    /// run. Each policy appears at most once: a run has one id per scope type
    /// and a policy has one scope type.
    pub(crate) fn candidates<'a>(
        &'a self,
        bind_at: BindAt,
        scope: &'a RunScope,
    ) -> impl Iterator<Item = usize> + 'a {
        let role = &self.roles[bind_at.index()];
        let lookup = |map: &'a HashMap<String, Vec<u32>>, key: &Option<String>| -> &'a [u32] {
            key.as_deref().and_then(|k| map.get(k)).map_or(&[], Vec::as_slice)
        };
        role.always
            .iter()
            .chain(lookup(&role.project, &scope.project_id))
            .chain(lookup(&role.agent, &scope.agent_id))
            .chain(lookup(&role.api_key, &scope.api_key_id))
            .chain(lookup(&role.human_actor, &scope.human_actor_id))
            .map(|pos| *pos as usize)
    }
}
