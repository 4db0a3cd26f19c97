//! Data access: template compilation and binding, HTTP target rendering,
//! source validation, credential sealing and the plane gate.

use serde_json::json;

use super::sealing::{credential_aad, key_id, open, seal};
use super::*;
use crate::evaluate::{DataAccessKind, RunScope};
use crate::snapshot::{
    KnowledgePlane, PlaneDefault, PolicySnapshot, Sensitivity, VerifiedSnapshot, VerifyOptions,
};
use crate::test_support::{NOW_MS, TENANT, signer, snapshot as verified_snapshot, trusted};

fn template(statement: &str, params: &[(&str, ParamType)]) -> SqlTemplate {
    SqlTemplate {
        template_id: "t".into(),
        statement: statement.into(),
        params: params.iter().map(|(n, t)| ParamSpec { name: (*n).into(), param_type: *t }).collect(),
        max_rows: 10,
        read_only: true,
    }
}

#[test]
fn placeholders_become_positional_outside_literals_comments_and_casts() {
    let t = template(
        "SELECT id::text, ':not_a_param', \"col:x\" FROM t -- :nor_this\n WHERE a = :a /* :no */ AND b = :b OR a2 = :a;",
        &[("a", ParamType::Integer), ("b", ParamType::String)],
    );
    let c = compile_template(&t).unwrap();
    assert_eq!(
        c.postgres,
        "SELECT id::text, ':not_a_param', \"col:x\" FROM t -- :nor_this\n WHERE a = $1 /* :no */ AND b = $2 OR a2 = $1"
    );
    assert!(c.sqlite.contains("a = ?1") && c.sqlite.contains("b = ?2") && c.sqlite.ends_with("a2 = ?1"));
    assert_eq!(c.order, [0, 1]);
}

#[test]
fn templates_refuse_anything_but_declared_named_parameters() {
    let cases = [
        ("SELECT * FROM t WHERE a = ?", "write parameters as :name"),
        ("SELECT * FROM t WHERE a = $1", "write parameters as :name"),
        ("SELECT 1; DROP TABLE t", "single statement"),
        ("SELECT :undeclared", "does not declare"),
        ("SELECT 'unterminated", "unterminated"),
        ("SELECT 1 /* open", "unterminated comment"),
        ("   ", "must not be empty"),
        ("SELECT E'it\\'s' FROM t", "escape-string"),
        ("SELECT 1 /* outer /* inner */ ; DROP TABLE t; */", "nested comment"),
        ("SELECT `x` FROM t", "backtick"),
        ("SELECT * FROM t WHERE a = @a", "write parameters as :name"),
        ("SELECT 'a\\' FROM t", "backslash"),
    ];
    for (statement, expected) in cases {
        let err = compile_template(&template(statement, &[])).unwrap_err();
        assert!(err.contains(expected), "{statement:?}: {err}");
    }
    let unused = compile_template(&template("SELECT 1", &[("a", ParamType::String)])).unwrap_err();
    assert!(unused.contains("never uses declared param \"a\""), "{unused}");
}

#[test]
fn parameters_are_type_checked_and_complete() {
    let specs = template("SELECT :a, :b", &[("a", ParamType::Integer), ("b", ParamType::String)]).params;
    let bound = bind_params(&specs, json!({"b": "x' OR '1'='1", "a": 7}).as_object().unwrap()).unwrap();
    assert_eq!(bound, [ParamValue::Integer(7), ParamValue::Text("x' OR '1'='1".into())]);

    let err = bind_params(&specs, json!({"a": "7", "b": "x"}).as_object().unwrap()).unwrap_err();
    assert_eq!((err.name.as_str(), err.problem.as_str()), ("a", "must be INTEGER, got a string"));
    let err = bind_params(&specs, json!({"a": 1}).as_object().unwrap()).unwrap_err();
    assert_eq!(err.to_string(), "parameter `b`: is required (STRING)");
    let err = bind_params(&specs, json!({"a": 1, "b": "x", "c": 2}).as_object().unwrap()).unwrap_err();
    assert_eq!(err.name, "c");
    let err = bind_params(&specs, json!({"a": 1.5, "b": "x"}).as_object().unwrap()).unwrap_err();
    assert_eq!(err.problem, "must be INTEGER, got a float");
}

