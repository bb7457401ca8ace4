"""QueryTemplate learns chat templates (ChatML, Llama-3, Gemma, Mistral [INST], SmolLM2) and split_query splits
OpenRLHF-style queries back into (prompt messages, response)."""

from __future__ import annotations

import pytest

from paretoalign.errors import InputError
from paretoalign.server.query_split import QueryTemplate, split_query
from tests.tiny import make_tokenizer

LLAMA3 = (
    "{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{% set first_user_prefix = messages[0]['content'] + '\n\n' %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + "
    "message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token }}{% else %}"
    "{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
LLAMA2 = (  # the system prompt goes inside the first [INST] block: not header + content + footer
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '[INST] <<SYS>>\n' + message['content'] + '\n<</SYS>>\n\n' }}{% elif message['role'] == 'user' %}"
    "{% if loop.index0 == 0 or messages[loop.index0 - 1]['role'] != 'system' %}{{ '[INST] ' }}{% endif %}"
    "{{ message['content'] + ' [/INST]' }}{% else %}{{ ' ' + message['content'] + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)
SPECIALS = {
    "chatml": {},
    "llama3": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
               "additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>"]},
    "gemma": {"bos_token": "<bos>", "eos_token": "<eos>",
              "additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]},
    "mistral": {"bos_token": "<s>", "eos_token": "</s>", "additional_special_tokens": ["[INST]", "[/INST]"]},
}
TEMPLATES = {"chatml": None, "llama3": LLAMA3, "gemma": GEMMA, "mistral": MISTRAL}

CONVERSATION = [
    {"role": "user", "content": "How do I bake bread?"},
    {"role": "assistant", "content": "Mix flour, water, salt and yeast."},
    {"role": "user", "content": "And then?\nPlease explain why."},
]
SYSTEM = {"role": "system", "content": "Be brief."}
RESPONSES = ["Knead it, let it rise, then bake.", "Because the yeast needs time.\n\nThen bake it.", "Done.\n", ""]


def tokenizer_for(name: str):
    tok = make_tokenizer()
    if SPECIALS[name]:
        tok.add_special_tokens(SPECIALS[name])
    if TEMPLATES[name] is not None:
        tok.chat_template = TEMPLATES[name]
    return tok


def render(tok, messages, generation):
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)


def openrlhf_query(tok, prompt_text: str, response: str) -> str:
    """What OpenRLHF sends: the decoded prompt + response token ids, with the EOS id appended."""
    ids = list(tok(prompt_text + response)["input_ids"]) + [tok.eos_token_id]
    return tok.decode(ids, skip_special_tokens=False)


@pytest.fixture(scope="module", params=list(TEMPLATES))
def case(request):
    tok = tokenizer_for(request.param)
    return request.param, tok, QueryTemplate.from_tokenizer(tok)


def conversations(name: str):
    """The prompts to try: multi-turn, single-turn, and with a system message where the template takes one."""
    out = [CONVERSATION, CONVERSATION[:1]]
    if name != "mistral":
        out.append([SYSTEM, *CONVERSATION])
    return out


