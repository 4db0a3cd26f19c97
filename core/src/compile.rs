//! Validation and compilation of policies.
//!
//! [`compile_policy`] is the single place that decides whether a [`Policy`] is
//! valid: it either produces a [`CompiledPolicy`] with typed thresholds and
//! counter keys, or reports every problem with its field path. Documents,
//! the control plane's write path and snapshot loading all go through it, so
//! a snapshot can never carry a policy the evaluator would misread.

use crate::counters::{CounterKey, CounterWindow, Metric};
use crate::error::FieldError;
use crate::money::MicroUsd;
use crate::path::FieldPath;
use crate::pii::PiiKinds;
use crate::policy::{
    Action, ActionConfig, BindAt, FailureMode, InspectionConstraints, LimitSignal, LimitWindow,
    NotifyChannel, Policy, PolicyStatus, Scope, ScopeType,
};

/// Largest count a limit may name (tokens, requests, queries).
pub const MAX_COUNT: f64 = 1e18;
/// Longest temporal window: 366 days.
pub const MAX_WINDOW_SECONDS: u64 = 366 * 24 * 60 * 60;
/// Longest policy or plane id.
pub const MAX_ID_LEN: usize = 128;

/// A policy ready for evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledPolicy {
    /// The policy id, shared with every signal that names it.
    pub id: std::sync::Arc<str>,
    /// The policy version.
    pub version: u64,
    /// Binding moment (GAP-031).
    pub bind_at: BindAt,
    /// Failure mode (GAP-035).
    pub failure_mode: FailureMode,
    /// Winner credit among equally restrictive outcomes.
    pub precedence: u32,
    /// Near/breach outcomes.
    pub actions: ActionConfig,
    /// Numeric limits.
    pub limits: Vec<CompiledLimit>,
    /// Retrieval rule when RAG access is monitored.
    pub rag: Option<RagRule>,
    /// PII kinds that breach, when PII is monitored.
    pub pii: Option<PiiKinds>,
    /// Hallucination rule, when monitored.
    pub hallucination: Option<HallucinationRule>,
    /// Near tiers in percent, ascending; empty when near alerts are off.
    pub tiers: Vec<u8>,
    /// Alert channels.
    pub notify: Vec<NotifyChannel>,
    /// Inspection constraints (GAP-033).
    pub inspection: InspectionConstraints,
}

/// A numeric limit with its counter and integer threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompiledLimit {
    /// Position in the policy's `limits`.
    pub index: u32,
    /// What is limited.
    pub signal: LimitSignal,
    /// The counter it reads.
    pub counter: CounterKey,
    /// Breach when the value exceeds this (tokens, micro-USD, micro-USD per
    /// hour, or a count).
    pub threshold: u64,
}

/// Retrieval rule (GAP-006, GAP-009, GAP-042).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RagRule {
    /// `false` when a `RAG_ACCESS` limit forbids retrieval.
    pub allowed: bool,
    /// Allowed plane ids, sorted; empty means no plane restriction.
    pub planes: Vec<String>,
}

/// Hallucination rule (GAP-023, INV-002).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HallucinationRule {
    /// Threshold in thousandths (0..=1000).
    pub threshold_permille: u64,
    /// Opted in to blocking.
    pub blocking: bool,
}

/// Checks one policy, reporting errors under `path` (e.g. `policies[2]`).
pub fn validate_policy(policy: &Policy, path: &str) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    compile_policy(policy, path, &mut errors);
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// Validates and compiles one policy; problems are appended to `errors` with
/// paths under `path`. Returns `None` when anything was wrong.
pub fn compile_policy(policy: &Policy, path: &str, errors: &mut Vec<FieldError>) -> Option<CompiledPolicy> {
    compile_policy_at(policy, &FieldPath::text(path), errors)
}

