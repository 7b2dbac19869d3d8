"""Fuzz reachd with schemathesis: the Twilio dialects it serves (Twilio's own OpenAPI files,
restricted to the served paths) and reachd's own document (`/api/v1/openapi.json`).

Started by run.sh inside a throw-away virtualenv. Starts the reachd binary on a free port with
a temporary database, creates fixtures (services, users, bindings, credentials, webhook
endpoints, sessions) so path parameters resolve, and runs schemathesis once per dialect with
the checks `not_a_server_error` and `response_schema_conformance`. Prints the number of
generated test cases per dialect and exits non-zero when any run found a failure.

Webhooks: schemathesis sets webhook URLs to whatever it generates, so reachd runs with
HTTP(S)_PROXY pointing at a closed local port; every delivery attempt ends there, on this
machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "support"))
from reachd_process import reachd_env, run_reachd  # noqa: E402
OAI_DIR = REPO_ROOT / "tests" / "compat" / "twilio-oai"
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "fuzz_test_token_" + "5f" * 8
AUTH = (ACCOUNT_SID, AUTH_TOKEN)
CHECKS = os.environ.get("FUZZ_CHECKS", "not_a_server_error,response_schema_conformance")
# reachd's own document lists every status an operation answers and its media types, so its
# answers are held to those too (Twilio's files list only the success answers).
OWN_CHECKS = CHECKS + ",status_code_conformance,content_type_conformance"

# The Twilio resources reachd serves (docs/twilio-compatibility.md §6), as path templates
# of Twilio's OAI files.
ID = r"\{[A-Za-z]+\}"
SERVED = {
    "chat_v1": [
        rf"/v1/Services(/{ID})?",
        rf"/v1/Services/{ID}/Users(/{ID})?",
        rf"/v1/Credentials(/{ID})?",
    ],
    "chat_v2": [
        rf"/v2/Services(/{ID})?",
        rf"/v2/Services/{ID}/Users(/{ID})?",
        rf"/v2/Services/{ID}/Users/{ID}/Bindings(/{ID})?",
        rf"/v2/Services/{ID}/Bindings(/{ID})?",
        rf"/v2/Credentials(/{ID})?",
    ],
    "conversations_v1": [
        rf"/v1/Services(/{ID})?",
        rf"/v1/Services/{ID}/Configuration(/Webhooks)?",
        r"/v1/Configuration(/Webhooks)?",
        rf"/v1/Services/{ID}/Users(/{ID})?",
        rf"/v1/Users(/{ID})?",
        rf"/v1/Services/{ID}/Bindings(/{ID})?",
        rf"/v1/Credentials(/{ID})?",
    ],
}


def log(message: str) -> None:
    print(message, flush=True)


# --------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(workdir: Path) -> dict[str, str]:
    env = reachd_env(workdir, ACCOUNT_SID, AUTH_TOKEN, log="error")
    # One token makes every client request: without room for its writes, most would only
    # meet the per-identity write limit (429) instead of the handlers.
    env["REACHD_LIMITS__CLIENT_WRITE_BURST"] = "1000000"
    # Every webhook delivery goes to a closed port on this machine, whatever URL was fuzzed.
    trap = f"http://127.0.0.1:{free_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env[name] = trap
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    return env


@contextlib.contextmanager
def start_server(binary: Path, workdir: Path):
    env = server_env(workdir)
    with run_reachd(binary, workdir, env) as (base, proc):
        yield base, env
    if proc.returncode not in (0, -15):
        log(f"reachd exited with {proc.returncode}")


# --------------------------------------------------------------------------- fixtures


def call(method: str, url: str, expect: int, **kwargs) -> dict:
    resp = requests.request(method, url, auth=kwargs.pop("auth", AUTH), timeout=30, **kwargs)
    if resp.status_code != expect:
        raise RuntimeError(f"{method} {url}: {resp.status_code} {resp.text}")
    return resp.json() if resp.content else {}


def cli(binary: Path, env: dict[str, str], *args: str) -> str:
    out = subprocess.run([str(binary), *args], env=env, check=True, capture_output=True,
                         text=True, timeout=60)
    return out.stdout.strip()


def fixtures(base: str, binary: Path, env: dict[str, str], tag: str) -> dict[str, str]:
    """Resources for path parameters, named after `tag` (one set per dialect); `victim_*` ones
    exist to be deleted."""
    chat, conv, api = f"{base}/chat/v2", f"{base}/conversations/v1", f"{base}/api/v1"

    def service(name):
        return call("POST", f"{chat}/Services", 201, data={"FriendlyName": name})["sid"]

    def user(svc, identity):
        return call("POST", f"{chat}/Services/{svc}/Users", 201, data={"Identity": identity})["sid"]

    def binding(svc, who, address):
        return call("POST", f"{api}/services/{svc}/users/{who}/bindings", 201,
                    json={"binding_type": "fcm", "address": address})["sid"]

    def credential(name):
        return call("POST", f"{chat}/Credentials", 201,
                    data={"Type": "fcm", "FriendlyName": name, "Secret": "fuzz-secret"})["sid"]

    def endpoint(svc):
        return call("POST", f"{api}/services/{svc}/webhooks", 201,
                    json={"url": "http://127.0.0.1:9/fuzz"})["id"]

    f: dict[str, str] = {}
    f["service"] = service(f"fuzz-{tag}")
    call("POST", f"{chat}/Services/{f['service']}", 200, data={"ReachabilityEnabled": "true"})
    f["victim_service"] = service(f"fuzz-victim-{tag}")
    f["identity"] = f"fuzz-alice-{tag}"
    f["user"] = user(f["service"], f["identity"])
    f["victim_user"] = user(f["service"], f"fuzz-victim-{tag}")
    f["binding"] = binding(f["service"], f["identity"], "device-token-alice")
    f["victim_binding"] = binding(f["service"], f["identity"], "device-token-victim-1")
    f["victim_user_binding"] = binding(f["service"], f["identity"], "device-token-victim-2")
    f["credential"] = credential(f"fuzz-{tag}")
    f["victim_credential"] = credential(f"fuzz-victim-{tag}")
    default_user = call("POST", f"{conv}/Users", 201, data={"Identity": f"fuzz-default-{tag}"})
    f["default_user"] = default_user["sid"]
    f["victim_default_user"] = call("POST", f"{conv}/Users", 201,
                                    data={"Identity": f"fuzz-default-victim-{tag}"})["sid"]
    f["endpoint"] = endpoint(f["service"])
    f["victim_endpoint"] = endpoint(f["service"])
    user(f["service"], f"fuzz-late-{tag}")  # a user.added event, delivered to both endpoints
    deliveries = call("GET", f"{api}/services/{f['service']}/webhooks/{f['endpoint']}/deliveries",
                      200)["deliveries"]
    f["delivery"] = str(deliveries[0]["id"]) if deliveries else "1"
    # The client API: a token for the fixture identity, a session to ping, one to close and
    # a binding of its own to unregister.
    cli(binary, env, "keys", "create")
    f["token"] = cli(binary, env, "token", "--service", f["service"], "--identity", f["identity"],
                     "--ttl", "7200")
    bearer = {"Authorization": f"Bearer {f['token']}"}
    f["session"] = call("POST", f"{base}/client/v1/sessions", 201, auth=None, headers=bearer,
                        json={})["session_id"]
    f["victim_session"] = call("POST", f"{base}/client/v1/sessions", 201, auth=None,
                               headers=bearer, json={})["session_id"]
    f["client_binding"] = call("POST", f"{base}/client/v1/bindings", 201, auth=None,
                               headers=bearer,
                               json={"binding_type": "apn", "address": "client-device"})["sid"]
    return f


# --------------------------------------------------------------------------- schemathesis


def toml_value(value) -> str:
    return json.dumps(value)  # JSON strings, numbers and inline arrays are valid TOML


def operations_toml(rules: list[tuple[str, str | None, dict[str, str]]]) -> str:
    """`[[operations]]` entries fixing path parameters: (path, method or None, values).
    The first matching entry wins, so method-specific entries come first."""
    out = []
    for path, method, values in rules:
        out.append("[[operations]]")
        # Separate include filters are alternatives; the name ("DELETE /path") is both.
        if method:
            out.append(f"include-name = {toml_value(f'{method} {path}')}")
        else:
            out.append(f"include-path = {toml_value(path)}")
        params = ", ".join(f"{toml_value('path.' + k)} = {toml_value(v)}" for k, v in values.items())
        out.append(f"parameters = {{ {params} }}")
        out.append("")
    return "\n".join(out)


def twilio_rules(dialect: str, f: dict[str, str]) -> list[tuple[str, str | None, dict[str, str]]]:
    if dialect == "conversations_v1":
        svc = {"ChatServiceSid": f["service"]}
        return [
            ("/v1/Services/{Sid}", "DELETE", {"Sid": f["victim_service"]}),
            ("/v1/Services/{Sid}", None, {"Sid": f["service"]}),
            ("/v1/Services/{ChatServiceSid}/Users/{Sid}", "DELETE",
             {**svc, "Sid": f["victim_user"]}),
            ("/v1/Services/{ChatServiceSid}/Users/{Sid}", None, {**svc, "Sid": f["user"]}),
            ("/v1/Services/{ChatServiceSid}/Bindings/{Sid}", "DELETE",
             {**svc, "Sid": f["victim_binding"]}),
            ("/v1/Services/{ChatServiceSid}/Bindings/{Sid}", None, {**svc, "Sid": f["binding"]}),
            ("/v1/Services/{ChatServiceSid}/Users", None, svc),
            ("/v1/Services/{ChatServiceSid}/Bindings", None, svc),
            ("/v1/Services/{ChatServiceSid}/Configuration", None, svc),
            ("/v1/Services/{ChatServiceSid}/Configuration/Webhooks", None, svc),
            ("/v1/Users/{Sid}", "DELETE", {"Sid": f["victim_default_user"]}),
            ("/v1/Users/{Sid}", None, {"Sid": f["default_user"]}),
            ("/v1/Credentials/{Sid}", "DELETE", {"Sid": f["victim_credential"]}),
            ("/v1/Credentials/{Sid}", None, {"Sid": f["credential"]}),
        ]
    v = "/v1" if dialect == "chat_v1" else "/v2"
    svc = {"ServiceSid": f["service"]}
    rules = [
        (f"{v}/Services/{{Sid}}", "DELETE", {"Sid": f["victim_service"]}),
        (f"{v}/Services/{{Sid}}", None, {"Sid": f["service"]}),
        (f"{v}/Services/{{ServiceSid}}/Users/{{Sid}}", "DELETE", {**svc, "Sid": f["victim_user"]}),
        (f"{v}/Services/{{ServiceSid}}/Users/{{Sid}}", None, {**svc, "Sid": f["user"]}),
        (f"{v}/Services/{{ServiceSid}}/Users", None, svc),
        (f"{v}/Credentials/{{Sid}}", "DELETE", {"Sid": f["victim_credential"]}),
        (f"{v}/Credentials/{{Sid}}", None, {"Sid": f["credential"]}),
    ]
    if dialect == "chat_v2":
        user = {**svc, "UserSid": f["user"]}
        rules += [
            ("/v2/Services/{ServiceSid}/Users/{UserSid}/Bindings/{Sid}", "DELETE",
             {**user, "Sid": f["victim_user_binding"]}),
            ("/v2/Services/{ServiceSid}/Users/{UserSid}/Bindings/{Sid}", None,
             {**user, "Sid": f["binding"]}),
            ("/v2/Services/{ServiceSid}/Users/{UserSid}/Bindings", None, user),
            ("/v2/Services/{ServiceSid}/Bindings/{Sid}", "DELETE",
             {**svc, "Sid": f["victim_binding"]}),
            ("/v2/Services/{ServiceSid}/Bindings/{Sid}", None, {**svc, "Sid": f["binding"]}),
            ("/v2/Services/{ServiceSid}/Bindings", None, svc),
        ]
    return rules


def native_rules(f: dict[str, str]) -> list[tuple[str, str | None, dict[str, str]]]:
    svc = {"sid": f["service"]}
    hook = "/api/v1/services/{sid}/webhooks/{id}"
    return [
        ("/api/v1/services/{sid}/users/{user}/bindings", None, {**svc, "user": f["user"]}),
        ("/api/v1/services/{sid}/users/{user}/sessions", None, {**svc, "user": f["identity"]}),
        (hook, "DELETE", {**svc, "id": f["victim_endpoint"]}),
        (hook, None, {**svc, "id": f["endpoint"]}),
        (hook + "/deliveries", None, {**svc, "id": f["endpoint"]}),
        (hook + "/recover", None, {**svc, "id": f["endpoint"]}),
        ("/api/v1/deliveries/{id}/resend", None, {"id": f["delivery"]}),
        ("/client/v1/sessions/{id}/ping", None, {"id": f["session"]}),
        ("/client/v1/sessions/{id}", None, {"id": f["victim_session"]}),
        ("/client/v1/bindings/{binding}", None, {"binding": f["client_binding"]}),
        ("/client/v1/users/{identity}", None, {"identity": f["identity"]}),
    ] + [(p, None, svc) for p in (
        "/api/v1/services/{sid}/reachability",
        "/api/v1/services/{sid}/settings",
        "/api/v1/services/{sid}/events",
        "/api/v1/services/{sid}/stats",
        "/api/v1/services/{sid}/users",
        "/api/v1/services/{sid}/webhooks",
    )]


def served_oai(dialect: str, out: Path) -> Path:
    """Twilio's OAI file for `dialect` with only the paths reachd serves."""
    doc = json.loads((OAI_DIR / f"twilio_{dialect}.json").read_text())
    patterns = [re.compile(p + "$") for p in SERVED[dialect]]
    doc["paths"] = {p: item for p, item in doc["paths"].items()
                    if any(rx.match(p) for rx in patterns)}
    out.write_text(json.dumps(doc))
    return out


