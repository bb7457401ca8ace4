"""The FastAPI app of `paretoalign serve`: every endpoint of the HTTP API over one `RowScorer`.

`create_app(row_scorer, config, ...)` wires the endpoints (see `paretoalign.server`), the error shape
(`server.errors`), the token / body-limit / CORS middlewares (`server.security`) and a metrics middleware that counts
every answer by endpoint and status (`server.metrics`). Its lifespan starts the row scorer and, on shutdown, stops
it (which finishes every accepted request first). /v1/best-of-n samples in a worker thread, one generation at a
time; its candidates are scored through the same row scorer as every other request (`RowScorerBridge`), unless a
separate `bon_scorer` is given.

Inputs are checked in this order, each failure naming its JSON path: the body's size and the token (middlewares),
JSON and types (pydantic, `server.schemas`), the number of rows (413), each text's length (413), the weights, then
each row's prompt / query (422) -- all before any scoring, so a bad request never reaches the model.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from paretoalign import __version__
from paretoalign.data.conversation import check_prompt, normalize_messages, normalize_prompt
from paretoalign.errors import InputError
from paretoalign.rewards.reward_model import RewardOutput, Weights, check_score_inputs
from paretoalign.server.batcher import RowScorer, ScorerStopped, text_length_tokens
from paretoalign.server.config import ServeConfig
from paretoalign.server.errors import ApiError, input_error, install_error_handlers, json_path
from paretoalign.server.metrics import ServerMetrics
from paretoalign.server.query_split import QueryTemplate, split_query
from paretoalign.server.schemas import (
    DOCUMENT_FIELDS,
    QUERY_FIELDS,
    BestOfNRequest,
    ClassifyRequest,
    GetRewardRequest,
    RewardsRequest,
    ScoreRequest,
)
from paretoalign.server.security import (
    BearerAuthMiddleware,
    BodyLimitMiddleware,
    cors_middleware_options,
    load_api_key,
)

if TYPE_CHECKING:
    from paretoalign.data.schema import Message as ChatMessage
    from paretoalign.inference.protocols import Sampler
    from paretoalign.rewards.protocols import Scorer

EXPLORER_DIR = Path(__file__).resolve().parent / "explorer"
"""The web explorer's static files (index.html, explorer.js, explorer.css)."""
ENDPOINTS = ("/get_reward", "/classify", "/score", "/v1/rewards", "/v1/best-of-n", "/v1/models", "/health",
             "/metrics", "/")
"""The metrics' endpoint labels (plus "/explorer" for the static files and "other" for anything else)."""


# ---------------------------------------------------------------- best-of-n's scorer
class RowScorerBridge:
    """A `Scorer` over a `RowScorer`, for code running in a worker thread (best_of_n): each ``score`` call is queued
    on the row scorer in the event loop and waited for, so candidates are micro-batched with the other requests."""

    def __init__(self, row_scorer: RowScorer, loop: asyncio.AbstractEventLoop) -> None:
        self.row_scorer = row_scorer
        self.loop = loop
        self.objective_names = list(row_scorer.objective_names)
        self.verbosity_objective = row_scorer.verbosity_objective

    def resolve_weights(self, weights: Weights) -> np.ndarray | None:
        """The row scorer's weight check."""
        return self.row_scorer.check_weights(weights)

    def score(self, prompts: Sequence[str | list[ChatMessage]], responses: Sequence[str], *, weights: Weights = None,
              batch_size: int | None = None, progress: bool = False) -> RewardOutput:
        """Scores of the rows, computed by the row scorer (`batch_size` and `progress` are the server's)."""
        conversations = check_score_inputs(prompts, responses)
        w = self.resolve_weights(weights)
        future = asyncio.run_coroutine_threadsafe(self.row_scorer.score(conversations, list(responses), w), self.loop)
        return future.result()


# ---------------------------------------------------------------- state
@dataclass
class ServerState:
    """What the endpoints share."""

    row_scorer: RowScorer
    config: ServeConfig
    model_name: str
    metrics: ServerMetrics
    policy: Sampler | None = None
    policy_name: str | None = None
    bon_scorer: Scorer | None = None
    template: QueryTemplate | None = None
    created: int = field(default_factory=lambda: int(time.time()))
    bon_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


