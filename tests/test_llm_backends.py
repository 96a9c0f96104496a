"""Contract tests of the HTTP LLM backends (Ollama, OpenAI-compatible) against a local fake server that
speaks each vendor's documented format, plus the backend factory and the gguf backend's offline checks.
Nothing here needs a network, a model or a GPU; every test runs in well under two seconds."""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from hflite.ai.llm import gguf as gguf_mod
from hflite.ai.llm._http import redact, vendor_error
from hflite.ai.llm.backends import BACKENDS, make_backend
from hflite.ai.llm.base import (
    LLM,
    LLMBadReply,
    LLMReply,
    LLMRequest,
    LLMTimeout,
    LLMUnavailable,
    Message,
)
from hflite.ai.llm.config import GGUFConfig, LLMConfig, OllamaConfig, OpenAIConfig
from hflite.ai.llm.gguf import GGUFLLM
from hflite.ai.llm.ollama import OllamaLLM, flatten
from hflite.ai.llm.openai_compat import OpenAICompatLLM
from tests import llm_servers
from tests.llm_servers import BAD_SCHEMA, GOOD_REPLY, STANCE_SCHEMA, FakeLLMServer, closed_port_url

# the fake servers' pytest fixtures (assigned, not imported, so linters see them as used)
ollama_server = llm_servers.ollama_server
openai_server = llm_servers.openai_server

VENDORS = ("ollama", "openai")
KEY = "sk-test-0123456789abcdefSECRET"
MESSAGES = (
    Message("system", "You are a cautious equity analyst. Answer with JSON only."),
    Message("user", "SPY: above its 200-day average, low volatility. Your stance?"),
)
CHAT_PATH = {"ollama": "/api/chat", "openai": "/v1/chat/completions"}


def request(**overrides: Any) -> LLMRequest:
    base: dict[str, Any] = {
        "messages": MESSAGES,
        "schema": STANCE_SCHEMA,
        "max_tokens": 128,
        "temperature": 0.0,
        "seed": 7,
        "timeout_s": 2.0,
    }
    base.update(overrides)
    return LLMRequest(**base)


def backend_for(server: FakeLLMServer, url: str | None = None, **cfg: Any) -> OllamaLLM | OpenAICompatLLM:
    """The backend of the server's vendor pointed at it (or at ``url``)."""
    if server.vendor == "ollama":
        return OllamaLLM(OllamaConfig(url=url or server.url, model="gemma3:270m", **cfg))
    return OpenAICompatLLM(OpenAIConfig(url=url or server.url, model="gemma-3-270m", **cfg))


@pytest.fixture(params=VENDORS)
def server(request: pytest.FixtureRequest) -> Any:
    """The fake server, once per vendor."""
    with FakeLLMServer(request.param) as fake:
        yield fake


@pytest.fixture
def llm(server: FakeLLMServer) -> Any:
    """The backend of the server's vendor, closed after the test."""
    backend = backend_for(server)
    yield backend
    backend.close()


# -- success ---------------------------------------------------------------------------------------
def test_reply(server: FakeLLMServer, llm: OllamaLLM | OpenAICompatLLM) -> None:
    reply = llm.chat(request())
    assert isinstance(reply, LLMReply)
    assert reply.text == GOOD_REPLY
    assert reply.backend == server.vendor
    assert reply.model == llm.model  # the fake echoes the requested model
    assert reply.prompt_tokens > 0 and reply.completion_tokens > 0
    assert reply.finish_reason == "stop"
    assert 0 < reply.latency_s < 2
    assert isinstance(llm, LLM)
    assert [r.path for r in server.requests] == [CHAT_PATH[server.vendor]]


def test_streamed_reply(server: FakeLLMServer, llm: OllamaLLM | OpenAICompatLLM) -> None:
    reply = llm.chat(request(stream=True))
    assert reply.text == GOOD_REPLY
    assert reply.prompt_tokens > 0 and reply.completion_tokens > 0
    assert reply.finish_reason == "stop"
    body = server.last.body
    assert body["stream"] is True
    if server.vendor == "openai":
        assert body["stream_options"] == {"include_usage": True}


def test_stream_behaviour_is_read_by_a_streaming_client(server: FakeLLMServer, llm: Any) -> None:
    server.script(["stream"])
    assert llm.chat(request(stream=True)).text == GOOD_REPLY


def test_schema_violating_reply_is_returned_unchanged(server: FakeLLMServer, llm: Any) -> None:
    server.script(["bad_schema", "bad_schema"])
    assert llm.chat(request()).text == BAD_SCHEMA
    assert llm.chat(request(stream=True)).text == BAD_SCHEMA


