//! Templates the workload fills but never writes: SQL statements with
//! `:name` placeholders (compiled to the engine's positional form and bound,
//! never spliced — GAP-060) and HTTP path templates whose `{name}` segments
//! are percent-encoded so a parameter cannot add a segment, a query or a
//! host (GAP-059). Parameter values are type-checked against their specs.

use serde_json::{Map, Value};

use super::model::{HttpEndpoint, ParamSpec, ParamType, SqlTemplate};

/// A SQL template compiled for both engines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledTemplate {
    /// The statement with `$1..$n` (PostgreSQL).
    pub postgres: String,
    /// The statement with `?1..?n` (SQLite).
    pub sqlite: String,
    /// For position `k` (0-based), the index into the template's `params`.
    pub order: Vec<usize>,
}

/// A bound, typed parameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    /// Text.
    Text(String),
    /// Integer.
    Integer(i64),
    /// Float.
    Float(f64),
    /// Boolean.
    Boolean(bool),
}

impl ParamValue {
    /// The value rendered for a URL (path segment or query value).
    pub fn to_url_text(&self) -> String {
        match self {
            ParamValue::Text(s) => s.clone(),
            ParamValue::Integer(i) => i.to_string(),
            ParamValue::Float(f) => f.to_string(),
            ParamValue::Boolean(b) => b.to_string(),
        }
    }
}

/// A parameter that does not fit its template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parameter `{name}`: {problem}")]
pub struct ParamError {
    /// The parameter (or the unknown name given).
    pub name: String,
    /// What is wrong.
    pub problem: String,
}

