//! Response bodies checked against the official OpenAPI documents of the Matrix spec (v1.19),
//! read from `../shared/matrix-spec` beside the repository. Without that folder the checks are
//! skipped, and say so once.

use std::path::{Path, PathBuf};

use serde_json::Value;

fn spec_dir() -> Option<PathBuf> {
    static SAID: std::sync::Once = std::sync::Once::new();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/matrix-spec/data/api/client-server");
    if dir.is_dir() {
        return Some(dir);
    }
    SAID.call_once(|| {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "skipped: OpenAPI checks need ../shared/matrix-spec beside the repository"
        );
    });
    None
}

fn load_yaml(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// `value` with every `$ref` inlined (relative to `dir`), `depth` levels deep at most (deeper,
/// and for recursive schemas, a ref becomes "anything").
fn inline(value: &Value, dir: &Path, document: &Value, depth: usize) -> Value {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                if depth == 0 {
                    return Value::Object(serde_json::Map::new());
                }
                let (file, pointer) = reference.split_once('#').unwrap_or((reference, ""));
                let (target, target_dir, target_document) = if file.is_empty() {
                    (document.clone(), dir.to_owned(), document.clone())
                } else {
                    let path = dir.join(file);
                    let loaded = load_yaml(&path);
                    let parent = path.parent().map_or_else(|| dir.to_owned(), Path::to_owned);
                    (loaded.clone(), parent, loaded)
                };
                let target = if pointer.is_empty() {
                    target
                } else {
                    target.pointer(pointer).cloned().unwrap_or_else(|| panic!("{reference}"))
                };
                let mut resolved = inline(&target, &target_dir, &target_document, depth - 1);
                // Keys beside the $ref (a description) add to what it points at.
                if let Value::Object(resolved_map) = &mut resolved {
                    for (key, v) in map {
                        if key != "$ref" {
                            resolved_map.insert(key.clone(), inline(v, dir, document, depth));
                        }
                    }
                }
                return resolved;
            }
            Value::Object(
                map.iter().map(|(k, v)| (k.clone(), inline(v, dir, document, depth))).collect(),
            )
        }
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| inline(v, dir, document, depth)).collect())
        }
        other => other.clone(),
    }
}

/// Checks `body` against the spec's schema for the `status` response of `method path` in
/// `file` (`registration.yaml`, `/register`, `post`, 200).
pub(crate) fn check(file: &str, path: &str, method: &str, status: u16, body: &Value) {
    let errors = violations(file, path, method, status, body);
    assert!(errors.is_empty(), "{method} {path} {status} against {file}: {errors:?}\n{body}");
}

/// [`check`] for a response of the server-server API (`file` in its folder of the spec).
pub(crate) fn check_federation(file: &str, path: &str, method: &str, status: u16, body: &Value) {
    check(&format!("../server-server/{file}"), path, method, status, body);
}

/// What is wrong with `body` for that response (nothing when the spec is not there).
fn violations(file: &str, path: &str, method: &str, status: u16, body: &Value) -> Vec<String> {
    let Some(dir) = spec_dir() else { return Vec::new() };
    let location = dir.join(file);
    // The document's own references are relative to its folder.
    let dir = location.parent().map_or(dir.clone(), Path::to_owned);
    let document = load_yaml(&location);
    let response = document
        .pointer(&format!("/paths/{}/{method}/responses/{status}", path.replace('/', "~1")))
        .unwrap_or_else(|| panic!("{file} has no {status} response for {method} {path}"));
    let response = inline(response, &dir, &document, 12);
    let Some(schema) = response.pointer("/content/application~1json/schema") else {
        panic!("{file}: {method} {path} {status} has no JSON schema");
    };
    let validator = jsonschema::draft202012::new(schema)
        .unwrap_or_else(|e| panic!("{file}: {method} {path} {status}: the schema: {e}"));
    validator.iter_errors(body).map(|e| e.to_string()).collect()
}

#[test]
fn the_checks_catch_a_wrong_body() {
    if spec_dir().is_none() {
        return;
    }
    let wrong = serde_json::json!({"access_token": 5});
    let errors = violations("registration.yaml", "/register", "post", 200, &wrong);
    assert!(errors.iter().any(|e| e.contains("user_id")), "{errors:?}");
    assert!(errors.iter().any(|e| e.contains("string")), "{errors:?}");
    let errors = violations("login.yaml", "/login", "post", 403, &serde_json::json!({}));
    assert!(errors.iter().any(|e| e.contains("errcode")), "{errors:?}");
}