def test_script_then_default(server: FakeLLMServer, llm: Any) -> None:
    server.script(["500", "ok"])
    with pytest.raises(LLMUnavailable):
        llm.chat(request())
    assert llm.chat(request()).text == GOOD_REPLY
    assert llm.chat(request()).text == GOOD_REPLY  # script used up: the default behaviour
    assert [r.behaviour for r in server.requests] == ["500", "ok", "ok"]


def test_reply_content_is_settable(server: FakeLLMServer, llm: Any) -> None:
    server.reply_content = '{"stance": "bearish"}'
    assert llm.chat(request()).text == '{"stance": "bearish"}'
    assert llm.chat(request(stream=True)).text == '{"stance": "bearish"}'


# -- request shapes --------------------------------------------------------------------------------
def test_ollama_chat_request_shape(ollama_server: FakeLLMServer) -> None:
    llm = OllamaLLM(OllamaConfig(url=ollama_server.url, model="gemma3:270m", keep_alive="10m"))
    llm.chat(request(temperature=0.3, seed=11, max_tokens=99))
    body = ollama_server.last.body
    assert body["model"] == "gemma3:270m"
    assert body["messages"] == [{"role": m.role, "content": m.content} for m in MESSAGES]
    assert body["format"] == STANCE_SCHEMA
    assert body["options"] == {"temperature": 0.3, "seed": 11, "num_predict": 99}
    assert body["stream"] is False
    assert body["keep_alive"] == "10m"
    llm.chat(request(schema=None))
    assert "format" not in ollama_server.last.body
    llm.close()


def test_openai_request_shape(openai_server: FakeLLMServer) -> None:
    llm = OpenAICompatLLM(OpenAIConfig(url=openai_server.url, model="gemma-3-270m"))
    llm.chat(request(temperature=0.3, seed=11, max_tokens=99))
    rec = openai_server.last
    assert rec.path == "/v1/chat/completions"
    body = rec.body
    assert body["model"] == "gemma-3-270m"
    assert body["messages"] == [{"role": m.role, "content": m.content} for m in MESSAGES]
    assert (body["max_tokens"], body["temperature"], body["seed"], body["stream"]) == (99, 0.3, 11, False)
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "reply", "schema": STANCE_SCHEMA, "strict": True},
    }
    assert "stream_options" not in body
    assert "authorization" not in rec.headers  # no key configured: no header at all
    llm.chat(request(schema=None))
    assert "response_format" not in openai_server.last.body
    llm.close()


def test_openai_json_object_mode_and_bearer_key(openai_server: FakeLLMServer) -> None:
    llm = OpenAICompatLLM(OpenAIConfig(url=openai_server.url, api_key=SecretStr(KEY), json_schema=False))
    llm.chat(request())
    assert openai_server.last.body["response_format"] == {"type": "json_object"}
    assert openai_server.last.headers["authorization"] == f"Bearer {KEY}"
    llm.close()


def test_ollama_generate(ollama_server: FakeLLMServer) -> None:
    llm = OllamaLLM(OllamaConfig(url=ollama_server.url))
    reply = llm.generate(request())
    assert reply.text == GOOD_REPLY and reply.completion_tokens > 0 and reply.finish_reason == "stop"
    rec = ollama_server.last
    assert rec.path == "/api/generate"
    assert rec.body["prompt"] == MESSAGES[1].content
    assert rec.body["system"] == MESSAGES[0].content
    assert rec.body["format"] == STANCE_SCHEMA
    assert rec.body["options"]["num_predict"] == 128
    assert "messages" not in rec.body
    assert llm.generate(request(stream=True)).text == GOOD_REPLY
    ollama_server.script(["malformed"])
    with pytest.raises(LLMBadReply):
        llm.generate(request())
    llm.close()


def test_flatten_messages() -> None:
    assert flatten((Message("user", "hi"),)) == ("", "hi")
    system, prompt = flatten((Message("system", "S"), Message("user", "a"), Message("assistant", "b")))
    assert system == "S"
    assert prompt == "User: a\n\nAssistant: b\n\nAssistant:"


# -- failures --------------------------------------------------------------------------------------
@pytest.mark.parametrize("stream", [False, True])
def test_slow_server_times_out(server: FakeLLMServer, llm: Any, stream: bool) -> None:
    server.script(["slow"])
    start = time.perf_counter()
    with pytest.raises(LLMTimeout, match=server.vendor):
        llm.chat(request(timeout_s=0.5, stream=stream))
    assert 0.4 < time.perf_counter() - start < 1.5
    assert server.last.behaviour == "slow"  # it did reach the server


