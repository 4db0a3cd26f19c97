//! The plane gate (GAP-042, GAP-044, GAP-065 step 1–2): before any limit is
//! counted, may this run touch this plane, and which bound source serves
//! the named template, endpoint or tool?
//!
//! Deny by default: an unknown plane, an inactive plane, a `DENY` plane no
//! applicable policy explicitly allows, a target no bound source has, or a
//! source that is not `ENABLED` all refuse with a reason the workload and
//! the evidence record can show. The evaluator then decides limits (RAG
//! access, DB queries) on the resolved access like any step.

use crate::evaluate::{DataAccessKind, RunScope};
use crate::policy::BindAt;
use crate::snapshot::{KnowledgePlane, PlaneDefault, Sensitivity, VerifiedSnapshot};

use super::model::{AssetType, DataSource, SourceStatus};

/// What the workload asks for inside a plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessTarget<'a> {
    /// A registered SQL template.
    SqlTemplate(&'a str),
    /// A registered HTTP endpoint.
    HttpEndpoint(&'a str),
    /// An MCP tool.
    McpTool(&'a str),
}

impl AccessTarget<'_> {
    fn describe(&self) -> (&'static str, &str) {
        match self {
            AccessTarget::SqlTemplate(id) => ("SQL template", id),
            AccessTarget::HttpEndpoint(id) => ("HTTP endpoint", id),
            AccessTarget::McpTool(id) => ("MCP tool", id),
        }
    }
}

/// A plane and source the run may use.
#[derive(Debug, Clone, Copy)]
pub struct ResolvedAccess<'s> {
    /// The plane.
    pub plane: &'s KnowledgePlane,
    /// The source that serves the target.
    pub source: &'s DataSource,
    /// How the evaluator counts it.
    pub kind: DataAccessKind,
}

/// Why the gate refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessRefusal {
    /// No plane of that id in this tenant's snapshot (another tenant's plane
    /// id lands here too: the snapshot holds only the run's tenant).
    #[error("knowledge plane {plane_id:?} does not exist in this tenant")]
    UnknownPlane {
        /// The plane asked for.
        plane_id: String,
    },
    /// The plane's activation has not been confirmed by an owner.
    #[error("knowledge plane {plane_id:?} is not active (an owner must confirm its activation)")]
    PlaneInactive {
        /// The plane.
        plane_id: String,
    },
    /// A `DENY` plane and no applicable policy lists it in
    /// `monitors.rag_access.allowed_planes`.
    #[error(
        "knowledge plane {plane_id:?} ({sensitivity:?}) defaults to DENY and no policy in scope allows it"
    )]
    DeniedByDefault {
        /// The plane.
        plane_id: String,
        /// Its sensitivity.
        sensitivity: Sensitivity,
    },
    /// No source bound to the plane has the target.
    #[error("no source bound to plane {plane_id:?} has {what} {id:?}")]
    UnknownTarget {
        /// The plane.
        plane_id: String,
        /// `SQL template`, `HTTP endpoint` or `MCP tool`.
        what: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The source that has the target is not serving.
    #[error("source {source_id:?} is {}; only ENABLED sources serve access", status.as_str())]
    SourceNotEnabled {
        /// The source.
        source_id: String,
        /// Its state.
        status: SourceStatus,
    },
}

impl AccessRefusal {
    /// A stable code for APIs and evidence, e.g. `PLANE_DENIED`.
    pub fn code(&self) -> &'static str {
        match self {
            AccessRefusal::UnknownPlane { .. } => "UNKNOWN_PLANE",
            AccessRefusal::PlaneInactive { .. } => "PLANE_INACTIVE",
            AccessRefusal::DeniedByDefault { .. } => "PLANE_DENIED",
            AccessRefusal::UnknownTarget { .. } => "UNKNOWN_TARGET",
            AccessRefusal::SourceNotEnabled { .. } => "SOURCE_NOT_ENABLED",
        }
    }
}

/// Resolves `target` on `plane_id` for a run of `scope` against the
/// snapshot. See the module docs for the order of checks.
pub fn resolve_access<'s>(
    snapshot: &'s VerifiedSnapshot,
    scope: &RunScope,
    plane_id: &str,
    target: AccessTarget<'_>,
) -> Result<ResolvedAccess<'s>, AccessRefusal> {
    let inner = snapshot.snapshot();
    let plane = inner
        .knowledge_planes
        .binary_search_by(|p| p.plane_id.as_str().cmp(plane_id))
        .ok()
        .and_then(|i| inner.knowledge_planes.get(i))
        .ok_or_else(|| AccessRefusal::UnknownPlane { plane_id: plane_id.to_owned() })?;
    if !plane.active {
        return Err(AccessRefusal::PlaneInactive { plane_id: plane_id.to_owned() });
    }
    if plane.default_policy == PlaneDefault::Deny && !explicitly_allowed(snapshot, scope, plane_id) {
        return Err(AccessRefusal::DeniedByDefault {
            plane_id: plane_id.to_owned(),
            sensitivity: plane.sensitivity,
        });
    }
    let serves = |source: &DataSource| match target {
        AccessTarget::SqlTemplate(id) => source.template(id).is_some(),
        AccessTarget::HttpEndpoint(id) => source.endpoint(id).is_some(),
        AccessTarget::McpTool(tool) => source.allows_tool(tool),
    };
    let mut candidates = plane
        .bound_source_ids
        .iter()
        .filter_map(|id| inner.data_sources.binary_search_by(|s| s.source_id.as_str().cmp(id)).ok())
        .filter_map(|i| inner.data_sources.get(i))
        .filter(|s| serves(s))
        .peekable();
    let Some(first) = candidates.peek().copied() else {
        let (what, id) = target.describe();
        return Err(AccessRefusal::UnknownTarget { plane_id: plane_id.to_owned(), what, id: id.to_owned() });
    };
    let source = candidates.find(|s| s.status == SourceStatus::Enabled).ok_or_else(|| {
        AccessRefusal::SourceNotEnabled { source_id: first.source_id.clone(), status: first.status }
    })?;
    let kind = if source.asset_type == AssetType::Sql {
        DataAccessKind::DatabaseQuery
    } else {
        DataAccessKind::Retrieval
    };
    Ok(ResolvedAccess { plane, source, kind })
}

/// Whether a policy applying to the run names the plane in an enabled,
/// allowed RAG rule.
fn explicitly_allowed(snapshot: &VerifiedSnapshot, scope: &RunScope, plane_id: &str) -> bool {
    BindAt::ALL.iter().any(|bind_at| {
        snapshot.candidates(*bind_at, scope).any(|pos| {
            snapshot.compiled()[pos].rag.as_ref().is_some_and(|rule| {
                rule.allowed && rule.planes.binary_search_by(|p| p.as_str().cmp(plane_id)).is_ok()
            })
        })
    })
}
