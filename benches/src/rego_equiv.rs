//! The scenario's decision expressed in Rego v1, evaluated with `regorus`.
//!
//! The module ([`REGO_MODULE`], package `aos`) is idiomatic Rego v1: the
//! scenario policies are loaded once as `data.policies` (via
//! `Engine::add_data`), each step's request is the `input`, and the rule
//! `data.aos.decision` yields `{"deny", "winning_policy", "breaching"}`.
//!
//! Evaluation strategy ([`RegoEquivalent`]): the module and data are parsed,
//! loaded and prepared once (a warm-up evaluation runs the analysis /
//! scheduling / loop-hoisting pass in [`RegoEquivalent::new`]). Per call we
//! build the `input` as a `Value` straight from the request (no JSON text round
//! trip), `set_input` on the prepared engine and `eval_rule`; `eval_rule`
//! resets the interpreter's per-evaluation state itself. `Engine::eval_rule`
//! needs `&mut self`, so the engine sits behind a `Mutex` (uncontended here).
//! This was the fastest in a release-mode timing loop, though only narrowly:
//! cloning the prepared engine per call (the clone itself is ~0.2 µs; calls
//! were 3-10 % slower at N = 1..10 and the same at N = 1000) and
//! `CompiledPolicy::eval_with_input` (builds an engine per call; 0-10 % slower).
//!
//! [`RegoVmEquivalent`] runs the *same* module on regorus' bytecode VM (RVM,
//! cargo feature `rvm`), which was about 3x faster than the interpreter here;
//! benchmark both if you want regorus' best case as well as its classic
//! `Engine` path.

use std::sync::{Arc, Mutex, PoisonError};

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::{Program, RegoVM};
use regorus::{Engine, Value};

use crate::error::EquivError;
use crate::scenario::{ScenarioOutcome, ScenarioPolicy, ScenarioRequest};

/// The Rego module, package `aos`.
pub const REGO_MODULE: &str = r#"package aos

# data.policies: [{"id", "agent_ids", "max_run_tokens", "max_run_cost_micros"}]
# input: {"agent_id", "run_tokens_after_step", "run_cost_micros_after_step"}

# An empty agent list scopes a policy to all runs.
applies(policy) if count(policy.agent_ids) == 0

applies(policy) if input.agent_id in policy.agent_ids

over_limit(policy) if input.run_tokens_after_step > policy.max_run_tokens

over_limit(policy) if input.run_cost_micros_after_step > policy.max_run_cost_micros

breaching contains policy.id if {
	some policy in data.policies
	applies(policy)
	over_limit(policy)
}

deny := count(breaching) > 0

# Most restrictive wins; ties go to the lowest policy id.
default winning_policy := null

winning_policy := min(breaching) if deny

decision := {
	"deny": deny,
	"winning_policy": winning_policy,
	"breaching": count(breaching),
}
"#;

/// The rule evaluated per call.
const DECISION_RULE: &str = "data.aos.decision";

/// A prepared regorus engine (interpreter) equivalent to a scenario policy list.
#[derive(Debug)]
pub struct RegoEquivalent {
    engine: Mutex<Engine>,
    keys: Keys,
}

/// Object keys built once and shared (`Value::String` is reference counted).
#[derive(Debug)]
struct Keys {
    agent_id: Value,
    tokens: Value,
    cost: Value,
    deny: Value,
    winning_policy: Value,
    breaching: Value,
}

impl Keys {
    fn new() -> Self {
        Self {
            agent_id: Value::from("agent_id"),
            tokens: Value::from("run_tokens_after_step"),
            cost: Value::from("run_cost_micros_after_step"),
            deny: Value::from("deny"),
            winning_policy: Value::from("winning_policy"),
            breaching: Value::from("breaching"),
        }
    }
}

/// `data` for the module: `{"policies": [...]}`.
fn policies_data(policies: &[ScenarioPolicy]) -> Value {
    let list = policies
        .iter()
        .map(|p| {
            serde_json::json!({
                "id": p.id,
                "agent_ids": p.agent_ids,
                "max_run_tokens": p.max_run_tokens,
                "max_run_cost_micros": p.max_run_cost_micros,
            })
        })
        .collect::<Vec<_>>();
    Value::from(serde_json::json!({ "policies": list }))
}

impl RegoEquivalent {
    /// Loads the module and the policies as data, and prepares the engine.
    pub fn new(policies: &[ScenarioPolicy]) -> Result<Self, EquivError> {
        let mut engine = Engine::new();
        engine
            .add_policy("aos.rego".to_owned(), REGO_MODULE.to_owned())
            .map_err(|e| EquivError::rego("add_policy", e))?;
        engine.add_data(policies_data(policies)).map_err(|e| EquivError::rego("add_data", e))?;
        // Warm-up: the first evaluation analyses and schedules the module; the
        // engine keeps that prepared state for every later call.
        engine.set_input(Value::new_object());
        engine.eval_rule(DECISION_RULE.to_owned()).map_err(|e| EquivError::rego("warm-up eval_rule", e))?;
        Ok(Self { engine: Mutex::new(engine), keys: Keys::new() })
    }

