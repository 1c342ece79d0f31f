#!/usr/bin/env python3
"""Regenerates docs/cs-api-coverage.md: every client-server operation of the spec's OpenAPI
(data/api/client-server/*.yaml), whether this server routes it, refuses it on purpose (with
the reason), or lacks it, and the integration-test files that name its path.

    python3 docs/cs_api_coverage.py [SPEC_DIR]    # writes docs/cs-api-coverage.md

SPEC_DIR defaults to ../shared/matrix-spec/data/api/client-server beside the repository (as
the tests' spec checks find it). Needs PyYAML.

How it decides, so that it keeps working as routes are added:
- routes: every `.route(PATH, METHODS)` in matrix-homeserver/src/http.rs and
  matrix-homeserver/src/http/*.rs (not the federation listener's), where PATH is a string
  literal, a `&format!("...")` of one (with `{CONST}` replaced by the file's
  `const CONST: &str = "..."` and `{{x}}` read as `{x}`), or such a constant itself; METHODS
  are the `get(`, `put(`, `post(`, `delete(` in the method router;
- a spec path matches a route when both are equal with every `{parameter}` the same
  placeholder (so `{roomId}` matches `{room}`); the operation's method must be routed too;
- "refused" comes from REFUSED below: operations routed only to answer an error on purpose;
- tests: the files of matrix-homeserver/tests/it/ whose text (with their own `const`s
  expanded the same way) contains the path (parameters as any non-empty text), or a string
  that is the spec's path relative to its base (as the tests' `spec::check` calls name it).
  A helper that glues paths from pieces at run time is not seen: "-" means no file names
  the path, not that nothing tests it.
"""

import glob
import os
import re
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HTTP = os.path.join(ROOT, "matrix-homeserver", "src")
TESTS = os.path.join(ROOT, "matrix-homeserver", "tests", "it")
OUT = os.path.join(HERE, "cs-api-coverage.md")

# Operations routed only to refuse them, with the reason: (METHOD, spec path) -> reason.
NO_3PID = "no email, SMS or identity server: no third-party identifier can be validated"
REFUSED = {
    ("POST", "/account/3pid"): "400 M_THREEPID_AUTH_FAILED: " + NO_3PID,
    ("POST", "/account/3pid/add"): "400 M_THREEPID_AUTH_FAILED: " + NO_3PID,
    ("POST", "/account/3pid/bind"): "403 M_FORBIDDEN: no binding at identity servers",
    ("POST", "/account/3pid/email/requestToken"): "400 M_THREEPID_MEDIUM_NOT_SUPPORTED: " + NO_3PID,
    ("POST", "/account/3pid/msisdn/requestToken"): "400 M_THREEPID_MEDIUM_NOT_SUPPORTED: " + NO_3PID,
    ("POST", "/register/email/requestToken"): "403 M_THREEPID_DENIED: " + NO_3PID,
    ("POST", "/register/msisdn/requestToken"): "403 M_THREEPID_DENIED: " + NO_3PID,
    ("POST", "/account/password/email/requestToken"): "403 M_THREEPID_DENIED: " + NO_3PID,
    ("POST", "/account/password/msisdn/requestToken"): "403 M_THREEPID_DENIED: " + NO_3PID,
}