fn endpoint() -> HttpEndpoint {
    HttpEndpoint {
        endpoint_id: "item".into(),
        method: HttpMethod::Get,
        path_template: "/items/{id}".into(),
        params: vec![
            ParamSpec { name: "id".into(), param_type: ParamType::String },
            ParamSpec { name: "q".into(), param_type: ParamType::String },
        ],
    }
}

#[test]
fn http_parameters_cannot_leave_their_segment() {
    let render = |id: &str, q: &str| {
        render_http_target(&endpoint(), &[ParamValue::Text(id.into()), ParamValue::Text(q.into())])
    };
    assert_eq!(render("42", "a b").unwrap(), "/items/42?q=a%20b");
    assert_eq!(render("../admin", "x").unwrap(), "/items/..%2Fadmin?q=x");
    assert_eq!(render("@evil.example:80", "x&y=1#f").unwrap(), "/items/%40evil.example%3A80?q=x%26y%3D1%23f");
    assert_eq!(render("http://evil.example/", "").unwrap(), "/items/http%3A%2F%2Fevil.example%2F?q=");
    assert!(render("..", "x").unwrap_err().contains("must not be empty, . or .."));
    assert!(render("", "x").is_err());
}

#[test]
fn path_templates_are_checked() {
    assert_eq!(path_params("/a/{x}/b/{y}").unwrap(), ["x", "y"]);
    for bad in ["a/{x}", "/a/{x}y", "/a?x=1", "/../x", "/a/{}"] {
        assert!(path_params(bad).is_err(), "{bad}");
    }
}

fn sql_source(id: &str, status: SourceStatus) -> DataSource {
    DataSource {
        source_id: id.into(),
        asset_type: AssetType::Sql,
        status,
        sql: Some(SqlConnector {
            engine: SqlEngine::Sqlite,
            target: "/tmp/x.db".into(),
            timeout_ms: 1000,
            templates: vec![template("SELECT * FROM t WHERE id = :id", &[("id", ParamType::Integer)])],
        }),
        http: None,
        mcp: None,
    }
}

#[test]
fn sources_are_validated_with_field_paths() {
    assert!(sql_source("s1", SourceStatus::Created).validate().is_ok());

    let mut wrong = sql_source("s1", SourceStatus::Created);
    wrong.asset_type = AssetType::Http;
    let text = wrong.validate().unwrap_err().to_string();
    assert!(text.contains("sql: must be absent for asset_type HTTP"), "{text}");
    assert!(text.contains("http: is required for asset_type HTTP"), "{text}");

    let mut pg = sql_source("s1", SourceStatus::Created);
    if let Some(sql) = pg.sql.as_mut() {
        sql.engine = SqlEngine::Postgres;
        sql.target = "host=db user=app password=hunter2".into();
        sql.templates[0].max_rows = 0;
    }
    let text = pg.validate().unwrap_err().to_string();
    assert!(text.contains("sql.target: must not carry a password"), "{text}");
    assert!(text.contains("sql.templates[0].max_rows"), "{text}");
    assert!(!text.contains("hunter2"), "the error must not echo the secret: {text}");
    for target in [
        "host=db password = x",
        "host=db PASSWORD=x",
        "postgresql://app:pw@db/hr",
        "postgres://app:pw@db:5432",
    ] {
        let mut pg = sql_source("s1", SourceStatus::Created);
        if let Some(sql) = pg.sql.as_mut() {
            sql.engine = SqlEngine::Postgres;
            sql.target = target.into();
        }
        assert!(pg.validate().unwrap_err().to_string().contains("must not carry a password"), "{target}");
    }
    let mut ok = sql_source("s1", SourceStatus::Created);
    if let Some(sql) = ok.sql.as_mut() {
        sql.engine = SqlEngine::Postgres;
        sql.target = "postgresql://app@db/hr?sslmode=disable".into();
    }
    assert!(ok.validate().is_ok());

    let http = DataSource {
        source_id: "h".into(),
        asset_type: AssetType::Http,
        status: SourceStatus::Created,
        sql: None,
        http: Some(HttpConnector {
            base_url: "https://user:pw@api.example".into(),
            timeout_ms: 1000,
            max_response_bytes: 1024,
            endpoints: vec![HttpEndpoint { params: vec![], ..endpoint() }],
        }),
        mcp: None,
    };
    let text = http.validate().unwrap_err().to_string();
    assert!(text.contains("http.base_url: must not carry user info"), "{text}");
    assert!(text.contains("http.endpoints[0].path_template: names {id}"), "{text}");
}

