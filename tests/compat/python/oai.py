"""Validate reachd's Twilio-dialect responses against Twilio's OpenAPI files.

`validate_exchange()` maps one recorded HTTP exchange (method, URL, status, body) to the
operation of the right OAI file and checks the body:

* 2xx: the status must be one the operation documents; 204 must have an empty body; any
  other body must validate against the operation's response schema (OpenAPI 3.0 rules,
  `nullable` honoured) plus the wire conventions the OAI cannot express (date format,
  absolute URLs on the server's own base, `meta.key`; docs/twilio-compatibility.md §2-§4).
* 4xx/5xx: the body must be Twilio's legacy four-key error JSON
  (docs/twilio-compatibility.md §5).

Documented deviation from the OAI text (docs/twilio-compatibility.md §3.4): properties that
are a bare `$ref` to an `*_enum_*` schema are treated as nullable, because OpenAPI 3.0 cannot
put `nullable` beside a `$ref` and Twilio's own fixtures return null there (e.g. the
Conversations webhook `method` before it is set, docs/twilio-compatibility.md §6.3).
"""

from __future__ import annotations

import copy
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

from jsonschema import FormatChecker
from openapi_schema_validator import OAS30Validator, oas30_format_checker

# Twilio's OAI files, copied into the repository (tests/compat/twilio-oai); TWILIO_OAI_DIR
# points elsewhere.
OAI_DIR = Path(os.environ.get(
    "TWILIO_OAI_DIR",
    str(Path(__file__).resolve().parents[1] / "twilio-oai")))

# URL prefix on reachd -> (OAI file, version segment the file covers)
PRODUCTS = {
    ("chat", "v1"): "twilio_chat_v1.json",
    ("chat", "v2"): "twilio_chat_v2.json",
    ("conversations", "v1"): "twilio_conversations_v1.json",
}

TWILIO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")

ERROR_SCHEMA = {
    "type": "object",
    "required": ["code", "message", "more_info", "status"],
    "properties": {
        "code": {"type": "integer"},
        "message": {"type": "string"},
        "more_info": {"type": "string"},
        "status": {"type": "integer"},
    },
}

_format_checker = FormatChecker()
for _name in oas30_format_checker.checkers:
    _format_checker.checkers[_name] = oas30_format_checker.checkers[_name]


@_format_checker.checks("date-time")
def _is_twilio_date(value) -> bool:  # exactly YYYY-MM-DDTHH:MM:SSZ (twilio-compatibility.md §3.4)
    return not isinstance(value, str) or bool(TWILIO_DATE.match(value))


@_format_checker.checks("uri")
def _is_absolute_uri(value) -> bool:
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