/// Compiles `template`: finds its `:name` placeholders outside literals and
/// comments, checks they match the declared params, and renders the
/// positional forms. Rejects `?`, `$` and a second statement, so nothing
/// but declared parameters can reach the engine.
pub fn compile_template(template: &SqlTemplate) -> Result<CompiledTemplate, String> {
    let src = template.statement.as_bytes();
    let mut postgres = String::with_capacity(src.len() + 8);
    let mut sqlite = String::with_capacity(src.len() + 8);
    let mut order: Vec<usize> = Vec::new();
    let mut used = vec![false; template.params.len()];
    let mut i = 0;
    let mut copy_from = 0;
    let text = template.statement.as_str();
    let push_both = |pg: &mut String, lite: &mut String, s: &str| {
        pg.push_str(s);
        lite.push_str(s);
    };
    while i < src.len() {
        match src[i] {
            b'\''
                if i > 0
                    && matches!(src[i - 1], b'e' | b'E')
                    && (i < 2 || !(src[i - 2].is_ascii_alphanumeric() || src[i - 2] == b'_')) =>
            {
                return Err("uses an E'…' escape-string literal, whose backslashes the gateway does not parse: use a standard '…' literal".to_owned());
            }
            quote @ (b'\'' | b'"') => {
                i += 1;
                loop {
                    match src.get(i) {
                        None => return Err("has an unterminated quoted literal".to_owned()),
                        Some(b'\\') => {
                            return Err(
                                "has a backslash inside a quoted literal: write the value as a parameter"
                                    .to_owned(),
                            );
                        }
                        Some(&c) if c == quote => {
                            if src.get(i + 1) == Some(&quote) {
                                i += 2;
                            } else {
                                i += 1;
                                break;
                            }
                        }
                        Some(_) => i += 1,
                    }
                }
            }
            b'-' if src.get(i + 1) == Some(&b'-') => {
                while i < src.len() && src[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if src.get(i + 1) == Some(&b'*') => match text[i + 2..].find("*/") {
                // PostgreSQL nests block comments and SQLite does not: a
                // nested one would be read differently by the two.
                Some(end) if text[i + 2..i + 2 + end].contains("/*") => {
                    return Err(
                        "has a nested comment, which PostgreSQL and SQLite read differently".to_owned()
                    );
                }
                Some(end) => i += 2 + end + 2,
                None => return Err("has an unterminated comment".to_owned()),
            },
            b'`' => return Err("uses a backtick identifier: quote identifiers with \"…\"".to_owned()),
            b':' if src.get(i + 1) == Some(&b':') => i += 2,
            b':' if src.get(i + 1).is_some_and(|c| c.is_ascii_lowercase() || *c == b'_') => {
                push_both(&mut postgres, &mut sqlite, &text[copy_from..i]);
                let start = i + 1;
                let mut end = start;
                while end < src.len()
                    && (src[end].is_ascii_lowercase() || src[end].is_ascii_digit() || src[end] == b'_')
                {
                    end += 1;
                }
                let name = &text[start..end];
                let Some(param) = template.params.iter().position(|p| p.name == name) else {
                    return Err(format!("uses :{name}, which params does not declare"));
                };
                used[param] = true;
                let position = match order.iter().position(|p| *p == param) {
                    Some(pos) => pos + 1,
                    None => {
                        order.push(param);
                        order.len()
                    }
                };
                postgres.push_str(&format!("${position}"));
                sqlite.push_str(&format!("?{position}"));
                i = end;
                copy_from = end;
            }
            b'?' | b'$' | b'@' => {
                return Err(format!(
                    "contains {:?} at byte {i}: write parameters as :name",
                    char::from(src[i])
                ));
            }
            b';' => {
                if text[i + 1..].trim().is_empty() {
                    break;
                }
                return Err("must be a single statement (text follows `;`)".to_owned());
            }
            _ => i += 1,
        }
    }
    let end = if i < src.len() { i } else { src.len() };
    push_both(&mut postgres, &mut sqlite, &text[copy_from..end]);
    if postgres.trim().is_empty() {
        return Err("must not be empty".to_owned());
    }
    if let Some(unused) = used.iter().position(|u| !u) {
        return Err(format!("never uses declared param {:?}", template.params[unused].name));
    }
    Ok(CompiledTemplate { postgres, sqlite, order })
}

/// Checks `given` against `specs`: every declared parameter present with
/// its type, nothing undeclared. Returns the values in `specs` order.
pub fn bind_params(specs: &[ParamSpec], given: &Map<String, Value>) -> Result<Vec<ParamValue>, ParamError> {
    if let Some(extra) = given.keys().find(|k| !specs.iter().any(|s| &s.name == *k)) {
        return Err(ParamError {
            name: extra.clone(),
            problem: "is not a parameter of this template".to_owned(),
        });
    }
    specs
        .iter()
        .map(|spec| {
            let value = given.get(&spec.name).ok_or_else(|| ParamError {
                name: spec.name.clone(),
                problem: format!("is required ({})", spec.param_type.as_str()),
            })?;
            typed(spec, value)
        })
        .collect()
}

fn typed(spec: &ParamSpec, value: &Value) -> Result<ParamValue, ParamError> {
    let wrong = || ParamError {
        name: spec.name.clone(),
        problem: format!("must be {}, got {}", spec.param_type.as_str(), kind(value)),
    };
    match (spec.param_type, value) {
        (ParamType::String, Value::String(s)) => Ok(ParamValue::Text(s.clone())),
        (ParamType::Integer, Value::Number(n)) => n.as_i64().map(ParamValue::Integer).ok_or_else(wrong),
        (ParamType::Float, Value::Number(n)) => n.as_f64().map(ParamValue::Float).ok_or_else(wrong),
        (ParamType::Boolean, Value::Bool(b)) => Ok(ParamValue::Boolean(*b)),
        _ => Err(wrong()),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "an integer",
        Value::Number(_) => "a float",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The `{name}` segments of an HTTP path template, in order. The template
/// starts with `/`, and each placeholder is a whole segment.
pub fn path_params(template: &str) -> Result<Vec<String>, String> {
    if !template.starts_with('/') {
        return Err(format!("{template:?} must start with /"));
    }
    if template.contains(['?', '#', '\\']) || template.split('/').any(|s| s == "..") {
        return Err(format!("{template:?} must not contain ?, #, \\ or .. segments"));
    }
    let mut names = Vec::new();
    for segment in template.split('/') {
        if segment.contains(['{', '}']) {
            let name = segment
                .strip_prefix('{')
                .and_then(|s| s.strip_suffix('}'))
                .filter(|n| !n.is_empty() && !n.contains(['{', '}']))
                .ok_or_else(|| {
                    format!("segment {segment:?}: a placeholder must be a whole segment {{name}}")
                })?;
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

/// The request path and query for `endpoint` with `values` (in the
/// endpoint's `params` order): path placeholders percent-encoded as one
/// segment each, every other parameter in the query string.
pub fn render_http_target(endpoint: &HttpEndpoint, values: &[ParamValue]) -> Result<String, String> {
    let names = path_params(&endpoint.path_template)?;
    let value_of =
        |name: &str| endpoint.params.iter().position(|p| p.name == name).and_then(|i| values.get(i));
    let mut out = String::with_capacity(endpoint.path_template.len() + 16);
    for (i, segment) in endpoint.path_template.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) => {
                let value = value_of(name).ok_or_else(|| format!("no value for path parameter {name:?}"))?;
                let text = value.to_url_text();
                if text.is_empty() || text == "." || text == ".." {
                    return Err(format!("path parameter {name:?} must not be empty, . or .."));
                }
                percent_encode(&text, &mut out);
            }
            None => out.push_str(segment),
        }
    }
    let mut first = true;
    for (spec, value) in endpoint.params.iter().zip(values) {
        if names.contains(&spec.name) {
            continue;
        }
        out.push(if first { '?' } else { '&' });
        first = false;
        percent_encode(&spec.name, &mut out);
        out.push('=');
        percent_encode(&value.to_url_text(), &mut out);
    }
    Ok(out)
}

/// RFC 3986 percent-encoding of everything but unreserved characters.
fn percent_encode(text: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}