fn mcp_source(command: Option<&str>, args: &[&str], url: Option<&str>) -> DataSource {
    DataSource {
        source_id: "m".into(),
        asset_type: AssetType::Mcp,
        status: SourceStatus::Created,
        sql: None,
        http: None,
        mcp: Some(McpConnector {
            command: command.map(Into::into),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            url: url.map(Into::into),
            allowed_tools: vec!["lookup".into()],
            timeout_ms: 1000,
        }),
    }
}

#[test]
fn mcp_sources_name_exactly_one_transport_and_a_clean_url() {
    assert!(mcp_source(Some("/bin/server"), &["--log", "x"], None).validate().is_ok());
    assert!(mcp_source(None, &[], Some("https://mcp.example/mcp")).validate().is_ok());
    assert!(mcp_source(None, &[], Some("http://127.0.0.1:8080/mcp")).validate().is_ok());
    assert!(mcp_source(None, &[], Some("http://[::1]:8080/mcp")).validate().is_ok());
    let cases = [
        (mcp_source(Some("s"), &[], Some("https://a.example")), "mcp: set either command (stdio) or url"),
        (mcp_source(None, &[], None), "mcp: set command (stdio) or url (streamable HTTP)"),
        (mcp_source(Some("  "), &[], None), "mcp.command: must not be empty"),
        (
            mcp_source(None, &["--x"], Some("https://a.example/mcp")),
            "mcp.args: apply to command (stdio) only",
        ),
        (mcp_source(None, &[], Some("ftp://a.example/mcp")), "mcp.url: must start with http:// or https://"),
        (mcp_source(None, &[], Some("file:///etc/passwd")), "mcp.url: must start with http://"),
        (mcp_source(None, &[], Some("https:///mcp")), "mcp.url: has no host"),
        (mcp_source(None, &[], Some("http://:8080/mcp")), "mcp.url: has no host"),
        (mcp_source(None, &[], Some("http://[]:8080/mcp")), "mcp.url: has no host"),
        (mcp_source(None, &[], Some("https://a.example/mcp?k=v")), "mcp.url: must not have a query"),
        (mcp_source(None, &[], Some("https://a.example/mcp#f")), "mcp.url: must not have a query"),
        (
            mcp_source(None, &[], Some("https://a.example\\@b.example/")),
            "mcp.url: must not contain whitespace",
        ),
        (
            mcp_source(None, &[], Some("https://a.example\\.b.example/")),
            "mcp.url: must not contain whitespace",
        ),
        (mcp_source(None, &[], Some("https://a.example /mcp")), "mcp.url: must not contain whitespace"),
        (mcp_source(None, &[], Some("https://a.example/\nmcp")), "mcp.url: must not contain whitespace"),
    ];
    for (source, expected) in cases {
        let text = source.validate().unwrap_err().to_string();
        assert!(text.contains(expected), "{:?}: {text}", source.mcp);
    }
    // A credential put in the URL by mistake is refused and never echoed
    // back in the field error (which reaches API answers and logs).
    for url in ["https://bot:hunter2-pw@a.example/mcp", "https://a.example/mcp?token=hunter2-pw"] {
        let text = mcp_source(None, &[], Some(url)).validate().unwrap_err().to_string();
        assert!(text.contains("mcp.url") && !text.contains("hunter2-pw"), "{text}");
    }
}