# ---------------------------------------------------------------- metrics middleware
def endpoint_label(path: str) -> str:
    """The metrics label of a request path: a known endpoint, "/explorer", or "other" (bounded label values)."""
    if path in ENDPOINTS:
        return path
    if path.startswith("/explorer/"):
        return "/explorer"
    return "other"


class MetricsMiddleware:
    """Counts every answered HTTP request (token and size refusals included) by endpoint and status."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: list[int] = []

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException:
            self.metrics.observe_request(endpoint_label(scope["path"]), status[0] if status else 500,
                                         time.perf_counter() - started)
            raise
        if status:  # nothing was answered when the client left first
            self.metrics.observe_request(endpoint_label(scope["path"]), status[0], time.perf_counter() - started)


# ---------------------------------------------------------------- checks shared by the endpoints
def _check_rows(state: ServerState, n: int, path: str) -> None:
    limit = state.config.max_items
    if n > limit:
        raise ApiError(413, f"{n} rows in one request, over the limit of {limit} (--max-items); split the request",
                       path=path)


def _check_text(state: ServerState, text: str, path: str) -> None:
    limit = state.config.max_text_chars
    if len(text) > limit:
        raise ApiError(413, f"the text is {len(text):,} characters, over the limit of {limit:,} (--max-text-chars)",
                       path=path)


def _check_prompt_texts(state: ServerState, prompt: str | list[Any], path: str) -> None:
    if isinstance(prompt, str):
        _check_text(state, prompt, path)
    else:
        for j, message in enumerate(prompt):
            _check_text(state, message.content, f"{path}[{j}].content")


def _as_python(prompt: str | list[Any]) -> str | list[dict[str, str]]:
    """A validated prompt as plain JSON values (messages as dicts)."""
    return prompt if isinstance(prompt, str) else [{"role": m.role, "content": m.content} for m in prompt]


def _prompt_messages(prompt: str | list[Any], path: str) -> list[ChatMessage]:
    """The prompt as messages, as `paretoalign score` reads it (HH text parsed, ends with a user turn)."""
    try:
        return normalize_prompt(_as_python(prompt), field="prompt")
    except InputError as exc:
        raise input_error(exc, path) from None


def _weights(state: ServerState, weights: Any) -> np.ndarray | None:
    """The request's weights as the model's (k,) vector (None: its gating); 422 naming the bad part."""
    if weights is None:
        return None
    names = state.row_scorer.objective_names
    if isinstance(weights, dict):
        for key in weights:
            if key not in names:
                raise ApiError(422, f"unknown objective {key!r}; this model's objectives are {', '.join(names)}",
                               path=json_path(("weights", key)))
    try:
        return state.row_scorer.check_weights(weights)
    except InputError as exc:
        raise input_error(exc, "$.weights") from None


def _weights_dict(state: ServerState, w: np.ndarray | None) -> dict[str, float] | None:
    return None if w is None else {n: float(v) for n, v in zip(state.row_scorer.objective_names, w, strict=True)}


async def _score(state: ServerState, prompts: list[list[ChatMessage]], responses: list[str],
                 w: np.ndarray | None) -> RewardOutput:
    """The rows' scores from the row scorer; 503 while the server stops, 422 for rows the model refuses."""
    try:
        return await state.row_scorer.score(prompts, responses, w)
    except ScorerStopped as exc:
        raise ApiError(503, f"{exc}; retry on another server or later") from None
    except InputError as exc:
        raise ApiError(422, exc.reason, path="$") from None


def _split(state: ServerState, query: str, prompt: str | None, query_path: str,
           prompt_path: str | None) -> tuple[list[ChatMessage], str]:
    """`split_query` with its InputError located on the query or on its prompt."""
    try:
        return split_query(query, prompt, state.template)
    except InputError as exc:
        if exc.field == "prompts":
            raise input_error(exc, prompt_path or "$.prompts") from None
        raise input_error(exc, query_path) from None


def _usage(prompts: list[list[ChatMessage]], responses: list[str]) -> dict[str, int]:
    """Token usage in the OpenAI shape; the counts are estimates (characters / 4), not a tokenizer's."""
    tokens = sum(text_length_tokens(p, r) for p, r in zip(prompts, responses, strict=True))
    return {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0}