pub(crate) fn compile_policy_at(
    policy: &Policy,
    path: &FieldPath<'_>,
    errors: &mut Vec<FieldError>,
) -> Option<CompiledPolicy> {
    let before = errors.len();
    let at = |field: &'static str| path.field(field);

    check_id(&policy.id, &at("id"), errors);
    if policy.name.trim().is_empty() {
        errors.push(FieldError::at(&at("name"), "must not be empty"));
    }
    if policy.version == 0 {
        errors.push(FieldError::at(&at("version"), "must be at least 1"));
    }
    if policy.status.requires_reason() && policy.status_reason.as_deref().is_none_or(|r| r.trim().is_empty())
    {
        errors
            .push(FieldError::at(&at("status_reason"), format!("required when status is {}", policy.status)));
    }
    check_scope(&policy.scope, &at("scope"), errors);

    let limits = compile_limits(policy, path, errors);
    let rag = compile_rag(policy, path, errors);

    let pii = policy.monitors.pii.enabled.then(|| {
        if policy.monitors.pii.kinds.is_empty() {
            crate::pii::PiiKind::ALL.into_iter().collect::<PiiKinds>()
        } else {
            policy.monitors.pii.kinds.iter().copied().collect()
        }
    });

    let h = &policy.monitors.hallucination;
    let hallucination = if h.enabled {
        if h.threshold.is_finite() && (0.0..=1.0).contains(&h.threshold) {
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "checked to be in 0..=1"
            )]
            let threshold_permille = (h.threshold * 1000.0).round() as u64;
            Some(HallucinationRule { threshold_permille, blocking: h.blocking })
        } else {
            errors.push(FieldError::at(
                &at("monitors.hallucination.threshold"),
                format!("must be between 0.0 and 1.0, got {}", h.threshold),
            ));
            None
        }
    } else {
        None
    };

    let tiers = compile_tiers(policy, path, errors);
    check_unique(&policy.alerts.notify, &at("alerts.notify"), errors);
    check_actions(&policy.actions, &at("actions"), errors);

    if errors.len() != before {
        return None;
    }
    Some(CompiledPolicy {
        id: std::sync::Arc::from(policy.id.as_str()),
        version: policy.version,
        bind_at: policy.bind_at,
        failure_mode: policy.failure_mode,
        precedence: policy.precedence,
        actions: policy.actions.clone(),
        limits,
        rag,
        pii,
        hallucination,
        tiers,
        notify: policy.alerts.notify.clone(),
        inspection: policy.monitors.inspection,
    })
}

/// What is wrong with `id`, if anything. Ids are short, printable and free
/// of whitespace so they are safe in paths, logs and metrics labels; every
/// crate that accepts ids uses this one rule.
pub fn id_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        Some("must not be empty".to_owned())
    } else if id.len() > MAX_ID_LEN {
        Some(format!("must be at most {MAX_ID_LEN} bytes, got {}", id.len()))
    } else {
        id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))).map(|c| {
            format!("invalid character {c:?} in {id:?} (allowed: letters, digits, '-', '_', '.', ':')")
        })
    }
}

pub(crate) fn check_id(id: &str, path: &FieldPath<'_>, errors: &mut Vec<FieldError>) {
    if let Some(problem) = id_problem(id) {
        errors.push(FieldError::at(path, problem));
    }
}

pub(crate) fn check_scope(scope: &Scope, path: &FieldPath<'_>, errors: &mut Vec<FieldError>) {
    let ids_path = path.field("ids");
    match scope.scope_type {
        ScopeType::AllRuns => {
            if !scope.ids.is_empty() {
                errors.push(FieldError::at(&ids_path, "must be empty for ALL_RUNS"));
            }
        }
        ScopeType::Tenant => {}
        other => {
            if scope.ids.is_empty() {
                errors.push(FieldError::at(
                    &ids_path.clone(),
                    format!("must list at least one id for {}", other.as_str()),
                ));
            }
        }
    }
    for (i, id) in scope.ids.iter().enumerate() {
        check_id(id, &ids_path.index(i), errors);
    }
    check_unique(&scope.ids, &ids_path, errors);
}

fn check_unique<T: PartialEq + std::fmt::Debug>(
    items: &[T],
    path: &FieldPath<'_>,
    errors: &mut Vec<FieldError>,
) {
    for (i, item) in items.iter().enumerate() {
        if items[..i].contains(item) {
            errors.push(FieldError::at(&path.index(i), format!("duplicate value {item:?}")));
        }
    }
}

