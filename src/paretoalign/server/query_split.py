"""Splitting OpenRLHF-style reward queries (one chat-templated string) back into (prompt messages, response).

OpenRLHF's remote reward model receives ``query = tokenizer.decode(prompt_ids + response_ids)`` (special tokens kept)
and, optionally, ``prompts`` = the prompt text the policy generated from. `split_query` turns one query into what
`paretoalign score` takes for the same row: the prompt messages and the response text.

`QueryTemplate` learns a tokenizer's chat template by rendering sentinel conversations (user / assistant / user,
with and without a leading system message, with and without the generation prompt) and reading off:

- the text before the first turn (``start``, e.g. a BOS token),
- each role's header and footer (``"<|im_start|>user\\n"`` ... ``"<|im_end|>\\n"``; Llama-3 ``<|start_header_id|>``
  headers and ``<|eot_id|>``; Gemma's ``<start_of_turn>user`` / ``model``; Mistral's ``[INST] ... [/INST]`` with an
  empty assistant header),
- the generation prompt, and
- a default system prompt the template injects when the conversation has none (SmolLM2 does). `parse` drops a
  system message equal to it, so the messages are what the user gave.

Supported: templates that render each message as ``header(role) + content + footer(role)`` in order, between a fixed
start and an optional generation prompt. How a system message is handled is learned too: as its own turn, folded
into the first user turn (Gemma: `parse` then returns that user turn with the system text in front of it, as the
template rendered it), or not at all (a template that refuses system messages). Templates that rewrite contents
(e.g. Llama-3.1's date lines inside the system turn), that cannot tell the roles apart, or that render a turn in
any other way are refused by `QueryTemplate.from_tokenizer` with an InputError. Contents are returned as rendered:
a template that trims whitespace (Llama-3, Gemma) gives trimmed contents.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from paretoalign.data.schema import Message
from paretoalign.errors import InputError

if TYPE_CHECKING:
    from paretoalign.embed.protocols import Tokenizer

END_MARKERS = ("<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>", "<eos>",
               "<|end|>")
"""End-of-turn / end-of-sequence texts removed from the end of a response, whatever the template."""
PAD_MARKERS = ("<pad>", "<|pad|>", "[PAD]", "<|finetune_right_pad_id|>", "<|endoftext|>", "</s>", "<|im_end|>",
               "<|eot_id|>", "<eos>")
"""Padding a left-padded policy batch may leave in front of a decoded query (removed when the prompt follows)."""
FIELD = "query_template"

_SYSTEM, _USER, _ASSISTANT = "system", "user", "assistant"
_S, _U1, _A1, _U2, _S2 = "QsysZq81", "QuoneZq82", "QaoneZq83", "QutwoZq84", "QsystwoZq85"
"""Sentinel contents: unlikely anywhere in a template, and unchanged by a template's trim."""


_Render = Callable[[list[Message], bool], str]


class _Unlearnable(Exception):
    """Why a chat template does not fit the header + content + footer model."""


def _msg(role: str, content: str) -> Message:
    return {"role": role, "content": content}


def _split(text: str, contents: list[str]) -> list[str]:
    """The texts around each content of a rendering, in order (each content must occur exactly once)."""
    parts, pos = [], 0
    for content in contents:
        if text.count(content) != 1:
            raise _Unlearnable(f"the template does not render the message content {content!r} exactly once")
        at = text.find(content)
        if at < pos:
            raise _Unlearnable("the template does not render the messages in order")
        parts.append(text[pos:at])
        pos = at + len(content)
    parts.append(text[pos:])
    return parts


def _strip_end(text: str, markers: tuple[str, ...]) -> str:
    """`text` without trailing end markers (and the newlines after them); the text's own trailing newlines stay."""
    while True:
        trimmed = text.rstrip("\n")
        marker = next((m for m in markers if trimmed.endswith(m)), None)
        if marker is None:
            return text
        text = trimmed[:-len(marker)]