#[test]
fn sealed_credentials_open_only_in_their_context() {
    let key = [9u8; 32];
    let nonce = [1u8; 24];
    let aad = credential_aad("acme", "db");
    let sealed = seal(&key, &nonce, &aad, b"s3cret");
    assert!(!sealed.windows(6).any(|w| w == b"s3cret"));
    assert_eq!(open(&key, &nonce, &aad, &sealed).unwrap(), b"s3cret");
    assert!(
        open(&key, &nonce, &credential_aad("acme", "other"), &sealed).is_err(),
        "moved to another source"
    );
    assert!(open(&key, &nonce, &credential_aad("globex", "db"), &sealed).is_err(), "moved to another tenant");
    assert!(open(&[8u8; 32], &nonce, &aad, &sealed).is_err(), "another key");
    let mut tampered = sealed.clone();
    tampered[0] ^= 1;
    assert!(open(&key, &nonce, &aad, &tampered).is_err(), "tampered");
    assert!(open(&key, &nonce[..12], &aad, &sealed).is_err(), "short nonce");
    assert_eq!(key_id(&key).len(), 16);
    assert_ne!(key_id(&key), key_id(&[8u8; 32]));
}

const ALLOW_HR: &str = "  - id: pol-hr
    name: hr may read
    scope: { type: AGENT, ids: [hr-bot] }
    monitors: { rag_access: { enabled: true, allowed_planes: [hr] } }
";

fn plane(id: &str, default_policy: PlaneDefault, active: bool, sources: &[&str]) -> KnowledgePlane {
    KnowledgePlane {
        plane_id: id.into(),
        name: id.into(),
        sensitivity: if default_policy == PlaneDefault::Allow {
            Sensitivity::Public
        } else {
            Sensitivity::Confidential
        },
        default_policy,
        bound_source_ids: sources.iter().map(|s| (*s).to_string()).collect(),
        active,
    }
}

fn gated_snapshot(sources: Vec<DataSource>) -> VerifiedSnapshot {
    let policies = verified_snapshot(1, ALLOW_HR).snapshot().policies.clone();
    let planes = vec![
        plane("hr", PlaneDefault::Deny, true, &["db-off", "db-on"]),
        plane("docs", PlaneDefault::Allow, true, &["db-on"]),
        plane("draft", PlaneDefault::Allow, false, &["db-on"]),
    ];
    let snap = PolicySnapshot::new(TENANT, 1, 0, NOW_MS * 10, policies, vec![], vec![])
        .unwrap()
        .with_data_access(planes, sources, vec![])
        .unwrap();
    let bytes = crate::snapshot::sign(&snap, &signer()).unwrap();
    crate::snapshot::verify(
        &bytes,
        &trusted(),
        &VerifyOptions { tenant_id: TENANT, last_accepted_version: None, now_ms: NOW_MS },
    )
    .unwrap()
}

fn scope(agent: &str) -> RunScope {
    RunScope { tenant_id: TENANT.into(), agent_id: Some(agent.into()), ..RunScope::default() }
}