@pytest.mark.parametrize("stream", [True, False])
def test_trickling_server_times_out(server: FakeLLMServer, llm: Any, stream: bool) -> None:
    server.script(["trickle"])
    start = time.perf_counter()
    with pytest.raises(LLMTimeout, match="timed out"):
        llm.chat(request(timeout_s=0.6, stream=stream))
    assert 0.5 < time.perf_counter() - start < 1.6
    # the pooled client is still healthy for the next call
    assert llm.chat(request()).text == GOOD_REPLY


@pytest.mark.parametrize("status", ["500", "404"])
def test_http_error_carries_the_vendors_message(server: FakeLLMServer, llm: Any, status: str) -> None:
    server.script([status])
    with pytest.raises(LLMUnavailable) as info:
        llm.chat(request())
    message = str(info.value)
    vendor_msg = server.fixtures[f"{server.vendor}_error"][status]["error"]
    vendor_msg = vendor_msg if isinstance(vendor_msg, str) else vendor_msg["message"]
    assert vendor_msg[:60] in message
    assert f"HTTP {status}" in message
    assert server.vendor in message
    assert ("/api/chat" if server.vendor == "ollama" else "/chat/completions") in message
    assert info.value.retryable is (status == "500")


def test_mid_stream_error_is_unavailable(server: FakeLLMServer, llm: Any) -> None:
    server.script(["stream_error"])
    with pytest.raises(LLMUnavailable, match="error"):
        llm.chat(request(stream=True))


@pytest.mark.parametrize("stream", [False, True])
def test_malformed_body_is_bad_reply(server: FakeLLMServer, llm: Any, stream: bool) -> None:
    server.script(["malformed"])
    with pytest.raises(LLMBadReply):
        llm.chat(request(stream=stream))


def test_missing_fields_is_bad_reply(server: FakeLLMServer, llm: Any) -> None:
    server.script(["missing_fields"])
    with pytest.raises(LLMBadReply):
        llm.chat(request())
    server.script(["missing_fields"])
    with pytest.raises(LLMBadReply):
        llm.models()


@pytest.mark.parametrize("vendor", VENDORS)
def test_connection_refused_is_unavailable(vendor: str) -> None:
    url = closed_port_url("/v1" if vendor == "openai" else "")
    llm = OllamaLLM(OllamaConfig(url=url)) if vendor == "ollama" else OpenAICompatLLM(OpenAIConfig(url=url))
    start = time.perf_counter()
    with pytest.raises(LLMUnavailable, match=vendor) as info:
        llm.chat(request())
    assert "ConnectError" in str(info.value)
    with pytest.raises(LLMUnavailable):
        llm.models()
    assert time.perf_counter() - start < 1.5
    llm.close()


def test_invalid_url_is_unavailable() -> None:
    with OllamaLLM(OllamaConfig(url="ftp://nowhere.invalid")) as llm, pytest.raises(LLMUnavailable):
        llm.chat(request())


# -- models ----------------------------------------------------------------------------------------
def test_ollama_models(ollama_server: FakeLLMServer) -> None:
    with OllamaLLM(OllamaConfig(url=ollama_server.url)) as llm:
        models = llm.models()
    assert [m.id for m in models] == ["gemma3:270m", "llama3:latest"]
    assert models[1].size_bytes == 3825819519
    assert models[1].details["family"] == "llama" and "digest" in models[1].details
    assert ollama_server.last.path == "/api/tags" and ollama_server.last.method == "GET"


def test_openai_models(openai_server: FakeLLMServer) -> None:
    with OpenAICompatLLM(OpenAIConfig(url=openai_server.url)) as llm:
        models = llm.models()
    assert [m.id for m in models] == ["gemma-3-270m", "gpt-4o-mini"]
    assert models[0].details["owned_by"] == "llamacpp"
    assert openai_server.last.path == "/v1/models"


def test_models_errors(server: FakeLLMServer, llm: Any) -> None:
    server.script(["500", "malformed", "slow"])
    with pytest.raises(LLMUnavailable):
        llm.models()
    with pytest.raises(LLMBadReply):
        llm.models()
    with pytest.raises(LLMTimeout):
        llm.models(timeout_s=0.3)


