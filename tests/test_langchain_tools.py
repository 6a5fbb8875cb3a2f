"""LangChain's `ChatOpenAI.bind_tools` through the sidecar (issue 16): the tool call parses
into LangChain's `tool_calls`, and the conversation with the `ToolMessage` goes on."""

from __future__ import annotations

from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from tests.fakes.script import Answer, ToolCalls
from tests.helpers import sidecar


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"4 degrees in {city}"


async def test_bind_tools_round_trip() -> None:
    async with sidecar() as s:
        s.wall.script("up-model-a", [ToolCalls(), Answer("It is 4 degrees in Oslo.")])
        model = ChatOpenAI(
            model="m-a",
            base_url=f"{s.url}/v1",
            api_key="unused",
            max_retries=0,  # type: ignore[arg-type]
        ).bind_tools([get_weather])
        question = HumanMessage("Weather in Oslo?")
        reply = await model.ainvoke([question])
        assert [(c["name"], c["args"], c["id"]) for c in reply.tool_calls] == [
            ("get_weather", {"city": "Oslo"}, "call_1")
        ]
        sent = s.wall.calls[0].body
        assert sent["tools"][0]["function"]["name"] == "get_weather"
        assert sent["tools"][0]["function"]["parameters"]["properties"] == {
            "city": {"type": "string"}
        }
        result = get_weather.invoke(reply.tool_calls[0]["args"])
        final = await model.ainvoke(
            [question, reply, ToolMessage(result, tool_call_id=reply.tool_calls[0]["id"])]
        )
        assert final.content == "It is 4 degrees in Oslo."
        turn = s.wall.calls[1].body["messages"]
        assert turn[1]["tool_calls"][0]["id"] == "call_1"
        assert turn[2] == {"role": "tool", "content": "4 degrees in Oslo", "tool_call_id": "call_1"}
