//! A real MCP server built with `rmcp`'s server side, for the data-access
//! tests (issue 6, GAP-063): over stdio by default, or over streamable HTTP
//! at `/mcp` with `--http ADDR` (it prints the address it bound, one line on
//! stdout). It offers an allowed tool and a dangerous one, and appends every
//! call it receives to the file given as `--log PATH`, so a test can prove a
//! refused call never reached it.
//!
//! `lookup_order` says whether the expected credential arrived (never what
//! arrived): over stdio in `AOS_CONNECTOR_CREDENTIAL`, over HTTP as
//! `Authorization: Bearer mcp-token-31`.

use std::io::Write;
use std::sync::Arc;

use axum::http::request::Parts;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::service::RequestContext;
use rmcp::transport::stdio;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleServer, ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router};
use serde_json::json;

/// The credential the tests set on the source.
const EXPECTED: &str = "mcp-token-31";

#[derive(Debug, serde::Deserialize, schemars::JsonSchema)]
struct LookupRequest {
    /// The order.
    order_id: String,
}

#[derive(Debug, Clone)]
struct Orders {
    #[expect(dead_code, reason = "tool_handler reads the router")]
    tool_router: ToolRouter<Self>,
}

fn arg(name: &str) -> Option<String> {
    std::env::args().skip_while(|a| a != name).nth(1)
}

fn record(tool: &str) {
    if let Some(path) = arg("--log")
        && let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(path)
    {
        let _ = writeln!(file, "{tool}");
    }
}

#[tool_router]
impl Orders {
    fn new() -> Self {
        Orders { tool_router: Self::tool_router() }
    }

    #[tool(description = "Look up one order by id")]
    fn lookup_order(
        &self,
        Parameters(LookupRequest { order_id }): Parameters<LookupRequest>,
        context: RequestContext<RoleServer>,
    ) -> String {
        record("lookup_order");
        // Over HTTP rmcp hands the request's parts to the tool.
        if let Some(parts) = context.extensions.get::<Parts>() {
            let authorization = parts.headers.get("authorization").and_then(|v| v.to_str().ok());
            let credential = authorization == Some(&format!("Bearer {EXPECTED}"));
            // Whether the token also travelled somewhere it must not.
            let in_url = parts.uri.to_string().contains(EXPECTED);
            return json!({"id": order_id, "status": "shipped", "credential_ok": credential, "token_in_url": in_url})
                .to_string();
        }
        let credential = std::env::var("AOS_CONNECTOR_CREDENTIAL").is_ok_and(|c| c == EXPECTED);
        // Which variables the server was started with (names only).
        let mut env: Vec<String> = std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()).collect();
        env.sort();
        json!({"id": order_id, "status": "shipped", "credential_ok": credential, "env": env}).to_string()
    }

    #[tool(description = "Delete every order (must never be reachable through AOS)")]
    fn delete_all_orders(&self) -> String {
        record("delete_all_orders");
        "deleted".to_owned()
    }
}

#[tool_handler]
impl ServerHandler for Orders {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(addr) = arg("--http") else {
        let service = Orders::new().serve(stdio()).await?;
        service.waiting().await?;
        return Ok(());
    };
    let service = StreamableHttpService::new(
        || Ok(Orders::new()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let router = axum::Router::new().nest_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{}", listener.local_addr()?)?;
    stdout.flush()?;
    axum::serve(listener, router).await?;
    Ok(())
}
