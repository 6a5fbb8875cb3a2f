"""Telemetry names are a contract: pinned to the OpenTelemetry semantic-conventions package."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.semconv.attributes import error_attributes, http_attributes, server_attributes

from router import semconv


def test_gen_ai_attribute_names_match_the_conventions() -> None:
    """Each gen_ai.* constant equals the package's value (no stale names like gen_ai.system)."""
    assert semconv.GEN_AI_OPERATION_NAME == gen_ai.GEN_AI_OPERATION_NAME
    assert semconv.GEN_AI_PROVIDER_NAME == gen_ai.GEN_AI_PROVIDER_NAME
    assert semconv.GEN_AI_REQUEST_MODEL == gen_ai.GEN_AI_REQUEST_MODEL
    assert semconv.GEN_AI_REQUEST_MAX_TOKENS == gen_ai.GEN_AI_REQUEST_MAX_TOKENS
    assert semconv.GEN_AI_RESPONSE_MODEL == gen_ai.GEN_AI_RESPONSE_MODEL
    assert semconv.GEN_AI_RESPONSE_ID == gen_ai.GEN_AI_RESPONSE_ID
    assert semconv.GEN_AI_RESPONSE_FINISH_REASONS == gen_ai.GEN_AI_RESPONSE_FINISH_REASONS
    assert semconv.GEN_AI_USAGE_INPUT_TOKENS == gen_ai.GEN_AI_USAGE_INPUT_TOKENS
    assert semconv.GEN_AI_USAGE_OUTPUT_TOKENS == gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS
    assert semconv.GEN_AI_INPUT_MESSAGES == gen_ai.GEN_AI_INPUT_MESSAGES
    assert semconv.GEN_AI_OUTPUT_MESSAGES == gen_ai.GEN_AI_OUTPUT_MESSAGES
    assert gen_ai.GenAiOperationNameValues.CHAT.value == semconv.OPERATION_CHAT
    assert semconv.OPERATION_INVOKE_WORKFLOW == "invoke_workflow"


def test_general_attribute_names_match_the_conventions() -> None:
    assert semconv.ERROR_TYPE == error_attributes.ERROR_TYPE
    assert semconv.SERVER_ADDRESS == server_attributes.SERVER_ADDRESS
    assert semconv.SERVER_PORT == server_attributes.SERVER_PORT
    assert semconv.HTTP_REQUEST_METHOD == http_attributes.HTTP_REQUEST_METHOD
    assert semconv.HTTP_RESPONSE_STATUS_CODE == http_attributes.HTTP_RESPONSE_STATUS_CODE
    assert semconv.HTTP_ROUTE == http_attributes.HTTP_ROUTE


def test_provider_names_use_well_known_values() -> None:
    """gen_ai.provider.name uses the conventions' well-known values where one exists."""
    known = {v.value for v in gen_ai.GenAiProviderNameValues}
    assert semconv.PROVIDER_NAME["openai"] in known
    assert semconv.PROVIDER_NAME["anthropic"] in known
    assert semconv.PROVIDER_NAME["gemini"] in known


def test_our_attributes_live_in_the_router_namespace() -> None:
    ours = [v for k, v in vars(semconv).items() if k.startswith("ROUTER_")]
    assert ours
    assert all(v.startswith("router.") for v in ours)


_TELEMETRY_CALLS = {"start_as_current_span", "start_span", "set_attribute", "add_event"}


def _literal_names(tree: ast.AST) -> list[tuple[int, str]]:
    """String literals used as span, event or attribute names outside `semconv.py`."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in _TELEMETRY_CALLS:
            continue
        args = [*node.args[:1], *(k.value for k in node.keywords if k.arg == "attributes")]
        args += [a for a in node.args[1:] if isinstance(a, ast.Dict)]
        for arg in args:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.append((node.lineno, arg.value))
            if isinstance(arg, ast.Dict):
                found += [
                    (node.lineno, k.value)
                    for k in arg.keys
                    if isinstance(k, ast.Constant) and isinstance(k.value, str)
                ]
    return found


def test_every_telemetry_name_goes_through_semconv() -> None:
    """Span names, event names and attribute keys in router/ are semconv constants, never
    string literals at the call (f-strings built from constants, like `chat {model}`, pass)."""
    root = Path(semconv.__file__).parent
    offenders = [
        f"{path.relative_to(root.parent)}:{line}: {name!r}"
        for path in sorted(root.rglob("*.py"))
        if path.name != "semconv.py"
        for line, name in _literal_names(ast.parse(path.read_text()))
    ]
    assert offenders == []


_VOCABULARY = re.compile(r"^((gen_ai|router|http)\.[a-z_.]+|error\.type|server\.(address|port))$")


def test_no_telemetry_vocabulary_outside_semconv() -> None:
    """No string constant in router/ (outside `semconv.py`) spells a name of the telemetry
    vocabulary (`gen_ai.*`, `router.*`, `http.*`, `server.*`, `error.*`): each is a constant."""
    root = Path(semconv.__file__).parent
    offenders = [
        f"{path.relative_to(root.parent)}:{node.lineno}: {node.value!r}"
        for path in sorted(root.rglob("*.py"))
        if path.name != "semconv.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and _VOCABULARY.match(node.value)
    ]
    assert offenders == []