# -- secrets ---------------------------------------------------------------------------------------
def test_api_key_never_in_errors_or_repr(openai_server: FakeLLMServer) -> None:
    # the fake really does echo the key back in its 401 body ...
    openai_server.script(["401"])
    echoed = httpx.post(
        f"{openai_server.url}/chat/completions", json={}, headers={"Authorization": f"Bearer {KEY}"}
    )
    assert echoed.status_code == 401 and KEY in echoed.text
    # ... and the backend keeps it out of everything it shows
    llm = OpenAICompatLLM(OpenAIConfig(url=openai_server.url, api_key=SecretStr(KEY)))
    openai_server.script(["401"])
    with pytest.raises(LLMUnavailable) as info:
        llm.chat(request())
    assert openai_server.last.headers["authorization"] == f"Bearer {KEY}"
    message = str(info.value)
    assert "HTTP 401" in message and "Incorrect API key provided: Bearer ***" in message
    assert KEY not in message and KEY[:12] not in message
    assert info.value.retryable is False
    shown = "".join(traceback.format_exception(info.value)) + repr(info.value) + repr(llm) + str(vars(llm))
    assert KEY not in shown
    llm.close()


def test_redact() -> None:
    assert redact(f"bad key {KEY}", (KEY,)) == "bad key ***"
    assert redact("Authorization: Bearer abc.def", ()) == "Authorization: Bearer ***"
    assert redact("nothing here", ("",)) == "nothing here"


def test_vendor_error_shapes() -> None:
    assert vendor_error(b'{"error": "model not found"}') == "model not found"
    assert vendor_error(b'{"error": {"message": "bad", "type": "x"}}') == "bad"
    assert vendor_error(b'{"object": "error", "message": "vllm says no"}') == "vllm says no"
    assert vendor_error(b'{"detail": "Not Found"}') == "Not Found"
    assert vendor_error(b"<html>502</html>") == "<html>502</html>"


# -- client reuse ----------------------------------------------------------------------------------
def test_one_client_per_backend_and_injected_client_left_open(ollama_server: FakeLLMServer) -> None:
    llm = OllamaLLM(OllamaConfig(url=ollama_server.url))
    client = llm._client
    llm.chat(request())
    llm.models()
    assert llm._client is client
    llm.close()
    assert client.is_closed
    mine = httpx.Client()
    injected = OllamaLLM(OllamaConfig(url=ollama_server.url), client=mine)
    assert injected.chat(request()).text == GOOD_REPLY
    injected.close()
    assert not mine.is_closed  # the caller's client is the caller's to close
    mine.close()


# -- factory ---------------------------------------------------------------------------------------
def test_make_backend() -> None:
    cfg = LLMConfig(
        ollama=OllamaConfig(model="qwen2.5:0.5b"),
        openai=OpenAIConfig(model="gpt-4o-mini"),
        gguf=GGUFConfig(path="/models/tiny.gguf"),
    )
    assert BACKENDS == ("gguf", "ollama", "openai")
    built = {name: make_backend(name, cfg) for name in BACKENDS}
    assert isinstance(built["ollama"], OllamaLLM) and built["ollama"].model == "qwen2.5:0.5b"
    assert isinstance(built["openai"], OpenAICompatLLM) and built["openai"].model == "gpt-4o-mini"
    assert isinstance(built["gguf"], GGUFLLM) and built["gguf"].model == "tiny"
    for name, backend in built.items():
        assert backend.backend == name and isinstance(backend, LLM)
        backend.close()
    with pytest.raises(ValueError, match="unknown LLM backend"):
        make_backend("anthropic", cfg)


# -- gguf, offline ---------------------------------------------------------------------------------
def test_gguf_missing_file(tmp_path: Path) -> None:
    cfg = GGUFConfig(path=str(tmp_path / "nope.gguf"))
    llm = GGUFLLM(cfg)
    assert llm.model == "nope"
    reason = gguf_mod.available(cfg)
    assert reason is not None and "not found" in reason
    with pytest.raises(LLMUnavailable, match="not found"):
        llm.chat(request())
    with pytest.raises(LLMUnavailable, match="not found"):
        llm.models()


def test_gguf_missing_runner_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF")
    monkeypatch.setattr(gguf_mod, "_installed", lambda module: False)
    for runner in ("auto", "xllamacpp", "llama-cpp-python"):
        cfg = GGUFConfig(path=str(model), runner=runner)  # type: ignore[arg-type]
        reason = gguf_mod.available(cfg)
        assert reason is not None and "pip install 'hflite[llm]'" in reason
        with pytest.raises(LLMUnavailable, match=r"hflite\[llm\]"):
            GGUFLLM(cfg).chat(request())