fn compile_limits(policy: &Policy, path: &FieldPath<'_>, errors: &mut Vec<FieldError>) -> Vec<CompiledLimit> {
    let mut out = Vec::with_capacity(policy.limits.len());
    let limits_path = path.field("limits");
    for (i, limit) in policy.limits.iter().enumerate() {
        let limit_path = limits_path.index(i);
        let at = |field: &'static str| limit_path.field(field);
        let signal = limit.signal;
        let monitored = match signal {
            LimitSignal::Tokens => policy.monitors.tokens,
            LimitSignal::CostUsd => policy.monitors.cost,
            LimitSignal::BurnRateUsdPerHour => policy.monitors.burn_rate,
            LimitSignal::Requests => policy.monitors.requests,
            LimitSignal::DbQueries => policy.monitors.db_queries,
            LimitSignal::RagAccess => policy.monitors.rag_access.enabled,
        };
        if !monitored {
            let monitor = match signal {
                LimitSignal::Tokens => "monitors.tokens",
                LimitSignal::CostUsd => "monitors.cost",
                LimitSignal::BurnRateUsdPerHour => "monitors.burn_rate",
                LimitSignal::Requests => "monitors.requests",
                LimitSignal::DbQueries => "monitors.db_queries",
                LimitSignal::RagAccess => "monitors.rag_access.enabled",
            };
            errors.push(FieldError::at(&
                at("signal"),
                format!("{} is not monitored; set {monitor} to true (a signal that is not monitored cannot trigger a limit)", signal.as_str()),
            ));
        }

        if signal == LimitSignal::RagAccess {
            if limit.allowed.is_none() {
                errors.push(FieldError::at(&at("allowed"), "required for RAG_ACCESS"));
            }
            for (field, present) in [
                ("max", limit.max.is_some()),
                ("window", limit.window.is_some()),
                ("period", limit.period.is_some()),
                ("window_seconds", limit.window_seconds.is_some()),
            ] {
                if present {
                    errors.push(FieldError::at(&at(field), "not used by RAG_ACCESS (use `allowed`)"));
                }
            }
            continue;
        }
        if limit.allowed.is_some() {
            errors.push(FieldError::at(
                &at("allowed"),
                format!("only RAG_ACCESS uses `allowed`, not {}", signal.as_str()),
            ));
        }

        let threshold = match limit.max {
            None => {
                errors.push(FieldError::at(&at("max"), format!("required for {}", signal.as_str())));
                None
            }
            Some(max) => compile_threshold(signal, max, &at("max"), errors),
        };
        let window =
            compile_window(limit, signal, &at("window"), &at("period"), &at("window_seconds"), errors);

        if let (Some(threshold), Some(window)) = (threshold, window) {
            let metric = match signal {
                LimitSignal::Tokens => Metric::Tokens,
                LimitSignal::CostUsd | LimitSignal::BurnRateUsdPerHour => Metric::CostMicros,
                LimitSignal::Requests => Metric::Requests,
                LimitSignal::DbQueries | LimitSignal::RagAccess => Metric::DbQueries,
            };
            #[expect(
                clippy::cast_possible_truncation,
                reason = "a policy with 2^32 limits is rejected long before"
            )]
            out.push(CompiledLimit {
                index: i as u32,
                signal,
                counter: CounterKey { metric, window },
                threshold,
            });
        }
    }
    out
}

fn compile_threshold(
    signal: LimitSignal,
    max: f64,
    path: &FieldPath<'_>,
    errors: &mut Vec<FieldError>,
) -> Option<u64> {
    if !max.is_finite() {
        errors.push(FieldError::at(path, "must be a finite number"));
        return None;
    }
    if max < 0.0 {
        errors.push(FieldError::at(path, format!("must not be negative, got {max}")));
        return None;
    }
    match signal {
        LimitSignal::CostUsd | LimitSignal::BurnRateUsdPerHour => match MicroUsd::from_usd(max) {
            Ok(m) => Some(m.0),
            Err(e) => {
                errors.push(FieldError::at(path, e.to_string()));
                None
            }
        },
        _ => {
            if max.fract() != 0.0 {
                errors.push(FieldError::at(
                    path,
                    format!("must be a whole number for {}, got {max}", signal.as_str()),
                ));
                None
            } else if max > MAX_COUNT {
                errors.push(FieldError::at(path, format!("must be at most 1e18, got {max}")));
                None
            } else {
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "whole, non-negative, at most 1e18"
                )]
                Some(max as u64)
            }
        }
    }
}