def read_report(report: Path) -> tuple[int, dict[str, Counter]]:
    """Test cases schemathesis generated, and the answers' status codes per operation, from
    its NDJSON event report."""
    cases = 0
    statuses: dict[str, Counter] = defaultdict(Counter)
    for line in report.read_text().splitlines():
        for body in json.loads(line).values():
            recorder = body.get("recorder") if isinstance(body, dict) else None
            if not recorder:
                continue
            cases += len(recorder.get("cases", {}))
            for interaction in recorder.get("interactions", {}).values():
                status = (interaction.get("response") or {}).get("status_code", "none")
                statuses[recorder.get("label", "?")][status] += 1
    return cases, statuses


def schemathesis(st: Path, name: str, location: str, base_url: str, config: str,
                 workdir: Path, args: argparse.Namespace) -> tuple[int, int]:
    conf = workdir / f"{name}.toml"
    conf.write_text(config)
    report = (args.report_dir or workdir) / f"{name}.ndjson"
    cmd = [str(st), "--config-file", str(conf), "--no-color", "run", location,
           "--url", base_url, "--checks", OWN_CHECKS if name == "reachd" else CHECKS, "--max-examples", str(args.max_examples),
           "--phases", args.phases,
           # One worker: Python 3.11's ast.parse is not thread-safe, and hypothesis calls it
           # while describing strategies ("AST constructor recursion depth mismatch").
           "--workers", "1", "--seed", str(args.seed),
           "--generation-database", "none", "--suppress-health-check", "all",
           "--request-timeout", "10", "--report", "ndjson", "--report-ndjson-path", str(report)]
    log(f"\n---- schemathesis: {name} ({base_url})")
    started = time.monotonic()
    code = subprocess.run(cmd, cwd=workdir, timeout=args.timeout).returncode
    cases, statuses = read_report(report) if report.exists() else (0, {})
    for label, counts in sorted(statuses.items()):
        log(f"  {label}: " + " ".join(f"{s}x{n}" for s, n in sorted(counts.items(), key=str)))
    log(f"---- {name}: {cases} generated test cases, exit {code}, "
        f"{time.monotonic() - started:.0f} s")
    return code, cases