class Spec:
    def __init__(self, path: Path):
        self.name = path.name
        self.doc = json.loads(path.read_text())
        self.schemas = self.doc["components"]["schemas"]
        self.routes = []
        for template, item in self.doc["paths"].items():
            regex = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
            self.routes.append((template.count("{"), template, re.compile(regex), item))
        self.routes.sort(key=lambda r: r[0])  # literal segments win over parameters

    def route(self, path: str):
        for _, template, regex, item in self.routes:
            if regex.match(path):
                return template, item
        return None, None

    def resolve(self, node, seen=()):
        """Inline every `$ref` into components.schemas (Twilio's schemas are acyclic)."""
        if isinstance(node, list):
            return [self.resolve(n, seen) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            ref = node["$ref"]
            name = ref.rsplit("/", 1)[-1]
            assert ref.startswith("#/components/schemas/") and name not in seen, ref
            target = self.resolve(copy.deepcopy(self.schemas[name]), seen + (name,))
            if "_enum_" in name and "enum" in target:  # see module docstring
                target["nullable"] = True
                target["enum"] = list(target["enum"]) + [None]
            return target
        return {k: self.resolve(v, seen) for k, v in node.items()}


@lru_cache(maxsize=None)
def load_spec(file_name: str) -> Spec:
    return Spec(OAI_DIR / file_name)


@lru_cache(maxsize=None)
def _validator(file_name: str, template: str, method: str, status: str):
    spec = load_spec(file_name)
    op = spec.doc["paths"][template][method]
    content = op["responses"][status].get("content", {}).get("application/json")
    if content is None:
        return None
    schema = spec.resolve(content["schema"])
    return OAS30Validator(schema, format_checker=_format_checker)


def split_product(url_path: str):
    """'/chat/v2/Services/IS..' -> ('chat', 'v2', '/v2/Services/IS..'); None if not Twilio."""
    parts = url_path.split("/", 3)
    if len(parts) < 3 or (parts[1], parts[2]) not in PRODUCTS:
        return None
    return parts[1], parts[2], "/" + "/".join(parts[2:])


def _convention_errors(body, public_base: str, list_key_expected: bool) -> list[str]:
    """Links and urls are absolute, on the server's own base (docs/twilio-compatibility.md §2)."""
    errors = []

    def check_url(where, value, nullable=False):
        if value is None and nullable:
            return
        if not isinstance(value, str) or not value.startswith(public_base + "/"):
            errors.append(f"{where}={value!r} is not an absolute URL under {public_base}")

    def walk(obj, where):
        if isinstance(obj, dict):
            for key, value in obj.items():
                here = f"{where}.{key}" if where else key
                if key == "url":
                    check_url(here, value)
                elif key == "links" and isinstance(value, dict):
                    for lk, lv in value.items():
                        check_url(f"{here}.{lk}", lv, nullable=True)
                elif isinstance(value, (dict, list)):
                    walk(value, here)
        elif isinstance(obj, list):
            for i, value in enumerate(obj):
                walk(value, f"{where}[{i}]")

    walk(body, "")
    if list_key_expected:
        meta = body.get("meta") if isinstance(body, dict) else None
        if not isinstance(meta, dict):
            errors.append("list response without meta")
        else:
            key = meta.get("key")
            if not isinstance(key, str) or not isinstance(body.get(key), list):
                errors.append(f"meta.key={key!r} does not name the list array (§1.7)")
            for field in ("first_page_url", "url"):
                check_url(f"meta.{field}", meta.get(field))
            for field in ("next_page_url", "previous_page_url"):
                check_url(f"meta.{field}", meta.get(field), nullable=True)
    return errors


def validate_exchange(method: str, url: str, status: int, text: str, server_base: str) -> list[str]:
    """Return a list of human-readable problems (empty when the exchange is fine)."""
    parts = urlsplit(url)
    product = split_product(unquote(parts.path))
    if product is None:
        return []  # not a Twilio dialect (native API): nothing to validate here
    prefix, version, path = product
    spec = load_spec(PRODUCTS[(prefix, version)])
    where = f"{method} {parts.path}{'?' + parts.query if parts.query else ''} -> {status}"

    body = None
    if text:
        try:
            body = json.loads(text)
        except ValueError:
            return [f"{where}: body is not JSON: {text[:200]!r}"]

    if status >= 400:
        if body is None:
            return [f"{where}: error response with empty body"]
        errs = [f"{where}: error body: {e.message}" for e in OAS30Validator(ERROR_SCHEMA).iter_errors(body)]
        if isinstance(body, dict):
            if body.get("status") not in (None, status):
                errs.append(f"{where}: error body status {body.get('status')} != HTTP {status}")
            if all(k in body for k in ("type", "title", "status", "code")):
                errs.append(f"{where}: error body has type+title+status+code (RFC 9457 mode, §1.8)")
        return errs

    template, item = spec.route(path)
    op = item.get(method.lower()) if item else None
    if op is None:
        return [f"{where}: no operation {method} for {path} in {spec.name}"]
    responses = op.get("responses", {})
    if str(status) not in responses:
        return [f"{where}: status {status} not documented for {method} {template} "
                f"({spec.name} paths.{template}.{method.lower()}.responses has {sorted(responses)})"]
    if status == 204:
        return [] if not text else [f"{where}: 204 with a body {text[:100]!r}"]
    if body is None:
        return [f"{where}: empty body"]

    validator = _validator(spec.name, template, method.lower(), str(status))
    errors = []
    if validator is not None:
        schema_ref = f"{spec.name} paths.{template}.{method.lower()}.responses.{status}"
        for e in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path)):
            loc = "/".join(str(p) for p in e.absolute_path) or "<root>"
            errors.append(f"{where}: {loc}: {e.message} [{schema_ref}]")
    is_list = method.upper() == "GET" and isinstance(body, dict) and "meta" in body
    base = f"{server_base}/{prefix}"
    errors += [f"{where}: {e}" for e in _convention_errors(body, base, is_list)]
    return errors