def expected_messages(name: str, messages):
    """What parse gives back: Gemma folds a system message into the first user turn, as its template renders it."""
    if name == "gemma" and messages[0]["role"] == "system":
        first = {"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}
        return [first, *messages[2:]]
    return messages


def test_the_learned_pieces(case):
    name, _, template = case
    expected = {
        "chatml": ("", "<|im_start|>user\n", "<|im_start|>assistant\n", "<|im_end|>\n", "turn"),
        "llama3": ("<|begin_of_text|>", "<|start_header_id|>user<|end_header_id|>\n\n",
                   "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>", "turn"),
        "gemma": ("<bos>", "<start_of_turn>user\n", "<start_of_turn>model\n", "<end_of_turn>\n", "folded"),
        "mistral": ("<s>", "[INST] ", "", "</s>", "none"),
    }[name]
    got = (template.start, template.headers["user"], template.headers["assistant"], template.footers["assistant"],
           template.system)
    assert got == expected
    assert template.default_system is None


def test_parse_round_trips_templated_conversations(case):
    name, tok, template = case
    for messages in conversations(name):
        assert template.parse(render(tok, messages, True)) == (expected_messages(name, messages), None)
        for response in RESPONSES:
            full = render(tok, [*messages, {"role": "assistant", "content": response}], False)
            want = response.strip() if name in ("llama3", "gemma") else response  # these templates trim
            assert template.parse(full) == (expected_messages(name, messages), want)


def test_split_query_with_and_without_the_prompt(case):
    name, tok, template = case
    for messages in conversations(name):
        prompt_text = render(tok, messages, True)
        for response in RESPONSES[:3]:
            query = openrlhf_query(tok, prompt_text, response)
            assert query.startswith(prompt_text) and query != prompt_text + response  # the EOS is in there
            want = expected_messages(name, messages)
            assert split_query(query, prompt_text, template) == (want, response)
            assert split_query(query, None, template) == (want, response)
            # without a template the prompt is one user message; the response is the same
            assert split_query(query, prompt_text, None) == ([{"role": "user", "content": prompt_text}], response)


def test_left_padding_and_trailing_end_texts_are_ignored():
    tok = tokenizer_for("chatml")
    template = QueryTemplate.from_tokenizer(tok)
    prompt_text = render(tok, CONVERSATION, True)
    query = "<pad><pad>" + prompt_text + "Knead it.\n<|im_end|>\n<|endoftext|>"
    assert split_query(query, prompt_text, template) == (CONVERSATION, "Knead it.\n")
    assert split_query(query, None, template) == (CONVERSATION, "Knead it.\n")
    assert split_query(query, prompt_text, None) == ([{"role": "user", "content": prompt_text}], "Knead it.\n")


def test_a_plain_prompt_with_a_template_is_one_user_message():
    template = QueryTemplate.from_tokenizer(tokenizer_for("chatml"))
    assert split_query("What is bread?Bread is food.<|im_end|>", "What is bread?", template) == (
        [{"role": "user", "content": "What is bread?"}], "Bread is food.")


def test_a_query_that_does_not_start_with_its_prompt():
    tok = tokenizer_for("chatml")
    template = QueryTemplate.from_tokenizer(tok)
    query = openrlhf_query(tok, render(tok, CONVERSATION, True), "Knead it.")
    for t in (template, None):
        with pytest.raises(InputError, match="does not start with its prompt") as info:
            split_query(query, render(tok, [{"role": "user", "content": "Something else?"}], True), t)
        assert info.value.field == "query"


def test_a_query_without_prompt_needs_a_template():
    with pytest.raises(InputError, match="give prompts or start the server with --query-template") as info:
        split_query("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>", None, None)
    assert info.value.field == "prompts"


def test_a_query_without_an_assistant_turn(case):
    name, tok, template = case
    for text in (render(tok, CONVERSATION, True), render(tok, CONVERSATION, False)):
        with pytest.raises(InputError, match="no assistant turn") as info:
            split_query(text, None, template)
        assert info.value.field == "query"


def test_text_that_is_not_a_templated_conversation():
    template = QueryTemplate.from_tokenizer(tokenizer_for("llama3"))
    with pytest.raises(InputError, match="does not start as this chat template") as info:
        template.parse("hello there")
    assert info.value.field == "query"
    with pytest.raises(InputError, match="unexpected text at character"):
        template.parse("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>stray text")
    with pytest.raises(InputError, match="a query is a string"):
        split_query(["not", "a", "string"], None, template)
    with pytest.raises(InputError, match="the prompt is empty") as info:
        split_query("anything", "  ", template)
    assert info.value.field == "prompts"


@pytest.mark.parametrize(("chat_template", "match"), [
    (None, "has no chat template"),
    ("{% for message in messages %}X{% endfor %}", "cannot learn"),
    ("{% for message in messages|reverse %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}",
     "cannot learn"),
    ("{{ raise_exception('no chat here') }}", "cannot learn.*no chat here"),
    (LLAMA2, "cannot learn.*system message"),
])
def test_templates_that_cannot_be_learned(chat_template, match):
    tok = make_tokenizer()
    tok.chat_template = chat_template
    with pytest.raises(InputError, match=match) as info:
        QueryTemplate.from_tokenizer(tok)
    assert info.value.field == "query_template"


def test_load_names_a_reference_that_cannot_load(tmp_path):
    for reference in (str(tmp_path), "/no/such/tokenizer/folder"):
        with pytest.raises(InputError, match="cannot load the tokenizer") as info:
            QueryTemplate.load(reference)
        assert reference in str(info.value) and info.value.field == "query_template"


def test_load_reads_a_tokenizer_folder(tmp_path):
    tok = tokenizer_for("llama3")
    tok.save_pretrained(tmp_path)
    template = QueryTemplate.load(str(tmp_path))
    assert template.source == str(tmp_path) and template.headers["user"].startswith("<|start_header_id|>")


@pytest.mark.integration
def test_smollm2_drops_its_injected_default_system_prompt():
    from transformers import AutoTokenizer

    from paretoalign.embed.models import resolve_model

    template = QueryTemplate.load("smollm2")
    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2"))
    assert template.default_system and template.default_system in render(tok, CONVERSATION, True)
    for messages in (CONVERSATION, CONVERSATION[:1], [SYSTEM, *CONVERSATION]):
        prompt_text = render(tok, messages, True)
        assert template.parse(prompt_text) == (messages, None)
        for response in RESPONSES[:3]:
            query = openrlhf_query(tok, prompt_text, response)
            assert split_query(query, prompt_text, template) == (messages, response)
            assert split_query(query, None, template) == (messages, response)
