//! The mediation layer (GAP-065): `POST /api/v1/access`. The workload
//! names a plane, an action and parameters; the edge agent decides and
//! executes:
//!
//! 1. **SPINE, under the engine lock**: the run must be running; the plane
//!    gate (`aos_core::access::resolve_access`: deny by default, plane
//!    active, the target served by an `ENABLED` bound source); then a
//!    normal `decide` with a `DATA_ACCESS` step, so RAG and DB-query limits
//!    count and STOP/KILL/PAUSE apply to the run like any step. An allowed
//!    SQL query is counted towards `DB_QUERIES` at admission.
//! 2. **Connector resolution**: the source from the snapshot fills in the
//!    statement, URL and credential (opened with the tenant data key).
//! 3. **Execution** through `aos-connectors`, with the source's timeout and
//!    size caps, outside the lock.
//! 4. **Evidence** (GAP-058): a `RETRIEVAL_EVIDENCE` record — ids and
//!    hashes, never the data — is appended and fsynced before the answer
//!    leaves, for refused and failed attempts too.
//!
//! There is no ungoverned path (GAP-066): no raw SQL, free URL or free
//! tool can be expressed in the request.

use aos_connectors::{ConnectorError, Output, Secret};
use aos_core::access::{AccessTarget, SealedCredential, resolve_access, sealing};
use aos_core::evaluate::{DataAccess, DataAccessKind, StepInput, StepPhase};
use aos_core::policy::Action;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{AccessError, Engine, EngineError, not_found, now_ms, require_running, status_str};

use crate::counters::Usage;
use crate::records::{Record, RecordBody, RetrievalEvidence};

/// `POST /api/v1/access`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessRequest {
    /// The run the access belongs to.
    pub run_id: String,
    /// Knowledge plane id.
    pub plane: String,
    /// `query` (SQL template), `fetch` (HTTP endpoint) or `call_tool` (MCP).
    pub action: String,
    /// `{template_id, params}`, `{endpoint_id, params, body}` or `{tool,
    /// arguments}`.
    #[serde(default)]
    pub payload: Map<String, Value>,
}

/// A successful access.
#[derive(Debug, Serialize)]
pub struct AccessAnswer {
    /// The evidence record written for it.
    pub evidence_id: String,
    /// The plane.
    pub plane_id: String,
    /// The source that served it.
    pub source_id: String,
    /// Rows or response body.
    pub data: Value,
    /// Ids of what was returned.
    pub doc_ids: Vec<String>,
    /// Rows returned (SQL).
    pub rows: Option<usize>,
    /// More rows existed than the template allows.
    pub truncated: bool,
    /// The run's status after the decision.
    pub run_status: &'static str,
    /// `CONTINUE` or `WARN`, with reasons.
    pub decision: Value,
}

/// The actions the mediation layer knows, for errors and capabilities.
pub const ACTIONS: [&str; 3] = ["query", "fetch", "call_tool"];

enum Target {
    Sql(String),
    Http(String),
    Mcp(String),
}

impl Target {
    fn id(&self) -> &str {
        match self {
            Target::Sql(id) | Target::Http(id) | Target::Mcp(id) => id,
        }
    }

    fn gate(&self) -> AccessTarget<'_> {
        match self {
            Target::Sql(id) => AccessTarget::SqlTemplate(id),
            Target::Http(id) => AccessTarget::HttpEndpoint(id),
            Target::Mcp(id) => AccessTarget::McpTool(id),
        }
    }
}

/// What a payload asks for: target, parameters, HTTP body.
type Parsed = (Target, Map<String, Value>, Option<Value>);

/// Reads the payload of `action`.
fn parse(action: &str, payload: &Map<String, Value>) -> Result<Parsed, EngineError> {
    let (id_field, params_field, allowed): (&'static str, &'static str, &[&str]) = match action {
        "query" => ("payload.template_id", "payload.params", &["template_id", "params"]),
        "fetch" => ("payload.endpoint_id", "payload.params", &["endpoint_id", "params", "body"]),
        "call_tool" => ("payload.tool", "payload.arguments", &["tool", "arguments"]),
        other => {
            return Err(EngineError::Invalid {
                field: "action",
                message: format!("unknown action `{other}`: one of {}", ACTIONS.join(", ")),
            });
        }
    };
    if let Some(extra) = payload.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(EngineError::Invalid {
            field: "payload",
            message: format!(
                "`{extra}` is not part of a `{action}` payload (allowed: {})",
                allowed.join(", ")
            ),
        });
    }
    let key = id_field.trim_start_matches("payload.");
    let id = payload.get(key).and_then(Value::as_str).filter(|s| !s.is_empty()).ok_or_else(|| {
        EngineError::Invalid { field: id_field, message: "a non-empty string is required".to_owned() }
    })?;
    let params = match payload.get(params_field.trim_start_matches("payload.")) {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => {
            return Err(EngineError::Invalid {
                field: params_field,
                message: "must be an object".to_owned(),
            });
        }
    };
    let target = match action {
        "query" => Target::Sql(id.to_owned()),
        "fetch" => Target::Http(id.to_owned()),
        _ => Target::Mcp(id.to_owned()),
    };
    Ok((target, params, payload.get("body").cloned()))
}