def common_toml(extra: str = "") -> str:
    return "\n".join([
        "[auth.basic]",
        f"username = {toml_value(ACCOUNT_SID)}",
        f"password = {toml_value(AUTH_TOKEN)}",
        "",
        extra,
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-examples", type=int, default=int(os.environ.get("FUZZ_MAX_EXAMPLES", 100)))
    parser.add_argument("--phases", default="examples,coverage,fuzzing")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("FUZZ_SEED", 20261202)))
    parser.add_argument("--timeout", type=int, default=600, help="seconds per dialect")
    parser.add_argument("--only", action="append", help="run only these dialects")
    parser.add_argument("--report-dir", type=Path, help="keep schemathesis' NDJSON reports here")
    args = parser.parse_args()
    binary = Path(os.environ.get("REACHD_BIN", "target/debug/reachd"))
    if not binary.is_absolute():
        binary = REPO_ROOT / binary
    if not binary.exists():
        log(f"reachd binary not found at {binary} (set REACHD_BIN)")
        return 2
    st = Path(sys.executable).with_name("st")
    dialects = ["chat_v1", "chat_v2", "conversations_v1", "reachd"]
    results: dict[str, tuple[int, int]] = {}
    with tempfile.TemporaryDirectory(prefix="reachd-fuzz-") as tmp:
        workdir = Path(tmp)
        with start_server(binary, workdir) as (base, env):
            for dialect in dialects:
                if args.only and dialect not in args.only:
                    continue
                f = fixtures(base, binary, env, dialect)
                if dialect == "reachd":
                    config = "\n".join([
                        "[auth.openapi.basicAuth]",
                        f"username = {toml_value(ACCOUNT_SID)}",
                        f"password = {toml_value(AUTH_TOKEN)}",
                        "[auth.openapi.bearerAuth]",
                        f"bearer = {toml_value(f['token'])}",
                        "",
                        operations_toml(native_rules(f)),
                        # The WebSocket upgrade is not an HTTP exchange schemathesis can check.
                        "[[operations]]",
                        'include-path = "/client/v1/socket"',
                        "enabled = false",
                    ])
                    location = f"{base}/api/v1/openapi.json"
                    url = base
                else:
                    config = common_toml(operations_toml(twilio_rules(dialect, f)))
                    location = str(served_oai(dialect, workdir / f"{dialect}.json"))
                    url = f"{base}/{dialect.split('_')[0]}"
                results[dialect] = schemathesis(st, dialect, location, url, config, workdir, args)
    log("\n==== schemathesis summary (generated test cases per dialect)")
    for dialect, (code, cases) in results.items():
        log(f"  {dialect:18} {cases:6} cases  {'ok' if code == 0 else f'FAILED (exit {code})'}")
    failed = [d for d, (code, _) in results.items() if code != 0]
    if failed:
        log(f"failures in: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
