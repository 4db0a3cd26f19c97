//! Tenants, their projects and their human actors: the `CREATE_TENANT`,
//! `CREATE_PROJECT` and `CREATE_ACTOR` commands. None of these changes what
//! a tenant's policy snapshot contains, so none bumps its version.

use aos_core::FieldError;
use aos_core::policy::ActorRole;
use serde::{Deserialize, Serialize};

use crate::audit::AuditAction;
use crate::domain::{Domain, TenantState};
use crate::effect::{Ctx, Effect, Refusal};
use crate::ids::{check_id, check_text};
use crate::serde_compat::to_json;

/// A tenant: the unit of isolation (INV-003).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    /// Tenant id.
    pub tenant_id: String,
    /// Display name.
    pub name: String,
    /// Unix milliseconds of creation.
    pub created_at_ms: u64,
    /// The creating actor's id.
    pub created_by: String,
    /// Version of the tenant's policy snapshot; incremented by every change
    /// to its policies or overrides. 0 until the first such change.
    pub snapshot_version: u64,
    /// When the change that produced `snapshot_version` was proposed (Unix
    /// milliseconds): the snapshot's `issued_at`, so every node signs
    /// byte-identical snapshots for the same version.
    #[serde(default)]
    pub snapshot_changed_at_ms: u64,
}

/// A project of a tenant (a `PROJECT` scope target).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    /// Owning tenant.
    pub tenant_id: String,
    /// Project id, unique within the tenant.
    pub project_id: String,
    /// Display name.
    pub name: String,
    /// Unix milliseconds of creation.
    pub created_at_ms: u64,
    /// The creating actor's id.
    pub created_by: String,
}

/// A human actor of a tenant (a `HUMAN_ACTOR` scope target).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorRecord {
    /// Owning tenant.
    pub tenant_id: String,
    /// Actor id, unique within the tenant.
    pub actor_id: String,
    /// Display name.
    pub display_name: String,
    /// Role within the tenant.
    pub role: ActorRole,
    /// Unix milliseconds of creation.
    pub created_at_ms: u64,
    /// The creating actor's id.
    pub created_by: String,
}

/// `CREATE_TENANT`.
pub(crate) fn create_tenant(
    domain: &mut Domain,
    ctx: &Ctx<'_>,
    tenant_id: &str,
    name: &str,
) -> Result<Effect, Refusal> {
    let mut errors = Vec::new();
    check_id(&mut errors, "tenant_id", tenant_id);
    check_text(&mut errors, "name", name);
    Refusal::check(errors)?;
    if domain.tenants.contains_key(tenant_id) {
        return Err(Refusal::conflict(format!("tenant `{tenant_id}` already exists")));
    }
    let tenant = Tenant {
        tenant_id: tenant_id.to_owned(),
        name: name.to_owned(),
        created_at_ms: ctx.at_ms,
        created_by: ctx.actor.actor_id.clone(),
        snapshot_version: 0,
        snapshot_changed_at_ms: 0,
    };
    let record = to_json(&tenant);
    domain.tenants.insert(tenant_id.to_owned(), TenantState::new(tenant));
    Ok(Effect::new(AuditAction::TenantCreated, format!("tenant `{tenant_id}` created"))
        .after(record.clone())
        .result(record))
}

/// `CREATE_PROJECT`.
pub(crate) fn create_project(
    domain: &mut Domain,
    ctx: &Ctx<'_>,
    tenant_id: &str,
    project_id: &str,
    name: &str,
) -> Result<Effect, Refusal> {
    let tenant = domain.tenant_mut(tenant_id)?;
    let mut errors = Vec::new();
    check_id(&mut errors, "project_id", project_id);
    check_text(&mut errors, "name", name);
    Refusal::check(errors)?;
    if tenant.projects.contains_key(project_id) {
        return Err(Refusal::conflict(format!(
            "project `{project_id}` already exists in tenant `{tenant_id}`"
        )));
    }
    let project = Project {
        tenant_id: tenant_id.to_owned(),
        project_id: project_id.to_owned(),
        name: name.to_owned(),
        created_at_ms: ctx.at_ms,
        created_by: ctx.actor.actor_id.clone(),
    };
    let record = to_json(&project);
    tenant.projects.insert(project_id.to_owned(), project);
    Ok(Effect::new(AuditAction::ProjectCreated, format!("project `{project_id}` created"))
        .after(record.clone())
        .result(record))
}

/// `CREATE_ACTOR`.
pub(crate) fn create_actor(
    domain: &mut Domain,
    ctx: &Ctx<'_>,
    tenant_id: &str,
    actor_id: &str,
    display_name: &str,
    role: ActorRole,
) -> Result<Effect, Refusal> {
    let tenant = domain.tenant_mut(tenant_id)?;
    let mut errors = Vec::new();
    check_id(&mut errors, "actor_id", actor_id);
    check_text(&mut errors, "display_name", display_name);
    if role == ActorRole::Workload {
        errors.push(FieldError::new("role", "`workload` is a role for API keys, not for human actors"));
    }
    Refusal::check(errors)?;
    if tenant.actors.contains_key(actor_id) {
        return Err(Refusal::conflict(format!("actor `{actor_id}` already exists in tenant `{tenant_id}`")));
    }
    let actor = ActorRecord {
        tenant_id: tenant_id.to_owned(),
        actor_id: actor_id.to_owned(),
        display_name: display_name.to_owned(),
        role,
        created_at_ms: ctx.at_ms,
        created_by: ctx.actor.actor_id.clone(),
    };
    let record = to_json(&actor);
    tenant.actors.insert(actor_id.to_owned(), actor);
    Ok(Effect::new(
        AuditAction::ActorCreated,
        format!("actor `{actor_id}` created with role {}", role.as_str()),
    )
    .after(record.clone())
    .result(record))
}