def _strip_leading(text: str, markers: tuple[str, ...], keep: str = "") -> str:
    """`text` without leading padding markers (stops as soon as it starts with `keep`, when `keep` is given)."""
    while not (keep and text.startswith(keep)):
        marker = next((m for m in markers if text.startswith(m)), None)
        if marker is None:
            break
        text = text[len(marker):]
    return text


def _by_length(markers: list[str | None]) -> tuple[str, ...]:
    return tuple(sorted({m for m in markers if m}, key=len, reverse=True))


class QueryTemplate:
    """A chat template learned from a tokenizer: parses templated conversation text back into messages."""

    def __init__(self, *, start: str, headers: dict[str, str], footers: dict[str, str], generation: str,
                 system: str, default_system: str | None = None, eos_token: str | None = None,
                 pad_token: str | None = None, source: str | None = None) -> None:
        self.start = start
        """The text before the first turn (a BOS token, or nothing)."""
        self.headers = dict(headers)
        """role -> the text that opens its turn (roles the template renders as turns of their own)."""
        self.footers = dict(footers)
        """role -> the text that closes its turn."""
        self.generation = generation
        """The generation prompt that follows the last turn when the model is to answer."""
        self.system = system
        """How system messages render: "turn" (a turn of their own), "folded" (into the first user turn), "none"."""
        self.default_system = default_system
        """The system prompt the template injects when a conversation has none (None: it injects nothing)."""
        self.eos_token = eos_token
        self.pad_token = pad_token
        self.source = source
        """The tokenizer reference it was loaded from (None: built from a tokenizer object)."""
        self.end_markers = _by_length([*END_MARKERS, eos_token, self.footers.get(_ASSISTANT),
                                       self.footers.get(_ASSISTANT, "").strip()])
        """Texts that end a response (removed from its end)."""
        self.pad_markers = _by_length([*PAD_MARKERS, pad_token, eos_token])
        """Texts a left-padded batch may leave in front of a query."""
        turns = [(h, role) for role, h in self.headers.items()]
        if generation and generation != self.headers.get(_ASSISTANT):
            turns.append((generation, _ASSISTANT))
        self._turn_headers = sorted(turns, key=lambda t: len(t[0]), reverse=True)  # longest match first

    def __repr__(self) -> str:
        return (f"QueryTemplate(source={self.source!r}, start={self.start!r}, headers={self.headers!r}, "
                f"footers={self.footers!r}, generation={self.generation!r}, system={self.system!r}, "
                f"default_system={self.default_system!r})")

    # ------------------------------------------------------------------ learning

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer) -> QueryTemplate:
        """Learn the tokenizer's chat template (InputError(field="query_template") when it does not fit, see the
        module)."""
        if not getattr(tokenizer, "chat_template", None):
            raise InputError("the tokenizer has no chat template, so queries cannot be split into turns: give "
                             "prompts with each query, or a --query-template whose tokenizer has a chat template",
                             field=FIELD)
        try:
            template = cls._learn(tokenizer)
        except _Unlearnable as exc:
            raise InputError(f"cannot learn the tokenizer's chat template: {exc}; supported are templates that "
                             "render every message as header + content + footer (ChatML, Llama-3, Gemma, Mistral "
                             "[INST]); give prompts with each query instead", field=FIELD) from None
        return template

    @classmethod
    def _learn(cls, tokenizer: Tokenizer) -> QueryTemplate:
        def render(messages: list[Message], generation: bool) -> str:
            try:
                text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
            except Exception as exc:  # jinja's TemplateError (raise_exception), or whatever the template trips on
                raise _Unlearnable(f"rendering {[m['role'] for m in messages]} failed ({type(exc).__name__}: "
                                   f"{exc})") from exc
            if not isinstance(text, str):
                raise _Unlearnable(f"apply_chat_template(tokenize=False) returned {type(text).__name__}, not text")
            return text

        u, a, u2 = _msg(_USER, _U1), _msg(_ASSISTANT, _A1), _msg(_USER, _U2)
        before_u, footer_user = _split(render([u], False), [_U1])
        before_ug, tail_ug = _split(render([u], True), [_U1])
        before_ua, glue_ua, footer_assistant = _split(render([u, a], False), [_U1, _A1])
        before_uau, glue_ua2, glue_au, tail_uau = _split(render([u, a, u2], True), [_U1, _A1, _U2])
        if len({before_u, before_ug, before_ua, before_uau}) != 1:
            raise _Unlearnable("the text before the first message depends on the later ones")
        if not footer_user or not footer_assistant:
            raise _Unlearnable("a user or assistant turn has no closing text")
        if glue_ua != glue_ua2 or not glue_ua.startswith(footer_user):
            raise _Unlearnable("the text between a user and an assistant turn is not the user footer + a header")
        header_assistant = glue_ua[len(footer_user):]
        if not glue_au.startswith(footer_assistant):
            raise _Unlearnable("the text between an assistant and a user turn is not the assistant footer + a header")
        header_user = glue_au[len(footer_assistant):]
        if not tail_ug.startswith(footer_user) or tail_ug != tail_uau:
            raise _Unlearnable("the generation prompt does not follow the last user turn's footer")
        generation = tail_ug[len(footer_user):]
        if not header_user or header_user == header_assistant:
            raise _Unlearnable(f"user and assistant turns cannot be told apart (headers {header_user!r}, "
                               f"{header_assistant!r})")
        if not before_u.endswith(header_user):
            raise _Unlearnable("the first user turn does not open with the user header")
        lead = before_u[:-len(header_user)]  # the start, plus a default system turn if the template injects one

        start, system, default_system = lead, "none", None
        headers = {_USER: header_user, _ASSISTANT: header_assistant}
        footers = {_USER: footer_user, _ASSISTANT: footer_assistant}
        try:
            with_system = render([_msg(_SYSTEM, _S), u, a, u2], True)
        except _Unlearnable:
            with_system = None  # the template refuses system messages: queries never hold one
        if with_system is not None and _S in with_system:
            before_s, glue_su, *_ = _split(with_system, [_S, _U1, _A1, _U2])
            if before_s == before_u:
                system = "folded"  # the system text sits inside the first user turn (Gemma)
            elif glue_su.endswith(header_user):
                footers[_SYSTEM] = glue_su[:-len(header_user)]
                header_system = cls._system_header(render, before_s, lead, header_user, footer_assistant,
                                                   [u, a, u2])
                start = before_s[:-len(header_system)]
                headers[_SYSTEM] = header_system
                system = "turn"
                if lead != start:
                    injected = start + header_system
                    if not (lead.startswith(injected) and lead.endswith(footers[_SYSTEM])
                            and len(lead) >= len(injected) + len(footers[_SYSTEM])):
                        raise _Unlearnable("the text before the first user turn is neither the start nor a default "
                                           "system turn")
                    default_system = lead[len(injected):len(lead) - len(footers[_SYSTEM])]
                if not footers[_SYSTEM]:
                    raise _Unlearnable("a system turn has no closing text")
            else:
                raise _Unlearnable("a system message is rendered neither as a turn of its own nor inside the first "
                                   "user turn")

        template = cls(start=start, headers=headers, footers=footers, generation=generation, system=system,
                       default_system=default_system, eos_token=_token_text(tokenizer, "eos_token"),
                       pad_token=_token_text(tokenizer, "pad_token"))
        template._check(render, u, a, u2, with_system if system == "turn" else None)
        return template

    @staticmethod
    def _system_header(render: _Render, before_s: str, lead: str, header_user: str, footer_assistant: str,
                       conversation: list[Message]) -> str:
        """The header of a system turn: what follows the start in front of a leading system message."""
        candidates = []
        if before_s.startswith(lead):  # no default system turn: the no-system text starts the same way
            candidates.append(before_s[len(lead):])
        try:  # a system message in mid-conversation shows its header after the assistant footer
            _, _, glue, *_ = _split(render([*conversation[:2], _msg(_SYSTEM, _S2), conversation[2]], True),
                                    [_U1, _A1, _S2, _U2])
            if glue.startswith(footer_assistant):
                candidates.append(glue[len(footer_assistant):])
        except _Unlearnable:
            pass
        if _USER in header_user:
            candidates.append(header_user.replace(_USER, _SYSTEM, 1))
        for header in candidates:
            if header and before_s.endswith(header):
                return header
        raise _Unlearnable("cannot find the header of a system turn")

    def _check(self, render: _Render, u: Message, a: Message, u2: Message, with_system: str | None) -> None:
        """Parse the sentinel renderings back (what is learned must reproduce them)."""
        cases = [(render([u, a, u2], True), ([u, a, u2], None)), (render([u, a], False), ([u], _A1)),
                 (render([u], True), ([u], None))]
        if with_system is not None:
            cases.append((with_system, ([_msg(_SYSTEM, _S), u, a, u2], None)))
        for text, expected in cases:
            try:
                got = self.parse(text)
            except InputError as exc:
                raise _Unlearnable(f"the learned turns do not parse the template's own output ({exc.reason})") from None
            if got != expected:
                raise _Unlearnable(f"the learned turns parse the template's own output as {got}, not {expected}")

    # ------------------------------------------------------------------ parsing

    def looks_templated(self, text: str) -> bool:
        """Whether `text` starts as this template's conversations do (its start, then a turn header)."""
        body = _strip_leading(text, self.pad_markers, keep=self.start)
        if not body.startswith(self.start):
            return False
        rest = body[len(self.start):]
        return any(h and rest.startswith(h) for h, _ in self._turn_headers)

    def _only_end(self, rest: str) -> bool:
        while True:
            rest = rest.lstrip()
            marker = next((m for m in self.end_markers if rest.startswith(m)), None)
            if marker is None:
                return not rest
            rest = rest[len(marker):]

    def parse(self, text: str, *, field: str = "query") -> tuple[list[Message], str | None]:
        """A templated conversation as (the messages before the last assistant turn, that turn's content), or
        (all messages, None) when the text ends with the generation prompt or a user turn.

        A system message equal to the template's injected default system prompt is dropped; leading padding and
        trailing end-of-sequence texts are ignored; an unfinished last turn runs to the end of the text.
        InputError(field=field) for text that is not such a conversation.
        """
        if not isinstance(text, str):
            raise InputError(f"must be a string, got {type(text).__name__}", field=field)
        text = _strip_leading(text, self.pad_markers, keep=self.start)
        if not text.startswith(self.start):
            raise InputError(f"does not start as this chat template's conversations do ({self.start!r}): "
                             f"{text[:60]!r}", field=field)
        turns: list[tuple[str, str]] = []
        pos, n = len(self.start), len(text)
        while pos < n:
            rest = text[pos:]
            after_prompt = not turns or turns[-1][0] != _ASSISTANT
            if (after_prompt and not self.headers[_ASSISTANT]
                    and rest.startswith(self.footers[_ASSISTANT])):  # an empty reply where replies have no header
                turns.append((_ASSISTANT, ""))
                pos += len(self.footers[_ASSISTANT])
                continue
            if self._only_end(rest):
                break
            if self.generation and after_prompt and (
                    rest == self.generation or rest.rstrip() == self.generation.rstrip()):
                break
            match = next(((h, role) for h, role in self._turn_headers if text.startswith(h, pos)), None)
            if match is None:
                expected = ", ".join(repr(h) for h, _ in self._turn_headers if h)
                raise InputError(f"unexpected text at character {pos}: {rest[:60]!r} (a turn of this chat template "
                                 f"starts with one of {expected})", field=field)
            header, role = match
            begin = pos + len(header)
            end = text.find(self.footers[role], begin)
            if end < 0:  # an unfinished turn (a response cut at the length limit), or a footer without its newline
                turns.append((role, _strip_end(text[begin:], self.end_markers)))
                break
            turns.append((role, text[begin:end]))
            pos = end + len(self.footers[role])
        if turns and self.default_system is not None and turns[0] == (_SYSTEM, self.default_system):
            turns = turns[1:]
        if not turns:
            raise InputError("holds no conversation turns", field=field)
        messages = [_msg(role, content) for role, content in turns]
        if turns[-1][0] == _ASSISTANT:
            return messages[:-1], messages[-1]["content"]
        return messages, None

    def prompt_messages(self, prompt: str, *, field: str = "prompts") -> list[Message]:
        """The messages of a prompt text: parsed when it is templated, else one user message."""
        if not self.looks_templated(prompt):
            return [_msg(_USER, prompt)]
        messages = self.parse(prompt, field=field)[0]
        if not messages:
            raise InputError("the prompt holds no messages before its assistant turn", field=field)
        return messages

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, reference: str, *, trust_remote_code: bool = False) -> QueryTemplate:
        """Learn the chat template of a tokenizer: an alias (``smollm2``), a model folder or a hub id (only the
        tokenizer loads)."""
        from transformers import AutoTokenizer

        from paretoalign.embed.models import check_remote_code, quiet_transformers, resolve_model

        try:
            location = resolve_model(str(reference))
            if Path(location).is_dir():
                check_remote_code(location, trust_remote_code=trust_remote_code is True,
                                  context="the --query-template tokenizer")
        except InputError as exc:
            raise InputError(f"query template {reference!r}: {exc.reason}", path=exc.path, field=FIELD) from None
        try:
            with quiet_transformers():
                tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code is True)
        except (OSError, ValueError, KeyError, ImportError) as exc:
            raise InputError(f"cannot load the tokenizer of {reference!r} ({type(exc).__name__}: {exc})",
                             field=FIELD) from None
        try:
            template = cls.from_tokenizer(tokenizer)
        except InputError as exc:
            raise InputError(f"{reference!r}: {exc.reason}", field=FIELD) from None
        template.source = str(reference)
        return template