fn compile_window(
    limit: &crate::policy::Limit,
    signal: LimitSignal,
    window_path: &FieldPath<'_>,
    period_path: &FieldPath<'_>,
    seconds_path: &FieldPath<'_>,
    errors: &mut Vec<FieldError>,
) -> Option<CounterWindow> {
    let Some(window) = limit.window else {
        errors.push(FieldError::at(
            window_path,
            format!("required for {} (PER_RUN, PER_SESSION or TEMPORAL)", signal.as_str()),
        ));
        return None;
    };
    let needs_temporal = matches!(signal, LimitSignal::Requests | LimitSignal::BurnRateUsdPerHour);
    if needs_temporal && window != LimitWindow::Temporal {
        errors.push(FieldError::at(
            window_path,
            format!("{} is a rate and needs window TEMPORAL", signal.as_str()),
        ));
        return None;
    }
    if window != LimitWindow::Temporal {
        let mut ok = true;
        if limit.period.is_some() {
            errors.push(FieldError::at(period_path, "only used with window TEMPORAL"));
            ok = false;
        }
        if limit.window_seconds.is_some() {
            errors.push(FieldError::at(seconds_path, "only used with window TEMPORAL"));
            ok = false;
        }
        if !ok {
            return None;
        }
        return Some(if window == LimitWindow::PerRun {
            CounterWindow::PerRun
        } else {
            CounterWindow::PerSession
        });
    }
    match (limit.period, limit.window_seconds) {
        (Some(_), Some(_)) => {
            errors.push(FieldError::at(seconds_path, "give either `period` or `window_seconds`, not both"));
            None
        }
        (None, None) => {
            errors.push(FieldError::at(
                window_path,
                "TEMPORAL needs `period` (HOURLY, DAILY, MONTHLY) or `window_seconds`",
            ));
            None
        }
        (Some(period), None) => {
            if signal == LimitSignal::BurnRateUsdPerHour {
                errors.push(FieldError::at(
                    period_path,
                    "BURN_RATE_USD_PER_HOUR uses a rolling `window_seconds`, not a calendar period",
                ));
                return None;
            }
            Some(CounterWindow::Calendar(period))
        }
        (None, Some(seconds)) => {
            if seconds == 0 || seconds > MAX_WINDOW_SECONDS {
                errors.push(FieldError::at(
                    seconds_path,
                    format!("must be between 1 and {MAX_WINDOW_SECONDS}, got {seconds}"),
                ));
                return None;
            }
            Some(CounterWindow::Rolling { seconds })
        }
    }
}

fn compile_rag(policy: &Policy, path: &FieldPath<'_>, errors: &mut Vec<FieldError>) -> Option<RagRule> {
    let monitor = &policy.monitors.rag_access;
    let planes_path = path.field("monitors.rag_access.allowed_planes");
    for (i, plane) in monitor.allowed_planes.iter().enumerate() {
        check_id(plane, &planes_path.index(i), errors);
    }
    check_unique(&monitor.allowed_planes, &planes_path, errors);
    if !monitor.enabled {
        if !monitor.allowed_planes.is_empty() {
            errors.push(FieldError::at(
                &planes_path,
                "set monitors.rag_access.enabled to true to restrict planes",
            ));
        }
        return None;
    }
    let allowed = policy
        .limits
        .iter()
        .filter(|l| l.signal == LimitSignal::RagAccess)
        .all(|l| l.allowed.unwrap_or(true));
    let mut planes = monitor.allowed_planes.clone();
    planes.sort();
    Some(RagRule { allowed, planes })
}

fn compile_tiers(policy: &Policy, path: &FieldPath<'_>, errors: &mut Vec<FieldError>) -> Vec<u8> {
    let tiers_path = path.field("alerts.tiers");
    for (i, tier) in policy.alerts.tiers.iter().enumerate() {
        if !(1..=99).contains(tier) {
            errors.push(FieldError::at(
                &tiers_path.index(i),
                format!("must be a percentage between 1 and 99, got {tier}"),
            ));
        }
    }
    check_unique(&policy.alerts.tiers, &tiers_path, errors);
    if !policy.alerts.near_threshold {
        return Vec::new();
    }
    let mut tiers = policy.alerts.tiers.clone();
    tiers.sort_unstable();
    tiers
}

fn check_actions(actions: &ActionConfig, path: &FieldPath<'_>, errors: &mut Vec<FieldError>) {
    if actions.on_near > actions.on_breach {
        errors.push(FieldError::at(
            &path.field("on_near"),
            format!("{} is more restrictive than on_breach {}", actions.on_near, actions.on_breach),
        ));
    }
    if actions.on_near == Action::Kill {
        errors.push(FieldError::at(&path.field("on_near"), "KILL is only allowed on breach"));
    }
}

/// Whether a policy may appear in a snapshot: only `ACTIVE` policies enforce.
pub(crate) fn is_enforceable(policy: &Policy) -> bool {
    policy.status == PolicyStatus::Active
}