def test_gguf_models_lists_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "tiny-q4.gguf"
    model.write_bytes(b"GGUF" + b"\0" * 60)
    monkeypatch.setattr(gguf_mod, "_installed", lambda module: module == "xllamacpp")
    [info] = GGUFLLM(GGUFConfig(path=str(model))).models()
    assert (info.id, info.size_bytes, info.details["runner"]) == ("tiny-q4", 64, "xllamacpp")
    assert gguf_mod.available(GGUFConfig(path=str(model))) is None


def test_gguf_maps_runner_results(tmp_path: Path) -> None:
    """The reply/error mapping, with a stub in place of a loaded model."""

    class Stub:
        def __init__(self, out: Any) -> None:
            self.out, self.bodies = out, []  # type: ignore[var-annotated]

        def chat(self, body: dict[str, Any]) -> Any:
            self.bodies.append(dict(body))
            if isinstance(self.out, Exception):
                raise self.out
            return self.out

        def close(self) -> None: ...

    llm = GGUFLLM(GGUFConfig(path=str(tmp_path / "m.gguf")))
    ok = {
        "choices": [{"message": {"role": "assistant", "content": GOOD_REPLY}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 31, "completion_tokens": 44},
    }
    llm._runner = stub = Stub(ok)
    reply = llm.chat(request())
    assert (reply.text, reply.prompt_tokens, reply.completion_tokens) == (GOOD_REPLY, 31, 44)
    assert (reply.backend, reply.model, reply.finish_reason) == ("gguf", "m", "stop")
    assert stub.bodies[0]["schema"] == STANCE_SCHEMA and stub.bodies[0]["max_tokens"] == 128
    llm._runner = Stub({"error": {"code": 400, "message": "request exceeds the context size"}})
    with pytest.raises(LLMUnavailable, match="context") as info:
        llm.chat(request())
    assert info.value.retryable is False
    llm._runner = Stub({"choices": []})
    with pytest.raises(LLMBadReply):
        llm.chat(request())
    llm._runner = Stub(ValueError("response_format type must be one of ..."))
    with pytest.raises(LLMUnavailable, match="refused"):
        llm.chat(request())
    llm._runner = Stub(ok)
    with pytest.raises(LLMTimeout, match="cannot be interrupted"):
        llm.chat(request(timeout_s=0.0))
    llm.close()
    assert llm._runner is None


def test_gguf_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HFLITE_LLM_CACHE", str(tmp_path / "cache"))
    assert gguf_mod.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("HFLITE_LLM_CACHE")
    assert gguf_mod.cache_dir() == Path.home() / ".cache" / "hflite" / "llm"


# -- the fake itself, checked against the vendors' own clients (when installed) --------------------
def test_fake_ollama_satisfies_the_official_client(ollama_server: FakeLLMServer) -> None:
    ollama = pytest.importorskip("ollama")
    client = ollama.Client(host=ollama_server.url)
    messages = [{"role": "user", "content": "hi"}]
    assert (
        client.chat(model="gemma3:270m", messages=messages, format=STANCE_SCHEMA).message.content
        == GOOD_REPLY
    )
    parts = list(client.chat(model="gemma3:270m", messages=messages, stream=True))
    assert "".join(p.message.content for p in parts) == GOOD_REPLY and parts[-1].done
    assert client.generate(model="gemma3:270m", prompt="hi").response == GOOD_REPLY
    assert [m.model for m in client.list().models] == ["gemma3:270m", "llama3:latest"]
    ollama_server.script(["404"])
    with pytest.raises(ollama.ResponseError, match="not found"):
        client.chat(model="gemma3:270m", messages=messages)


def test_fake_openai_satisfies_the_official_client(openai_server: FakeLLMServer) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=openai_server.url, api_key="sk-fake", max_retries=0)
    messages = [{"role": "user", "content": "hi"}]
    reply = client.chat.completions.create(model="gemma-3-270m", messages=messages, seed=1)
    assert reply.choices[0].message.content == GOOD_REPLY and reply.usage.completion_tokens > 0
    chunks = list(
        client.chat.completions.create(
            model="gemma-3-270m", messages=messages, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == GOOD_REPLY
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0
    assert [m.id for m in client.models.list()] == ["gemma-3-270m", "gpt-4o-mini"]
    openai_server.script(["500"])
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gemma-3-270m", messages=messages)
    client.close()