def _one_of(request: Any, names: Sequence[str]) -> tuple[str, Any] | None:
    """(name, value) of the one field of `names` the request gives; 422 when it gives several."""
    given = [(name, getattr(request, name)) for name in names if getattr(request, name) is not None]
    if len(given) > 1:
        raise ApiError(422, f"give one of {', '.join(names)}, not {' and '.join(n for n, _ in given)}",
                       path=f"$.{given[1][0]}")
    return given[0] if given else None


# ---------------------------------------------------------------- the app
def create_app(row_scorer: RowScorer, config: ServeConfig | None = None, *, model_name: str | None = None,
               policy: Sampler | None = None, bon_scorer: Scorer | None = None,
               template: QueryTemplate | None = None, metrics: ServerMetrics | None = None) -> FastAPI:
    """The HTTP app over `row_scorer` (started and stopped by the app's lifespan); see the module.

    `config` defaults to `ServeConfig()`; `model_name` to ``config.model``; a token is required when
    ``config.api_key_file`` is set. Without `policy`, /v1/best-of-n answers 404; `bon_scorer` (default: the row
    scorer itself) scores its candidates; `template` splits the templated texts of /get_reward and /classify.
    """
    config = config or ServeConfig()
    metrics = metrics or ServerMetrics()
    token = load_api_key(config.api_key_file) if config.api_key_file else None
    policy_name = None if policy is None else str(getattr(policy, "name", None) or config.policy or "policy")
    state = ServerState(row_scorer=row_scorer, config=config, model_name=model_name or config.model, metrics=metrics,
                        policy=policy, policy_name=policy_name, bon_scorer=bon_scorer, template=template)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state.bon_lock = asyncio.Lock()  # one per serving event loop
        await row_scorer.start()
        try:
            yield
        finally:
            await row_scorer.stop()

    app = FastAPI(title="paretoalign reward server", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url="/openapi.json")
    app.state.server = state
    install_error_handlers(app)

    @app.post("/v1/rewards")
    async def rewards(request: RewardsRequest) -> Response:
        """Scores of (prompt, response) rows: final score, per-objective r', gating and verbosity contribution."""
        _check_rows(state, len(request.items), "$.items")
        for i, item in enumerate(request.items):
            _check_prompt_texts(state, item.prompt, f"$.items[{i}].prompt")
            _check_text(state, item.response, f"$.items[{i}].response")
        w = _weights(state, request.weights)
        prompts = [_prompt_messages(item.prompt, f"$.items[{i}].prompt") for i, item in enumerate(request.items)]
        out = await _score(state, prompts, [item.response for item in request.items], w)
        return JSONResponse({"model": state.model_name, "objective_names": list(out.objective_names),
                             "weights": _weights_dict(state, w),
                             "results": [{"index": j, **row} for j, row in enumerate(out.rows())]})

    @app.post("/get_reward")
    async def get_reward(request: GetRewardRequest) -> Response:
        """OpenRLHF's remote reward model: templated queries (and optionally their prompts) -> rewards."""
        n = len(request.query)
        _check_rows(state, n, "$.query")
        if request.prompts is not None and len(request.prompts) != n:
            raise ApiError(422, f"{n} queries but {len(request.prompts)} prompts: give one prompt per query",
                           path="$.prompts")
        for i, query in enumerate(request.query):
            _check_text(state, query, f"$.query[{i}]")
        for i, prompt in enumerate(request.prompts or ()):
            _check_text(state, prompt, f"$.prompts[{i}]")
        w = _weights(state, request.weights)
        rows = [_split(state, query, None if request.prompts is None else request.prompts[i], f"$.query[{i}]",
                       None if request.prompts is None else f"$.prompts[{i}]")
                for i, query in enumerate(request.query)]
        out = await _score(state, [p for p, _ in rows], [r for _, r in rows], w)
        scores = [float(s) for s in out.score]
        extra: dict[str, list[float]] = {name: [float(v) for v in out.objectives[:, i]]
                                         for i, name in enumerate(out.objective_names)}
        if out.verbosity_contribution is not None:
            extra["verbosity_contribution"] = [float(v) for v in out.verbosity_contribution]
        return JSONResponse({"rewards": scores, "scores": scores, "extra_logs": extra})

    @app.post("/classify")
    async def classify(request: ClassifyRequest) -> Response:
        """vLLM-style classification: r' per objective as "probs", the top objective as "label", the score."""
        if request.input is not None and request.messages is not None:
            raise ApiError(422, "give input or messages, not both", path="$.messages")
        if request.messages is not None:
            for j, message in enumerate(request.messages):
                _check_text(state, message.content, f"$.messages[{j}].content")
            w = _weights(state, request.weights)
            messages = _as_python(request.messages)
            last = len(messages) - 1
            if messages[-1]["role"] != "assistant":
                raise ApiError(422, "the last message must be the assistant response to score",
                               path=f"$.messages[{last}].role")
            if not messages[-1]["content"].strip():
                raise ApiError(422, "the response is empty", path=f"$.messages[{last}].content")
            try:
                prompt = check_prompt(normalize_messages(messages[:-1], field="messages"), field="messages")
            except InputError as exc:
                raise input_error(exc, "$.messages") from None
            prompts, responses = [prompt], [messages[-1]["content"]]
        elif request.input is not None:
            texts = [request.input] if isinstance(request.input, str) else list(request.input)
            single = isinstance(request.input, str)
            _check_rows(state, len(texts), "$.input")
            for i, text in enumerate(texts):
                _check_text(state, text, "$.input" if single else f"$.input[{i}]")
            w = _weights(state, request.weights)
            rows = [_split(state, text, None, "$.input" if single else f"$.input[{i}]", "$.input")
                    for i, text in enumerate(texts)]
            prompts, responses = [p for p, _ in rows], [r for _, r in rows]
        else:
            raise ApiError(422, "give input (templated conversation texts) or messages (a conversation ending with "
                                "the assistant response)", path="$.input")
        out = await _score(state, prompts, responses, w)
        names = list(out.objective_names)
        data = [{"index": j, "label": names[int(np.argmax(out.objectives[j]))],
                 "probs": [float(v) for v in out.objectives[j]], "num_classes": len(names),
                 "score": float(out.score[j])} for j in range(len(out))]
        return JSONResponse({"id": f"classify-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
                             "model": state.model_name, "data": data, "usage": _usage(prompts, responses)})

    @app.post("/score")
    async def score(request: ScoreRequest) -> Response:
        """vLLM-style scoring: 1 query (user prompt) vs N documents (responses), or N vs N pairs."""
        q = _one_of(request, QUERY_FIELDS)
        d = _one_of(request, DOCUMENT_FIELDS)
        if q is None:
            raise ApiError(422, f"give the query (the user prompt) as one of {', '.join(QUERY_FIELDS)}",
                           path="$.queries")
        if d is None:
            raise ApiError(422, f"give the documents (the responses) as one of {', '.join(DOCUMENT_FIELDS)}",
                           path="$.documents")
        (q_name, q_value), (d_name, d_value) = q, d
        queries = [q_value] if isinstance(q_value, str) else list(q_value)
        documents = [d_value] if isinstance(d_value, str) else list(d_value)
        if len(queries) != 1 and len(queries) != len(documents):
            raise ApiError(422, f"{len(queries)} queries and {len(documents)} documents: give one query for all the "
                                "documents, or one query per document", path=f"$.{d_name}")
        _check_rows(state, len(documents), f"$.{d_name}")

        def where(name: str, value: Any, i: int) -> str:
            return f"$.{name}" if isinstance(value, str) else f"$.{name}[{i}]"

        for i, text in enumerate(queries):
            _check_text(state, text, where(q_name, q_value, i))
        for i, text in enumerate(documents):
            _check_text(state, text, where(d_name, d_value, i))
        w = _weights(state, request.weights)
        messages = [_prompt_messages(text, where(q_name, q_value, i)) for i, text in enumerate(queries)]
        prompts = messages * len(documents) if len(queries) == 1 else messages
        out = await _score(state, prompts, documents, w)
        data = [{"index": j, "object": "score", "score": float(s)} for j, s in enumerate(out.score)]
        return JSONResponse({"id": f"score-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
                             "model": state.model_name, "data": data, "usage": _usage(prompts, documents)})

    @app.post("/v1/best-of-n")
    async def best_of_n_endpoint(request: BestOfNRequest) -> Response:
        """Best-of-N from the server's policy: the `paretoalign bon` row of one prompt."""
        from paretoalign.inference.best_of_n import best_of_n
        from paretoalign.inference.sampling_params import SamplingParams

        if state.policy is None:
            raise ApiError(404, "this server has no policy: start it with --policy MODEL to sample Best-of-N",
                           path="$")
        limits = state.config
        if request.n > limits.max_n:
            raise ApiError(422, f"n is at most {limits.max_n} on this server (--max-n), got {request.n}", path="$.n")
        if request.max_new_tokens is not None and request.max_new_tokens > limits.max_new_tokens:
            raise ApiError(422, f"max_new_tokens is at most {limits.max_new_tokens} on this server "
                                f"(--max-new-tokens), got {request.max_new_tokens}", path="$.max_new_tokens")
        _check_prompt_texts(state, request.prompt, "$.prompt")
        w = _weights(state, request.weights)
        messages = _prompt_messages(request.prompt, "$.prompt")
        try:
            params = SamplingParams(temperature=1.0 if request.temperature is None else request.temperature,
                                    top_p=1.0 if request.top_p is None else request.top_p,
                                    top_k=request.top_k or 0,
                                    max_new_tokens=request.max_new_tokens or limits.max_new_tokens,
                                    stop=tuple(request.stop or ()), seed=request.seed)
        except InputError as exc:
            raise input_error(exc, f"$.{exc.field}" if exc.field else "$") from None
        scorer = state.bon_scorer or RowScorerBridge(state.row_scorer, asyncio.get_running_loop())
        async with state.bon_lock:
            try:
                result = (await asyncio.to_thread(best_of_n, state.policy, scorer, [messages], n=request.n,
                                                  weights=w, params=params))[0]
            except ScorerStopped as exc:
                raise ApiError(503, f"{exc}; retry later") from None
            except InputError as exc:
                field_path = {"prompt": "$.prompt", "weights": "$.weights", "n": "$.n"}.get(exc.field or "", "$")
                raise input_error(exc, field_path) from None
        return JSONResponse({"prompt": _as_python(request.prompt), **result.row()})

    @app.get("/health")
    async def health() -> Response:
        """Liveness: the model and policy served (open without a token)."""
        return JSONResponse({"status": "ok", "model": state.model_name, "policy": state.policy_name})

    @app.get("/v1/models")
    async def models() -> Response:
        """The served reward model in the OpenAI list shape, with its objectives and the server's limits."""
        entry = {"id": state.model_name, "object": "model", "created": state.created, "owned_by": "paretoalign",
                 **state.row_scorer.info(), "policy": state.policy_name, "paretoalign_version": __version__,
                 "limits": {"max_items": config.max_items, "max_text_chars": config.max_text_chars,
                            "max_n": config.max_n, "max_new_tokens": config.max_new_tokens,
                            "max_body_bytes": config.max_body_bytes}}
        return JSONResponse({"object": "list", "data": [entry]})

    @app.get("/metrics")
    async def metrics_endpoint() -> Response:
        """Prometheus metrics (text format)."""
        body, content_type = metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/")
    async def explorer_page() -> Response:
        """The web explorer."""
        page = EXPLORER_DIR / "index.html"
        if not page.is_file():
            raise ApiError(404, "the explorer page is not installed (server/explorer/index.html is missing)")
        return FileResponse(page, media_type="text/html")

    if EXPLORER_DIR.is_dir():  # absent in a source tree without the explorer: / then answers 404
        app.mount("/explorer", StaticFiles(directory=EXPLORER_DIR), name="explorer")

    # added innermost first: metrics (outermost) -> CORS -> token -> body limit -> the app
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    app.add_middleware(BearerAuthMiddleware, token=token)
    if config.cors_origins:
        app.add_middleware(CORSMiddleware, **cors_middleware_options(config.cors_origins))
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app
