//! A real MCP server over stdio, built with `rmcp`'s server side, for the
//! data-access tests (issue 6, GAP-063). It offers an allowed tool and a
//! dangerous one, and appends every call it receives to the file given as
//! `--log PATH`, so a test can prove a refused call never reached it.

use std::io::Write;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{ServerCapabilities, ServerConfig};
use rmcp::transport::stdio;
use rmcp::{ServerHandler, ServiceExt, schemars, tool, tool_handler, tool_router};
use serde_json::json;

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

fn record(tool: &str) {
    let mut args = std::env::args().skip_while(|a| a != "--log").skip(1);
    if let Some(path) = args.next()
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
    fn lookup_order(&self, Parameters(LookupRequest { order_id }): Parameters<LookupRequest>) -> String {
        record("lookup_order");
        // Says whether a credential arrived, never what it is.
        let credential = std::env::var("AOS_CONNECTOR_CREDENTIAL").is_ok_and(|c| c == "mcp-token-31");
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
    let service = Orders::new().serve(stdio()).await?;
    service.waiting().await?;
    Ok(())
}