#[test]
fn the_gate_denies_by_default_and_names_why() {
    let snap = gated_snapshot(vec![
        sql_source("db-off", SourceStatus::Disabled),
        sql_source("db-on", SourceStatus::Enabled),
    ]);
    let t = AccessTarget::SqlTemplate("t");

    let ok = resolve_access(&snap, &scope("hr-bot"), "hr", t).unwrap();
    assert_eq!((ok.source.source_id.as_str(), ok.kind), ("db-on", DataAccessKind::DatabaseQuery));

    let denied = resolve_access(&snap, &scope("sales-bot"), "hr", t).unwrap_err();
    assert_eq!(denied.code(), "PLANE_DENIED", "a DENY plane refuses until a policy allows it");
    assert!(resolve_access(&snap, &scope("sales-bot"), "docs", t).is_ok(), "ALLOW planes need no policy");
    assert_eq!(resolve_access(&snap, &scope("hr-bot"), "draft", t).unwrap_err().code(), "PLANE_INACTIVE");
    assert_eq!(
        resolve_access(&snap, &scope("hr-bot"), "globex-plane", t).unwrap_err(),
        AccessRefusal::UnknownPlane { plane_id: "globex-plane".into() }
    );
    let unknown =
        resolve_access(&snap, &scope("hr-bot"), "hr", AccessTarget::SqlTemplate("raw")).unwrap_err();
    assert_eq!(unknown.to_string(), "no source bound to plane \"hr\" has SQL template \"raw\"");
    assert_eq!(
        resolve_access(&snap, &scope("hr-bot"), "hr", AccessTarget::McpTool("t")).unwrap_err().code(),
        "UNKNOWN_TARGET"
    );
}

#[test]
fn a_disabled_or_unverified_source_refuses() {
    for status in [SourceStatus::Created, SourceStatus::Verified, SourceStatus::Disabled, SourceStatus::Error]
    {
        let snap = gated_snapshot(vec![sql_source("db-off", status), sql_source("db-on", status)]);
        let err = resolve_access(&snap, &scope("hr-bot"), "hr", AccessTarget::SqlTemplate("t")).unwrap_err();
        assert_eq!(err, AccessRefusal::SourceNotEnabled { source_id: "db-off".into(), status });
    }
}

#[test]
fn snapshots_refuse_planes_binding_unknown_sources_and_stray_credentials() {
    let planes = vec![plane("hr", PlaneDefault::Deny, true, &["missing"])];
    let err = PolicySnapshot::new(TENANT, 1, 0, 10, vec![], vec![], vec![])
        .unwrap()
        .with_data_access(planes, vec![sql_source("db", SourceStatus::Enabled)], vec![])
        .unwrap_err()
        .to_string();
    assert!(err.contains("knowledge_planes[0].bound_source_ids[0]"), "{err}");

    let stray = SourceCredential {
        source_id: "nope".into(),
        sealed: SealedCredential { data_key_id: "k".into(), nonce: vec![0; 24], ciphertext: vec![1] },
    };
    let err = PolicySnapshot::new(TENANT, 1, 0, 10, vec![], vec![], vec![])
        .unwrap()
        .with_data_access(vec![], vec![sql_source("db", SourceStatus::Enabled)], vec![stray])
        .unwrap_err()
        .to_string();
    assert!(err.contains("credentials[0].source_id: unknown source \"nope\""), "{err}");
}

#[test]
fn data_sources_and_credentials_round_trip_through_the_signed_envelope() {
    let cred = SourceCredential {
        source_id: "db-on".into(),
        sealed: SealedCredential { data_key_id: "k1".into(), nonce: vec![3; 24], ciphertext: vec![4; 40] },
    };
    let planes = vec![plane("hr", PlaneDefault::Deny, true, &["db-on"])];
    let snap = PolicySnapshot::new(TENANT, 2, 0, NOW_MS * 10, vec![], vec![], vec![])
        .unwrap()
        .with_data_access(planes, vec![sql_source("db-on", SourceStatus::Enabled)], vec![cred.clone()])
        .unwrap();
    let bytes = crate::snapshot::sign(&snap, &signer()).unwrap();
    let verified = crate::snapshot::verify(
        &bytes,
        &trusted(),
        &VerifyOptions { tenant_id: TENANT, last_accepted_version: None, now_ms: NOW_MS },
    )
    .unwrap();
    assert_eq!(verified.snapshot(), &snap);
    assert_eq!(verified.snapshot().credential("db-on"), Some(&cred.sealed));
    assert!(format!("{:?}", cred.sealed).contains("ciphertext_len: 40"));
}
