//! Governed data access (seed §7.11, §7.15; GAP-036..066): the data-source
//! catalogue a snapshot carries, SQL template compilation, and the plane
//! gate that decides *whether* a run may touch a knowledge plane before the
//! evaluator decides *how much*.
//!
//! The workload names a plane, an action and parameters; everything else —
//! which source, which URL, which statement, which credential — comes from
//! here. There is no way to express raw SQL, a free URL or an arbitrary
//! tool (GAP-066).
//!
//! Credentials travel sealed ([`SealedCredential`]); this crate only holds
//! the AEAD primitive ([`sealing`]) so that both sides seal and open the
//! same way. Nonces come in from the caller: core reads no randomness.

mod gate;
mod model;
pub mod sealing;
mod templates;
#[cfg(test)]
mod tests;

pub use gate::{AccessRefusal, AccessTarget, ResolvedAccess, resolve_access};
pub use model::{
    AssetType, DataSource, HttpConnector, HttpEndpoint, HttpMethod, McpConnector, ParamSpec, ParamType,
    SealedCredential, SourceCredential, SourceStatus, SqlConnector, SqlEngine, SqlTemplate,
};
pub use templates::{
    CompiledTemplate, ParamError, ParamValue, bind_params, compile_template, path_params, render_http_target,
};

pub(crate) use model::check_sources;
