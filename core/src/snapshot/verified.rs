//! The verified snapshot handle: immutable, shareable, pre-indexed.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use crate::compile::CompiledPolicy;
use crate::counters::CounterKey;
use crate::evaluate::RunScope;
use crate::policy::{BindAt, PolicyOverride, ScopeType};

use super::SnapshotError;
use super::index::ScopeIndex;
use super::keys::KeyId;
use super::model::PolicySnapshot;

/// A snapshot that passed [`super::verify`]. It offers only shared
/// references, so nothing can change it after verification (GAP-029);
/// cloning shares the same content.
#[derive(Debug, Clone)]
pub struct VerifiedSnapshot {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    snapshot: PolicySnapshot,
    content_hash: [u8; 32],
    key_id: KeyId,
    pub(crate) compiled: Vec<CompiledPolicy>,
    index: ScopeIndex,
    position_by_id: HashMap<Arc<str>, usize>,
    overrides_by_policy: HashMap<String, Vec<usize>>,
    required_counters: Vec<CounterKey>,
    /// `threshold_snapshot_hash` per policy, computed the first time a
    /// decision names the policy: most policies never win, and hashing all
    /// of them would dominate verification time.
    threshold_hashes: Vec<OnceLock<[u8; 32]>>,
}

impl VerifiedSnapshot {
    pub(crate) fn new(
        snapshot: PolicySnapshot,
        content_hash: [u8; 32],
        key_id: KeyId,
    ) -> Result<Self, SnapshotError> {
        let compiled = snapshot.compile().map_err(SnapshotError::Invalid)?;
        let index = ScopeIndex::build(&snapshot.tenant_id, &snapshot.policies);
        let threshold_hashes = snapshot.policies.iter().map(|_| OnceLock::new()).collect();
        let position_by_id = compiled.iter().enumerate().map(|(pos, p)| (p.id.clone(), pos)).collect();
        let mut overrides_by_policy: HashMap<String, Vec<usize>> = HashMap::new();
        for (pos, o) in snapshot.overrides.iter().enumerate() {
            overrides_by_policy.entry(o.policy_id.clone()).or_default().push(pos);
        }
        let mut required_counters: Vec<CounterKey> =
            compiled.iter().flat_map(|p| p.limits.iter().map(|l| l.counter)).collect();
        required_counters.sort_unstable();
        required_counters.dedup();
        Ok(VerifiedSnapshot {
            inner: Arc::new(Inner {
                snapshot,
                content_hash,
                key_id,
                compiled,
                index,
                position_by_id,
                overrides_by_policy,
                required_counters,
                threshold_hashes,
            }),
        })
    }

    /// The snapshot content.
    pub fn snapshot(&self) -> &PolicySnapshot {
        &self.inner.snapshot
    }

    /// The tenant.
    pub fn tenant_id(&self) -> &str {
        &self.inner.snapshot.tenant_id
    }

    /// The version.
    pub fn version(&self) -> u64 {
        self.inner.snapshot.version
    }

    /// SHA-256 of the canonical payload.
    pub fn content_hash(&self) -> &[u8; 32] {
        &self.inner.content_hash
    }

    /// [`VerifiedSnapshot::content_hash`] as lowercase hex: the snapshot id
    /// recorded on runs and evidence.
    pub fn content_hash_hex(&self) -> String {
        hex::encode(self.inner.content_hash)
    }

    /// The key that signed it.
    pub fn key_id(&self) -> &KeyId {
        &self.inner.key_id
    }

    /// Whether the snapshot is past its maximum staleness at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        now_ms > self.inner.snapshot.not_after_ms
    }

    /// Every counter some limit reads, sorted and de-duplicated; the edge
    /// agent maintains exactly these.
    pub fn required_counters(&self) -> &[CounterKey] {
        &self.inner.required_counters
    }

    /// Whether both handles share the same verified content.
    pub fn same_as(&self, other: &VerifiedSnapshot) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) || self.inner.content_hash == other.inner.content_hash
    }

    /// `threshold_snapshot_hash` (GAP-022) of the policy at `pos`.
    pub(crate) fn threshold_hash(&self, pos: usize) -> [u8; 32] {
        match (self.inner.threshold_hashes.get(pos), self.inner.snapshot.policies.get(pos)) {
            (Some(cell), Some(policy)) => *cell.get_or_init(|| policy.threshold_hash()),
            _ => [0; 32],
        }
    }

    pub(crate) fn compiled(&self) -> &[CompiledPolicy] {
        &self.inner.compiled
    }

    pub(crate) fn candidates<'a>(
        &'a self,
        bind_at: BindAt,
        scope: &'a RunScope,
    ) -> impl Iterator<Item = usize> + 'a {
        self.inner.index.candidates(bind_at, scope)
    }

    /// Whether this snapshot holds policy `id` bound at `bind_at`.
    pub(crate) fn binds(&self, id: &str, bind_at: BindAt) -> bool {
        self.inner.position_by_id.get(id).is_some_and(|pos| self.inner.compiled[*pos].bind_at == bind_at)
    }

    /// The first override of `policy_id` that is active at `now_ms` and
    /// covers the run, in override-id order.
    pub(crate) fn active_override(
        &self,
        policy_id: &str,
        scope: &RunScope,
        now_ms: u64,
    ) -> Option<&PolicyOverride> {
        let positions = self.inner.overrides_by_policy.get(policy_id)?;
        positions.iter().map(|pos| &self.inner.snapshot.overrides[*pos]).find(|o| {
            o.is_override_active(now_ms) && scope_covers(&o.scope, scope, &self.inner.snapshot.tenant_id)
        })
    }
}

fn scope_covers(selector: &crate::policy::Scope, run: &RunScope, tenant_id: &str) -> bool {
    let id = match selector.scope_type {
        ScopeType::AllRuns => return true,
        ScopeType::Tenant => return selector.ids.is_empty() || selector.ids.iter().any(|t| t == tenant_id),
        ScopeType::Project => &run.project_id,
        ScopeType::Agent => &run.agent_id,
        ScopeType::ApiKey => &run.api_key_id,
        ScopeType::HumanActor => &run.human_actor_id,
    };
    id.as_deref().is_some_and(|id| selector.ids.iter().any(|s| s == id))
}
