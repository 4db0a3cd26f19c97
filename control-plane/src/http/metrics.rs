//! `GET /metrics`: Prometheus text exposition of the node's Raft and state
//! gauges. Unauthenticated like most scrape targets; it exposes counts and
//! indices only, never tenant names or ids.

use std::fmt::Write as _;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use openraft::ServerState;

use crate::node::Node;

pub(super) fn routes() -> Router<Node> {
    Router::new().route("/metrics", get(metrics))
}

fn gauge(out: &mut String, name: &str, help: &str, node_id: u64, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
    let _ = writeln!(out, "{name}{{node_id=\"{node_id}\"}} {value}");
}

fn counter(out: &mut String, name: &str, help: &str, node_id: u64, value: u64) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    let _ = writeln!(out, "{name}{{node_id=\"{node_id}\"}} {value}");
}

async fn metrics(State(node): State<Node>) -> Response {
    let m = node.raft().metrics().borrow().clone();
    let id = node.id();
    let (tenants, audit_entries, agents, nacking) = node.state().read(|s| {
        let agents = s.0.edge_agents();
        (s.0.tenants().count(), s.0.audit().len(), agents.agents(None).count(), agents.nacking().count())
    });
    let mut out = String::new();
    gauge(&mut out, "aos_cp_raft_term", "Current Raft term.", id, m.current_term);
    gauge(
        &mut out,
        "aos_cp_raft_is_leader",
        "1 when this node is the leader.",
        id,
        u64::from(m.state == ServerState::Leader),
    );
    gauge(
        &mut out,
        "aos_cp_raft_has_leader",
        "1 when this node knows a leader.",
        id,
        u64::from(m.current_leader.is_some()),
    );
    gauge(
        &mut out,
        "aos_cp_raft_quorum_contact",
        "1 when this node has a usable leader (a follower knows one; a leader was acknowledged by a quorum within 1 s).",
        id,
        u64::from(matches!(node.leader_contact(), crate::node::LeaderContact::Usable(_))),
    );
    gauge(
        &mut out,
        "aos_cp_spine_validated",
        "1 when this node passed its boot spine checks (0: it serves nothing; see /health).",
        id,
        u64::from(node.spine().validated()),
    );
    gauge(
        &mut out,
        "aos_cp_raft_last_log_index",
        "Index of the last log entry.",
        id,
        m.last_log_index.unwrap_or(0),
    );
    gauge(
        &mut out,
        "aos_cp_raft_last_applied_index",
        "Index of the last applied entry.",
        id,
        m.last_applied.map_or(0, |l| l.index),
    );
    gauge(
        &mut out,
        "aos_cp_raft_snapshot_index",
        "Last index covered by the latest snapshot.",
        id,
        m.snapshot.map_or(0, |l| l.index),
    );
    gauge(
        &mut out,
        "aos_cp_raft_purged_index",
        "Last purged log index.",
        id,
        m.purged.map_or(0, |l| l.index),
    );
    gauge(
        &mut out,
        "aos_cp_tenants",
        "Tenants in the applied state.",
        id,
        u64::try_from(tenants).unwrap_or(u64::MAX),
    );
    gauge(
        &mut out,
        "aos_cp_audit_entries",
        "Entries in the audit ledger.",
        id,
        u64::try_from(audit_entries).unwrap_or(u64::MAX),
    );
    gauge(
        &mut out,
        "aos_cp_edge_agents",
        "Registered edge agents.",
        id,
        u64::try_from(agents).unwrap_or(u64::MAX),
    );
    gauge(
        &mut out,
        "aos_cp_edge_agents_nacking",
        "Edge agents whose last answer was a NACK (refusing the snapshot offered).",
        id,
        u64::try_from(nacking).unwrap_or(u64::MAX),
    );
    gauge(
        &mut out,
        "aos_cp_agent_watches_open",
        "Snapshot watches this node serves now (edge agents connected to it).",
        id,
        node.open_watches(),
    );
    counter(
        &mut out,
        "aos_cp_raft_log_fsyncs_total",
        "fsyncs run to make appended Raft log entries durable since start (appends arriving during one fsync share the next).",
        id,
        node.raft_log_fsyncs(),
    );
    let (entries, proposals) = node.proposer().sent();
    counter(
        &mut out,
        "aos_cp_proposer_entries_total",
        "Raft entries this node's proposer sent (committed here or forwarded to the leader) since start; proposals made together travel as one.",
        id,
        entries,
    );
    counter(&mut out, "aos_cp_proposer_proposals_total", "Proposals those entries carried.", id, proposals);
    let mut response = out.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}
