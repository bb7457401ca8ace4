"""Request bodies of the HTTP API as pydantic models: strict types, unknown fields ignored.

Strict: a number where a string is expected (or a string where a number is) is a 422 naming the field, never a
silent conversion; weights and sampling numbers must be finite (``NaN`` / ``Infinity`` are refused). Unknown fields
are ignored, because OpenRLHF / vLLM clients send more than we read. Texts that hold only whitespace are refused
(422), except where the text is generated output split from a query (`GetRewardRequest.query` may hold an empty
response after its prompt). Size limits (items, characters) are the server's settings, so the endpoints check them
(413), not these models.

Unions (a prompt is a string or messages; weights a dict or a vector) are tagged ``~name`` with a discriminator, so
that only the branch the value's JSON type selects is validated, and its errors' ``loc`` (with the ``~`` tags
dropped, see `errors.json_path`) is the JSON path of the bad part.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, StrictInt, StrictStr, Tag


def _non_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("the text is empty")
    return text


NonBlank = Annotated[StrictStr, AfterValidator(_non_blank)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False, strict=True)]


class RequestModel(BaseModel):
    """Strict types, unknown fields ignored, non-finite numbers refused."""

    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)


class Message(RequestModel):
    """One chat message."""

    role: Literal["system", "user", "assistant"]
    content: StrictStr


def _kind(value: Any) -> str | None:
    """The union branch of a JSON value: ~text, ~list, ~object, ~none (None for anything else)."""
    if isinstance(value, str):
        return "~text"
    if isinstance(value, list):
        return "~list"
    if isinstance(value, dict):
        return "~object"
    if value is None:
        return "~none"
    return None


Prompt = Annotated[
    Annotated[NonBlank, Tag("~text")] | Annotated[list[Message], Field(min_length=1), Tag("~list")],
    Discriminator(_kind, custom_error_type="prompt_type",
                  custom_error_message="a prompt is a string or a list of {role, content} messages"),
]
"""A string (one user turn) or a list of messages."""

Weights = Annotated[
    Annotated[dict[str, FiniteFloat], Tag("~object")] | Annotated[list[FiniteFloat], Tag("~list")]
    | Annotated[None, Tag("~none")],
    Discriminator(_kind, custom_error_type="weights_type",
                  custom_error_message="weights are an {objective: weight} object, a list of numbers (one per "
                                       "objective) or null"),
]
"""{objective: w} (others 0), [w, ...] in objective order, or null (the model's own gating)."""

TextOrTexts = Annotated[
    Annotated[NonBlank, Tag("~text")] | Annotated[list[NonBlank], Field(min_length=1), Tag("~list")],
    Discriminator(_kind, custom_error_type="text_type",
                  custom_error_message="expected a string or a list of strings"),
]


class RewardItem(RequestModel):
    """One (prompt, response) row of /v1/rewards."""

    prompt: Prompt
    response: NonBlank


class RewardsRequest(RequestModel):
    """POST /v1/rewards."""

    items: list[RewardItem] = Field(min_length=1)
    weights: Weights = None


class GetRewardRequest(RequestModel):
    """POST /get_reward (OpenRLHF's remote reward model)."""

    query: list[NonBlank] = Field(min_length=1)
    prompts: list[NonBlank] | None = None
    labels: list[Any] | None = None
    weights: Weights = None


class ClassifyRequest(RequestModel):
    """POST /classify: templated texts (`input`) or one conversation ending with the response (`messages`)."""

    model: StrictStr | None = None
    input: TextOrTexts | None = None
    messages: list[Message] | None = Field(default=None, min_length=2)
    weights: Weights = None


class ScoreRequest(RequestModel):
    """POST /score: queries (user prompts) against documents (responses), 1 vs N or N vs N."""

    model: StrictStr | None = None
    queries: TextOrTexts | None = None
    text_1: TextOrTexts | None = None
    data_1: TextOrTexts | None = None
    documents: TextOrTexts | None = None
    items: TextOrTexts | None = None
    text_2: TextOrTexts | None = None
    data_2: TextOrTexts | None = None
    weights: Weights = None


QUERY_FIELDS = ("queries", "text_1", "data_1")
DOCUMENT_FIELDS = ("documents", "items", "text_2", "data_2")


class BestOfNRequest(RequestModel):
    """POST /v1/best-of-n."""

    prompt: Prompt
    n: StrictInt = Field(ge=1)
    max_new_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: FiniteFloat | None = Field(default=None, ge=0.0)
    top_p: FiniteFloat | None = Field(default=None, gt=0.0, le=1.0)
    top_k: StrictInt | None = Field(default=None, ge=0)
    seed: StrictInt = 0
    stop: list[Annotated[StrictStr, Field(min_length=1)]] | None = None
    weights: Weights = None