fn query_hash(plane: &str, action: &str, target: &str, params: &Map<String, Value>) -> String {
    let canonical = json!({"plane": plane, "action": action, "target": target, "params": params});
    hex::encode(
        Sha256::new_with_prefix(b"aos.access.query.v1\0").chain_update(canonical.to_string()).finalize(),
    )
}

/// Everything an evidence record needs besides the outcome.
struct EvidenceBase {
    evidence_id: String,
    plane_id: String,
    action: String,
    target: String,
    query_hash: String,
    snapshot_version: u64,
    snapshot_hash: String,
}

impl EvidenceBase {
    fn record(
        &self,
        engine: &Engine,
        run_id: &str,
        connector_id: Option<String>,
        outcome: (&str, Option<&str>, Option<String>),
        policy_id: Option<String>,
        output: Option<&Output>,
    ) -> Record {
        let (outcome, code, reason) = outcome;
        let mut record = Record::new(
            engine.slot.tenant_id(),
            Some(run_id),
            now_ms(),
            RecordBody::RetrievalEvidence(RetrievalEvidence {
                evidence_id: self.evidence_id.clone(),
                plane_id: self.plane_id.clone(),
                action: self.action.clone(),
                target: self.target.clone(),
                connector_id,
                query_hash: self.query_hash.clone(),
                outcome: outcome.to_owned(),
                code: code.map(str::to_owned),
                reason,
                doc_ids: output.map(|o| o.doc_ids.clone()).unwrap_or_default(),
                rows: output.and_then(|o| o.rows),
                token_count: output.map_or(0, |o| (o.bytes as u64).div_ceil(4)),
                policy_snapshot_version: self.snapshot_version,
                policy_snapshot_hash: self.snapshot_hash.clone(),
                policy_id,
            }),
        );
        record.record_id.clone_from(&self.evidence_id);
        record
    }
}

/// The parameters against the template's or endpoint's declared types.
fn check_params(
    source: &aos_core::access::DataSource,
    target: &Target,
    params: &Map<String, Value>,
) -> Result<(), aos_core::access::ParamError> {
    let specs = match target {
        Target::Sql(id) => source.template(id).map(|t| t.params.as_slice()),
        Target::Http(id) => source.endpoint(id).map(|e| e.params.as_slice()),
        // MCP tool arguments are the server's schema to check.
        Target::Mcp(_) => None,
    };
    match specs {
        Some(specs) => aos_core::access::bind_params(specs, params).map(|_| ()),
        None => Ok(()),
    }
}

/// What the locked part decided.
enum Admission {
    Denied {
        status: u16,
        code: &'static str,
        message: String,
        decision: Option<Value>,
    },
    Allowed {
        source: Box<aos_core::access::DataSource>,
        credential: Option<SealedCredential>,
        decision: Value,
    },
}

impl Engine {
    /// The tenant data key pushed by the control plane, in force for
    /// opening connector credentials (see [`crate::store::AgentStore::save_data_key`]).
    pub async fn set_data_key(&self, key_id: &str, key: [u8; 32]) -> Result<(), crate::error::AgentError> {
        let current = self.data_key.read().ok().and_then(|k| k.as_ref().map(|(id, _)| id.clone()));
        if current.as_deref() == Some(key_id) {
            return Ok(());
        }
        // In force at once; persisting it may fail without taking it away.
        if let Ok(mut slot) = self.data_key.write() {
            *slot = Some((key_id.to_owned(), key));
        }
        tracing::info!(message = "tenant data key received", data_key_id = key_id);
        self.store.save_data_key(key_id, &key).await
    }