# Operations not routed on purpose, with the reason (they answer 404 M_UNRECOGNIZED, as any
# unknown endpoint): (METHOD, spec path) -> reason.
OLD_POLLING = "the deprecated polling API, replaced by /sync (no client we know calls it)"
NOT_SERVED = {
    ("GET", "/v3/admin/whois/{userId}"): "server administration is the admin API's (issue 18)",
    ("GET", "/v1/admin/suspend/{userId}"): "v1.18 account moderation, not offered (not advertised)",
    ("PUT", "/v1/admin/suspend/{userId}"): "v1.18 account moderation, not offered (not advertised)",
    ("GET", "/v1/admin/lock/{userId}"): "v1.18 account moderation, not offered (not advertised)",
    ("PUT", "/v1/admin/lock/{userId}"): "v1.18 account moderation, not offered (not advertised)",
    ("POST", "/login/get_token"): "login tokens are not handed out (m.get_login_token: false)",
    ("GET", "/auth_metadata"): "no OAuth 2.0 here: 404 M_UNRECOGNIZED is the spec's answer",
    ("GET", "/events"): OLD_POLLING,
    ("GET", "/events "): "peeking, with the deprecated polling API: not offered",
    ("GET", "/initialSync"): OLD_POLLING,
    ("GET", "/events/{eventId}"): OLD_POLLING,
    ("GET", "/rooms/{roomId}/initialSync"): OLD_POLLING,
    ("GET", "/matrix/policy_server"): "not a policy server: 404, as the spec says",
    ("POST", "/refresh"): "no refresh tokens are issued (login answers none), so none to refresh",
    ("GET", "/login/sso/redirect"): "no SSO login type is offered",
    ("GET", "/login/sso/redirect/{idpId}"): "no SSO login type is offered",
}

# Operations whose path equals another's but for a trailing space (the spec's way of giving
# one path two bodies): the router cannot tell them apart, so they are listed here.
VARIANTS = {
    ("POST", "/rooms/{roomId}/invite "): "no: invites by third-party identifier need an "
    "identity server (the body is refused as M_BAD_JSON: no user_id)",
}

PARAM = re.compile(r"\{[^{}/]*\}")
METHODS = ("get", "put", "post", "delete", "patch", "head")


def norm(path):
    """A path with every parameter the same placeholder, and no trailing slash or space."""
    return PARAM.sub("{}", path.strip()).rstrip("/") or "/"


def routed_methods(spec_path, routed):
    """The methods routed for a spec path: a route's `{}` stands for any segment (a route's
    `{scope}` serves the spec's literal `global`), a spec parameter only for a route's `{}`."""
    want = norm(spec_path).split("/")
    methods = set()
    for path, route_methods in routed.items():
        have = path.split("/")
        if len(have) == len(want) and all(h == "{}" or h == w for h, w in zip(have, want)):
            methods |= route_methods
    return methods


def consts(text):
    return dict(re.findall(r'const\s+([A-Z_][A-Z0-9_]*)\s*:\s*&str\s*=\s*"([^"]*)"', text))


def expand(template, constants):
    """A format! template (or a plain string) with {CONST} replaced and {{x}} read as {x}."""
    out = re.sub(r"(?<!\{)\{([A-Z_][A-Z0-9_]*)\}(?!\})",
                 lambda m: constants.get(m.group(1), m.group(0)), template)
    return out.replace("{{", "{").replace("}}", "}")


def balanced(text, start):
    """The text from `start` (just after an opening parenthesis) to its closing one."""
    depth, i = 1, start
    while i < len(text) and depth:
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
        i += 1
    return text[start:i - 1]


def routes():
    """{normalised path: set of methods} of the client-server router."""
    found = {}
    files = [os.path.join(HTTP, "http.rs")] + sorted(glob.glob(os.path.join(HTTP, "http", "*.rs")))
    for name in files:
        if os.path.basename(name).startswith("federation"):
            continue
        text = open(name, encoding="utf-8").read()
        constants = consts(text)
        for match in re.finditer(r"\.route\(", text):
            args = balanced(text, match.end()).strip()
            literal = re.match(r'(?:&\s*format!\(\s*)?"([^"]*)"', args)
            if literal:
                path = expand(literal.group(1), constants)
                rest = args[literal.end():]
            else:
                ident = re.match(r"([A-Z_][A-Z0-9_]*)\s*,", args)
                if not ident or ident.group(1) not in constants:
                    continue
                path = constants[ident.group(1)]
                rest = args[ident.end():]
            methods = {m.upper() for m in re.findall(r"\b(get|put|post|delete|patch)\(", rest)}
            found.setdefault(norm(path), set()).update(methods)
    return found


