"""Telemetry names are a contract: pinned to the OpenTelemetry semantic-conventions package."""

from __future__ import annotations

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