def _token_text(tokenizer: Tokenizer, name: str) -> str | None:
    value = getattr(tokenizer, name, None)
    return value if isinstance(value, str) and value else None


def split_query(query: str, prompt: str | None, template: QueryTemplate | None) -> tuple[list[Message], str]:
    """(prompt messages, response) of an OpenRLHF query (see the module).

    With `prompt`: the query must start with it; the response is the rest, without trailing end-of-turn texts; the
    prompt's messages come from `template` when it is templated, else it is one user message. Without `prompt`:
    `template` parses the query and its last assistant turn is the response. InputError(field="query" or
    "prompts") for a query that does not fit.
    """
    if not isinstance(query, str):
        raise InputError(f"a query is a string, got {type(query).__name__}", field="query")
    if prompt is not None:
        if not isinstance(prompt, str):
            raise InputError(f"a prompt is a string, got {type(prompt).__name__}", field="prompts")
        if not prompt.strip():
            raise InputError("the prompt is empty", field="prompts")
        pads = template.pad_markers if template is not None else PAD_MARKERS
        ends = template.end_markers if template is not None else END_MARKERS
        body = query if query.startswith(prompt) else _strip_leading(query, pads, keep=prompt)
        if not body.startswith(prompt):
            raise InputError(f"the query does not start with its prompt: the query begins {query[:60]!r}, the "
                             f"prompt {prompt[:60]!r}", field="query")
        response = _strip_end(body[len(prompt):], ends)
        messages = template.prompt_messages(prompt) if template is not None else [_msg(_USER, prompt)]
        return messages, response
    if template is None:
        raise InputError("this query comes without its prompt: give prompts or start the server with "
                         "--query-template", field="prompts")
    messages, response = template.parse(query)
    if response is None:
        raise InputError("the query has no assistant turn to score: it ends with the generation prompt or a "
                         "user turn", field="query")
    if not messages:
        raise InputError("the query has no prompt before its assistant turn", field="query")
    return messages, response