def tests():
    """[(file name, text with its constants expanded)] of the integration tests."""
    out = []
    for name in sorted(glob.glob(os.path.join(TESTS, "*.rs"))):
        text = open(name, encoding="utf-8").read()
        out.append((os.path.basename(name), expand(text, consts(text))))
    return out


def path_regex(path):
    parts = [re.escape(p) for p in PARAM.split(path.strip().rstrip("/"))]
    return r'[^"\s?]+'.join(parts) + r'/?(?=["?\s]|$)'


def test_files(full_path, path, test_texts):
    """Files naming the whole path, or the spec's own (relative) path as a string of its own
    (as `spec::check("file.yaml", "/path", ...)` does)."""
    pattern = re.compile(path_regex(full_path) + "|" + '"' + path_regex(path))
    return [name for name, text in test_texts if pattern.search(text)]


def operations(spec_dir):
    """[(file, METHOD, base + path, path, operationId, deprecated)] of the spec."""
    ops = []
    for name in sorted(glob.glob(os.path.join(spec_dir, "*.yaml"))):
        doc = yaml.safe_load(open(name, encoding="utf-8"))
        if not isinstance(doc, dict) or not doc.get("paths"):
            continue
        base = ""
        for server in doc.get("servers") or []:
            base = ((server.get("variables") or {}).get("basePath") or {}).get("default", "")
        for path, item in doc["paths"].items():
            for method, op in item.items():
                if method not in METHODS or not isinstance(op, dict):
                    continue
                ops.append((os.path.basename(name), method.upper(), base + path, path,
                            op.get("operationId", ""), bool(op.get("deprecated"))))
    return ops


def main():
    spec_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        ROOT, "..", "..", "shared", "matrix-spec", "data", "api", "client-server")
    if not os.path.isdir(spec_dir):
        spec_dir = os.path.join(ROOT, "..", "shared", "matrix-spec", "data", "api", "client-server")
    routed = routes()
    test_texts = tests()
    rows, counts = [], {"yes": 0, "refused": 0, "no": 0}
    for file, method, full, path, op_id, deprecated in operations(spec_dir):
        methods = routed_methods(full, routed)
        if (method, path) in VARIANTS:
            status = VARIANTS[(method, path)]
            counts["no"] += 1
        elif method in methods:
            reason = REFUSED.get((method, path))
            status = f"refused: {reason}" if reason else "yes"
            counts["refused" if reason else "yes"] += 1
        elif (method, path) in NOT_SERVED:
            status = "no: " + NOT_SERVED[(method, path)]
            counts["no"] += 1
        else:
            status = "no"
            counts["no"] += 1
        covering = test_files(full, path, test_texts) if not status.startswith("no") else []
        name = op_id + (" (deprecated)" if deprecated else "")
        rows.append((file, method, full.strip(), name, status, ", ".join(covering[:3]) or "-"))
    total = sum(counts.values())
    lines = [
        "# Client-server API coverage",
        "",
        "Generated by `python3 docs/cs_api_coverage.py` from the spec's OpenAPI",
        "(`data/api/client-server/*.yaml`) and the router (`matrix-homeserver/src/http*.rs`);",
        "do not edit by hand. \"refused\" operations are routed and answer an error on purpose,",
        "with the reason; \"no\" operations are not routed (404 `M_UNRECOGNIZED`), each with the",
        "reason; \"tests\" are the files of `matrix-homeserver/tests/it/` naming the path.",
        "",
        f"{total} operations: {counts['yes']} served, {counts['refused']} refused on purpose, "
        f"{counts['no']} not served.",
        "",
        "| spec file | method | path | operation | implemented | tests |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
    with open(OUT, "w", encoding="utf-8") as out:
        out.write("\n".join(lines) + "\n")
    print(f"{OUT}: {total} operations, {counts}")


if __name__ == "__main__":
    main()