    fn open_credential(&self, source_id: &str, sealed: &SealedCredential) -> Result<Secret, ConnectorError> {
        let guard = self
            .data_key
            .read()
            .map_err(|_| ConnectorError::Credential("data key lock poisoned".to_owned()))?;
        let Some((key_id, key)) = guard.as_ref() else {
            return Err(ConnectorError::Credential(
                "this edge agent has not received its tenant's data key (does the control plane hold a master key?)"
                    .to_owned(),
            ));
        };
        if *key_id != sealed.data_key_id {
            return Err(ConnectorError::Credential(format!(
                "the credential is sealed with data key `{}`, this edge agent holds `{key_id}`",
                sealed.data_key_id
            )));
        }
        let aad = sealing::credential_aad(self.slot.tenant_id(), source_id);
        let bytes = sealing::open(key, &sealed.nonce, &aad, &sealed.ciphertext)
            .map_err(|e| ConnectorError::Credential(format!("credential of `{source_id}`: {e}")))?;
        String::from_utf8(bytes)
            .map(Secret::new)
            .map_err(|_| ConnectorError::Credential(format!("credential of `{source_id}` is not UTF-8")))
    }

    /// Mediates one governed data access. See the module docs.
    pub async fn access(&self, req: AccessRequest) -> Result<AccessAnswer, EngineError> {
        let (target, params, body) = parse(&req.action, &req.payload)?;
        let now = now_ms();
        let mut base = EvidenceBase {
            evidence_id: crate::ids::random_id("ev"),
            plane_id: req.plane.clone(),
            action: req.action.clone(),
            target: target.id().to_owned(),
            query_hash: query_hash(&req.plane, &req.action, target.id(), &params),
            snapshot_version: 0,
            snapshot_hash: String::new(),
        };
        let run_id = req.run_id.as_str();
        // A refusal by the boot guard or a stale fail-closed snapshot is an
        // attempt too: evidenced, then answered like any run call.
        let current = match self.usable_snapshot() {
            Ok(current) => current,
            Err(EngineError::Unavailable { code, message }) => {
                let run_status = self.run_status(run_id)?;
                let refused = ("DENIED", Some(code), Some(message.clone()));
                self.append(vec![base.record(self, run_id, None, refused, None, None)])?;
                self.store.flush().await?;
                return Err(EngineError::Access(Box::new(AccessError {
                    status: 503,
                    code,
                    message,
                    evidence_id: base.evidence_id,
                    run_status,
                    decision: None,
                })));
            }
            Err(other) => return Err(other),
        };
        base.snapshot_version = current.version();
        base.snapshot_hash = current.content_hash_hex();
        let (admission, mut records, run_status) = {
            let mut guard = self.lock();
            let state = &mut *guard;
            let run = state.runs.get_mut(run_id).ok_or_else(|| not_found(run_id))?;
            let mut records = Vec::new();
            let state_refusal = match require_running(run, "accessing data") {
                Ok(()) => None,
                Err(EngineError::Conflict { code, message }) => Some((code, message)),
                Err(other) => return Err(other),
            };
            let gate = match state_refusal {
                Some((code, message)) => {
                    Err(Admission::Denied { status: 409, code, message, decision: None })
                }
                None => resolve_access(&current, &run.record.scope, &req.plane, target.gate()).map_err(
                    |refusal| Admission::Denied {
                        status: 403,
                        code: refusal.code(),
                        message: refusal.to_string(),
                        decision: None,
                    },
                ),
            };
            // Parameters are checked before the decision: a malformed request
            // is not an access and counts towards no limit.
            let bad_params = gate.as_ref().ok().and_then(|r| check_params(r.source, &target, &params).err());
            let admission = match (gate, bad_params) {
                (Err(refused), _) => refused,
                (Ok(_), Some(e)) => Admission::Denied {
                    status: 400,
                    code: "INVALID_PARAMS",
                    message: e.to_string(),
                    decision: None,
                },
                (Ok(resolved), None) => {
                    let step = StepInput {
                        phase: StepPhase::DataAccess,
                        data_access: Some(DataAccess { plane_id: req.plane.clone(), kind: resolved.kind }),
                        ..StepInput::default()
                    };
                    let decision = self.decide_for(run, &state.counters, &current, &step, now);
                    let enforced = self.enforce(&decision);
                    let allowed = matches!(enforced.outcome, Action::Continue | Action::Warn);
                    if allowed && resolved.kind == DataAccessKind::DatabaseQuery {
                        let query = Usage { db_queries: 1, ..Usage::default() };
                        state.counters.add(run_id, run.record.scope.session_id.as_deref(), &query, now);
                        run.record.usage.add(&query);
                    }
                    records.extend(self.apply_outcome(run, &decision, &enforced, None, "DATA_ACCESS", now));
                    let summary = json!({
                        "outcome": enforced.outcome.as_str(),
                        "policy_id": decision.winning_policy.as_ref().map(|w| w.policy_id.to_string()),
                        "reasons": decision.reasons(),
                        "governance": enforced.annotation,
                    });
                    if allowed {
                        Admission::Allowed {
                            source: Box::new(resolved.source.clone()),
                            credential: current.snapshot().credential(&resolved.source.source_id).cloned(),
                            decision: summary,
                        }
                    } else {
                        Admission::Denied {
                            status: 403,
                            code: "POLICY_DENIED",
                            message: format!(
                                "{} by policy: {}",
                                enforced.outcome.as_str(),
                                decision.reasons().join("; ")
                            ),
                            decision: Some(summary),
                        }
                    }
                }
            };
            run.record.updated_at_ms = now;
            records.extend(self.save_run(run)?);
            (admission, records, status_str(run.record.status))
        };
        let (source, credential, decision) = match admission {
            Admission::Denied { status, code, message, decision } => {
                let policy_id = decision.as_ref().and_then(|d| d["policy_id"].as_str().map(str::to_owned));
                records.push(base.record(
                    self,
                    run_id,
                    None,
                    ("DENIED", Some(code), Some(message.clone())),
                    policy_id,
                    None,
                ));
                self.append(records)?;
                self.store.flush().await?;
                tracing::info!(message = "data access denied", run_id, plane = %req.plane, code);
                return Err(EngineError::Access(Box::new(AccessError {
                    status,
                    code,
                    message,
                    evidence_id: base.evidence_id,
                    run_status,
                    decision,
                })));
            }
            Admission::Allowed { source, credential, decision } => (source, credential, decision),
        };
        let result = self.execute(&source, credential.as_ref(), &target, &params, body).await;
        let connector_id = Some(source.source_id.clone());
        let policy_id = decision["policy_id"].as_str().map(str::to_owned);
        match result {
            Ok(output) => {
                records.push(base.record(
                    self,
                    run_id,
                    connector_id,
                    ("ALLOWED", None, None),
                    policy_id,
                    Some(&output),
                ));
                self.append(records)?;
                self.store.flush().await?;
                if let Some(run) = self.lock().runs.get_mut(run_id) {
                    run.passages.add(&output.data, &base.evidence_id);
                }
                Ok(AccessAnswer {
                    evidence_id: base.evidence_id,
                    plane_id: req.plane,
                    source_id: source.source_id,
                    data: output.data,
                    doc_ids: output.doc_ids,
                    rows: output.rows,
                    truncated: output.truncated,
                    run_status,
                    decision,
                })
            }
            Err(e) => {
                let reason = e.to_string();
                records.push(base.record(
                    self,
                    run_id,
                    connector_id,
                    ("FAILED", Some(e.code()), Some(reason.clone())),
                    policy_id,
                    None,
                ));
                self.append(records)?;
                self.store.flush().await?;
                tracing::warn!(message = "data access failed", run_id, plane = %req.plane, code = e.code(), error = %reason);
                let status = match &e {
                    ConnectorError::Param { .. } => 400,
                    ConnectorError::Timeout { .. } => 504,
                    _ => 502,
                };
                Err(EngineError::Access(Box::new(AccessError {
                    status,
                    code: e.code(),
                    message: reason,
                    evidence_id: base.evidence_id,
                    run_status,
                    decision: Some(decision),
                })))
            }
        }
    }

    async fn execute(
        &self,
        source: &aos_core::access::DataSource,
        credential: Option<&SealedCredential>,
        target: &Target,
        params: &Map<String, Value>,
        body: Option<Value>,
    ) -> Result<Output, ConnectorError> {
        let secret = credential.map(|c| self.open_credential(&source.source_id, c)).transpose()?;
        match target {
            Target::Sql(id) => {
                let template = source.template(id).ok_or_else(|| ConnectorError::Config {
                    source_id: source.source_id.clone(),
                    problem: format!("has no template `{id}`"),
                })?;
                self.connectors.query(source, template, params, secret.as_ref()).await
            }
            Target::Http(id) => {
                let endpoint = source.endpoint(id).ok_or_else(|| ConnectorError::Config {
                    source_id: source.source_id.clone(),
                    problem: format!("has no endpoint `{id}`"),
                })?;
                self.connectors.request(source, endpoint, params, body, secret.as_ref()).await
            }
            Target::Mcp(tool) => self.connectors.call_tool(source, tool, params, secret.as_ref()).await,
        }
    }
}