    /// Evaluates `data.aos.decision` for `req` on the prepared engine.
    pub fn decide(&self, req: &ScenarioRequest) -> Result<ScenarioOutcome, EquivError> {
        let input = build_input(&self.keys, req)?;
        let decision = {
            let mut engine = self.engine.lock().unwrap_or_else(PoisonError::into_inner);
            engine.set_input(input);
            engine.eval_rule(DECISION_RULE.to_owned()).map_err(|e| EquivError::rego("eval_rule", e))?
        };
        read_outcome(&self.keys, &decision)
    }
}

/// `input` for one request, built directly as a regorus `Value`.
fn build_input(keys: &Keys, req: &ScenarioRequest) -> Result<Value, EquivError> {
    let mut input = Value::new_object();
    let object = input.as_object_mut().map_err(|e| EquivError::rego("input object", e))?;
    object.insert(keys.agent_id.clone(), Value::from(req.agent_id.as_str()));
    object.insert(keys.tokens.clone(), Value::from(req.run_tokens_after_step));
    object.insert(keys.cost.clone(), Value::from(req.run_cost_micros_after_step));
    Ok(input)
}

/// Maps `{"deny", "winning_policy", "breaching"}` to the outcome.
fn read_outcome(keys: &Keys, decision: &Value) -> Result<ScenarioOutcome, EquivError> {
    let unexpected = || EquivError::UnexpectedDecision(decision.to_string());
    let deny = *decision[&keys.deny].as_bool().map_err(|_| unexpected())?;
    let winning_policy = match &decision[&keys.winning_policy] {
        Value::Null => None,
        Value::String(id) => Some(id.as_ref().to_owned()),
        _ => return Err(unexpected()),
    };
    let breaching = decision[&keys.breaching]
        .as_u64()
        .ok()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(unexpected)?;
    Ok(ScenarioOutcome { deny, winning_policy, breaching })
}

/// The same module and data, compiled to regorus' bytecode VM (RVM) instead of
/// being run by the tree-walking interpreter behind `Engine::eval_rule`.
///
/// `Engine` still parses the module and compiles the entry point
/// (`compile_with_entrypoint`); `Compiler::compile_from_policy` lowers that to
/// an RVM `Program` once. `RegoVM::execute` needs `&mut self` and `RegoVM` is
/// not `Clone`, so one VM is kept behind a `Mutex` (uncontended in the
/// benchmarks) with program and data loaded once; per call only the input is
/// set. The VM resets its evaluation state on every `execute`.
#[derive(Debug)]
pub struct RegoVmEquivalent {
    vm: Mutex<RegoVM>,
    keys: Keys,
}

/// RVM's default budget (25 000 instructions) is too small for 1000 policies.
const RVM_MAX_INSTRUCTIONS: usize = 100_000_000;

impl RegoVmEquivalent {
    /// Parses the module, compiles `data.aos.decision` to RVM bytecode and
    /// loads program and data into a VM.
    pub fn new(policies: &[ScenarioPolicy]) -> Result<Self, EquivError> {
        let data = policies_data(policies);
        let mut engine = Engine::new();
        engine
            .add_policy("aos.rego".to_owned(), REGO_MODULE.to_owned())
            .map_err(|e| EquivError::rego("add_policy", e))?;
        engine.add_data(data.clone()).map_err(|e| EquivError::rego("add_data", e))?;
        let compiled = engine
            .compile_with_entrypoint(&DECISION_RULE.into())
            .map_err(|e| EquivError::rego("compile_with_entrypoint", e))?;
        let program: Arc<Program> = Compiler::compile_from_policy(&compiled, &[DECISION_RULE])
            .map_err(|e| EquivError::rego("compile_from_policy", e))?;
        let mut vm = RegoVM::new();
        vm.set_max_instructions(RVM_MAX_INSTRUCTIONS);
        vm.load_program(program);
        vm.set_data(data).map_err(|e| EquivError::rego("set_data", e))?;
        Ok(Self { vm: Mutex::new(vm), keys: Keys::new() })
    }

    /// Executes the program for `req`.
    pub fn decide(&self, req: &ScenarioRequest) -> Result<ScenarioOutcome, EquivError> {
        let input = build_input(&self.keys, req)?;
        let decision = {
            let mut vm = self.vm.lock().unwrap_or_else(PoisonError::into_inner);
            vm.set_input(input);
            vm.execute().map_err(|e| EquivError::rego("execute", e))?
        };
        read_outcome(&self.keys, &decision)
    }
}
