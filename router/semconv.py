"""Every telemetry attribute and span name the router emits, as constants (pinned by a test)."""

from __future__ import annotations

# OpenTelemetry GenAI and general semantic conventions (values pinned in tests/test_semconv.py
# against the opentelemetry-semantic-conventions package).
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"  # opt-in content only
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"  # opt-in content only
ERROR_TYPE = "error.type"
# An exception recorded on a span (the `exception` event and its attributes: OpenTelemetry's
# exception semantic conventions, as the SDK records them)
EVENT_EXCEPTION = "exception"
EXCEPTION_TYPE = "exception.type"
EXCEPTION_MESSAGE = "exception.message"
EXCEPTION_STACKTRACE = "exception.stacktrace"
EXCEPTION_ESCAPED = "exception.escaped"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
HTTP_REQUEST_METHOD = "http.request.method"
HTTP_RESPONSE_STATUS_CODE = "http.response.status_code"
HTTP_ROUTE = "http.route"

OPERATION_CHAT = "chat"
OPERATION_EMBEDDINGS = "embeddings"
OPERATION_INVOKE_WORKFLOW = "invoke_workflow"

# gen_ai.provider.name per wire protocol (well-known values where semconv has one)
PROVIDER_NAME = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini", "sim": "sim"}

# Our namespace
ROUTER_REQUEST_ID = "router.request_id"
ROUTER_MAPPED_FROM = "router.model_map.from"  # the requested name a model_map entry served
ROUTER_MAPPED_REASON = "router.model_map.reason"
ROUTER_PROVIDER = "router.provider"
ROUTER_MODEL = "router.model"
ROUTER_ATTEMPT = "router.attempt"
ROUTER_OUTCOME = "router.outcome"
ROUTER_JURISDICTION = "router.policy.jurisdiction"
ROUTER_POLICY_VERSION = "router.policy.version"
ROUTER_POLICY_DECISION = "router.policy.decision"
ROUTER_POLICY_RULE = "router.policy.rule"
ROUTER_FUSION_PANEL = "router.fusion.panel"
ROUTER_FUSION_ROLE = "router.fusion.role"
ROUTER_FUSION_SEAT = "router.fusion.seat"
ROUTER_FUSION_STATUS = "router.fusion.status"
ROUTER_FUSION_SERVED = "router.fusion.served"
ROUTER_FUSION_PLANNED_SUBSTITUTIONS = "router.fusion.planned_substitutions"
ROUTER_SUBSTITUTE_FOR = "router.substitute_for"
ROUTER_BREAKER_STATE = "router.breaker.state"

# Span names
SPAN_FUSION = "invoke_workflow fusion"
SPAN_POLICY = "policy.evaluate"
SPAN_FUSION_PANEL = "fusion.panel"
SPAN_FUSION_SEAT = "fusion.seat"
SPAN_FUSION_JUDGE = "fusion.judge"
SPAN_FUSION_SYNTHESIZE = "fusion.synthesize"
EVENT_FUSION_SUBSTITUTED = "router.fusion.substituted"
EVENT_BREAKER_REJECTED = "router.breaker.rejected"
EVENT_BREAKER_CHANGED = "router.breaker.state_changed"
EVENT_POLICY_DECISION = "router.policy.decision"
