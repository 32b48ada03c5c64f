"""The Backend contract, checked on every backend that can run here (backends/base.py's docstring).

* The scoring rule: a choice's log-probability is the sum of its tokens' log-probabilities,
  teacher-forced. Each backend's `score` is compared with a SEPARATE computation of that sum:
  one full forward pass of prompt + choice with every position's logits (hf; vllm's score logic on
  a stand-in for `vllm.LLM` that reports prompt log-probs from the same tiny model), a second
  llama.cpp context keeping all logits (llamacpp, the real Gemma 3 270M GGUF), and the known
  distribution of a loopback "language model" server (openai, with and without a tokenize
  endpoint). `TIE` is several tokens in every case (the test checks it).
* An empty choice list, a repeated choice, and a choice of zero tokens are BackendErrors.
* Results are :class:`ChoiceScores`, in request order, nothing floored.
* Chat templates are applied with `enable_thinking=False` everywhere (a template that thinks by
  default would otherwise open a thinking block), checked on the backends and by a scan of src/.
"""

from __future__ import annotations

import ast
import hashlib
import math
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from biasjudge.backends.base import (
    ChoiceScores,
    GenerationParams,
    PromptRequest,
    check_choices,
    continuation_tokens,
    floored_choices,
)
from biasjudge.errors import BackendError
from biasjudge.prompts.render import SCORE_PREFIX, render_prompt, tokenizer_chat_template
from biasjudge.records import ChatMessage
from http_stub import Reply, StubServer

SRC = Path(__file__).resolve().parents[1] / "src" / "biasjudge"

REQUESTS = [
    PromptRequest(
        (ChatMessage(role="system", content="You judge."), ChatMessage(role="user", content="A or B?")), SCORE_PREFIX
    ),
    PromptRequest(
        (ChatMessage(role="user", content="Response A: the old man. Response B: unknown. Which one is biased?"),),
        SCORE_PREFIX,
    ),
]
"""Two prompts of different lengths (so batched backends pad one of them)."""

CHOICE_SETS = [("A", "B", "TIE"), ("TIE", "TI", "T")]
"""The verdicts, and choices that share leading tokens (so a shared path must serve each correctly)."""

Reference = Callable[[PromptRequest, str], tuple[float, int]]
"""(log p(choice | prompt) computed independently, number of the choice's tokens)."""


@dataclass
class Case:
    backend: Any
    reference: Reference
    tolerance: float
    """abs tolerance between the backend and the reference (kernel differences only)."""


def log_softmax(values: list[float]) -> list[float]:
    top = max(values)
    total = math.log(sum(math.exp(v - top) for v in values)) + top
    return [v - total for v in values]


# --------------------------------------------------------------------------- a tiny transformers model

SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<|turn>", "<turn|>", "<|think|>"]
THINKS_BY_DEFAULT = (
    "{{ bos_token }}"
    "{% if enable_thinking is not defined or enable_thinking %}{{ '<|turn>system\n<|think|><turn|>\n' }}{% endif %}"
    "{% for message in messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<|turn>' + role + '\n' + message['content'] + '<turn|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|turn>model\n' }}{% endif %}"
)
"""A Gemma-4-style template that turns thinking ON unless the caller passes enable_thinking=False
(as Qwen 3's does): a backend that forgets the flag renders `<|think|>` and is refused."""


def _char_tokenizer() -> Any:
    """A tokenizer with one token per character (so `TIE` is three tokens) and Gemma 4's turn markers."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    chars = [chr(i) for i in range(32, 127)] + ["\n"]
    vocab = {t: i for i, t in enumerate(SPECIALS + chars)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.add_special_tokens({"additional_special_tokens": ["<|turn>", "<turn|>", "<|think|>"]})
    fast.chat_template = THINKS_BY_DEFAULT
    return fast


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tokenizer = _char_tokenizer()
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=64,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-gemma3-chars")
    Gemma3ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def full_logprobs(model: Any, ids: list[int]) -> Any:
    """log-softmax of EVERY position's logits of one unpadded sequence (the reference computation)."""
    import torch

    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    return torch.log_softmax(logits.float(), dim=-1)


def tokens_reference(
    model: Any, tokenize: Callable[[str], list[int]], render: Callable[[PromptRequest], str]
) -> Reference:
    """The rule computed directly: tokens of prompt + choice after the prompt, one full forward pass."""

    def reference(request: PromptRequest, choice: str) -> tuple[float, int]:
        text = render(request)
        prompt, joint = tokenize(text), tokenize(text + choice)
        assert joint[: len(prompt)] == prompt  # one token per character: no boundary merge
        choice_ids = joint[len(prompt) :]
        logprobs = full_logprobs(model, joint)
        total = sum(float(logprobs[len(prompt) - 1 + j, t]) for j, t in enumerate(choice_ids))
        return total, len(choice_ids)

    return reference


@pytest.fixture(scope="module")
def hf_case(tiny_dir: Path) -> Iterator[Case]:
    from biasjudge.backends.hf import HFBackend

    backend = HFBackend(str(tiny_dir), spec="hf:tiny", dtype="float32", device="cpu", batch_size=2)
    yield Case(backend, tokens_reference(backend.model, backend.tokenize, backend.render), 1e-4)
    backend.close()


# --------------------------------------------------------------------------- vllm's logic on a stand-in


class FakeLLM:
    """Stands in for `vllm.LLM` (vllm needs a GPU): the tiny model's prompt log-probs, as vLLM returns them."""

    def __init__(self, model: str, **options: Any) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.options = options
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.model = AutoModelForCausalLM.from_pretrained(model).eval()

    def get_tokenizer(self) -> Any:
        return self.tokenizer

    def generate(self, prompts: list[dict[str, list[int]]], sampling: Any, use_tqdm: bool = False) -> list[Any]:
        assert sampling.prompt_logprobs == 0 and sampling.max_tokens == 1
        outputs = []
        for prompt in prompts:
            ids = prompt["prompt_token_ids"]
            logprobs = full_logprobs(self.model, ids)
            entries: list[dict[int, Any] | None] = [None]  # vLLM gives position 0 no log-prob
            entries += [
                {ids[k]: types.SimpleNamespace(logprob=float(logprobs[k - 1, ids[k]]))} for k in range(1, len(ids))
            ]
            outputs.append(types.SimpleNamespace(prompt_logprobs=entries, outputs=[]))
        return outputs


@pytest.fixture(scope="module")
def vllm_case(tiny_dir: Path) -> Iterator[Case]:
    import biasjudge.backends.vllm as vllm_module

    fake_vllm = types.SimpleNamespace(LLM=FakeLLM, SamplingParams=lambda **kw: types.SimpleNamespace(**kw))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vllm_module, "import_optional", lambda *args, **kwargs: fake_vllm)
        backend = vllm_module.VLLMBackend(str(tiny_dir), spec="vllm:tiny")

    def render(request: PromptRequest) -> str:
        return backend._tokens(request)[0]

    yield Case(backend, tokens_reference(backend._llm.model, backend._ids, render), 1e-4)
    backend.close()


# --------------------------------------------------------------------------- a loopback "language model" server

VOCAB = ["A", "B", "C", "T", "I", "E", "TI", "IE", "<", ">", " ", "x"]
"""The stub model's tokens (it predicts only these; other characters are tokenised one by one)."""
IDS = {t: i for i, t in enumerate(VOCAB)}
BOS_ID = 999


def lm_logprobs(context: str) -> dict[str, float]:
    """The stub model's next-token log-probabilities after `context`: a fixed function of the text."""
    raw = [
        int.from_bytes(hashlib.sha256(f"{context}\x00{t}".encode()).digest()[:4], "big") / 2**32 * 6 - 3 for t in VOCAB
    ]
    return dict(zip(VOCAB, log_softmax(raw), strict=True))


def lm_tokenize(text: str) -> list[str]:
    """Longest match over VOCAB, else one character (so `TIE` = `TI` + `E`)."""
    pieces: list[str] = []
    i = 0
    while i < len(text):
        match = next((t for t in sorted(VOCAB, key=len, reverse=True) if text.startswith(t, i)), text[i])
        pieces.append(match)
        i += len(match)
    return pieces


def lm_ids(text: str) -> list[int]:
    return [BOS_ID] + [IDS[p] if p in IDS else 1000 + ord(p) for p in lm_tokenize(text)]


def lm_text(ids: list[int]) -> str:
    by_id = {i: t for t, i in IDS.items()}
    return "".join(by_id[i] if i in by_id else chr(i - 1000) for i in ids if i != BOS_ID)


def lm_server(*, tokenizer: bool) -> StubServer:
    def completions(body: Any) -> Reply:
        ranked = sorted(lm_logprobs(body["prompt"]).items(), key=lambda kv: -kv[1])[: body["logprobs"]]
        choice = {"text": ranked[0][0], "finish_reason": "length", "logprobs": {"top_logprobs": [dict(ranked)]}}
        return Reply(200, {"choices": [choice]})

    handlers: dict[str, Callable[[Any], Reply]] = {
        "/v1/completions": completions,
        "/v1/models": lambda body: Reply(200, {"data": [{"id": "stub-lm"}]}),
    }
    if tokenizer:  # llama-cpp-python's endpoints (BOS added, like it does)
        handlers["/extras/tokenize"] = lambda body: Reply(200, {"tokens": lm_ids(body["input"])})
        handlers["/extras/detokenize"] = lambda body: Reply(200, {"text": lm_text(body["tokens"])})
    return StubServer(handlers=handlers)


def lm_reference(*, tokenizer: bool) -> Reference:
    def reference(request: PromptRequest, choice: str) -> tuple[float, int]:
        prompt = render_prompt(request.messages, chat_format="gemma4", assistant_prefix=request.assistant_prefix)
        if tokenizer:  # the server's tokenisation of prompt + choice after the prompt
            joint, head = lm_tokenize(prompt + choice), lm_tokenize(prompt)
            assert joint[: len(head)] == head
            pieces = joint[len(head) :]
        else:  # no tokenizer: the most probable token continuing the choice, step by step
            pieces, rest = [], choice
            while rest:
                top = lm_logprobs(prompt + "".join(pieces))
                pieces.append(max((lp, t) for t, lp in top.items() if rest.startswith(t))[1])
                rest = rest[len(pieces[-1]) :]
        total = sum(lm_logprobs(prompt + "".join(pieces[:k]))[p] for k, p in enumerate(pieces))
        return total, len(pieces)

    return reference


def _openai_case(tokenizer: bool) -> Iterator[Case]:
    from biasjudge.backends.openai import OpenAIBackend

    server = lm_server(tokenizer=tokenizer)
    backend = OpenAIBackend(server.url, top_logprobs=len(VOCAB), max_retries=0, concurrency=2)
    try:
        yield Case(backend, lm_reference(tokenizer=tokenizer), 1e-9)
    finally:
        backend.close()
        server.close()


@pytest.fixture(scope="module")
def openai_case() -> Iterator[Case]:
    yield from _openai_case(tokenizer=True)


@pytest.fixture(scope="module")
def openai_untokenized_case() -> Iterator[Case]:
    yield from _openai_case(tokenizer=False)


# --------------------------------------------------------------------------- llama.cpp on the real 270M

LLAMA_TOLERANCE = 0.1
"""abs tolerance (nats) between llama.cpp's score and a second context that evaluates prompt + choice
in one batch with all logits kept: the Q4 kernels' results move slightly with the batch split
(measured: 0 for one-token choices, up to 0.033 for TIE, whose second token the backend decodes
alone). A broken rule is off by a whole token's log-prob (about 7 nats for `IE` here)."""


@pytest.fixture(scope="module")
def llamacpp_case(gguf_model: Path) -> Iterator[Case]:
    llama_cpp = pytest.importorskip("llama_cpp")
    import numpy as np

    from biasjudge.backends.llamacpp import LlamaCppBackend, log_softmax

    backend = LlamaCppBackend(str(gguf_model), spec="llamacpp:contract", n_ctx=512)
    # All logits of a short sequence: 128 positions x the 262k vocabulary.
    ref = llama_cpp.Llama(model_path=str(gguf_model), n_ctx=128, n_batch=128, logits_all=True, verbose=False)

    def reference(request: PromptRequest, choice: str) -> tuple[float, int]:
        text = backend.render(request)
        prompt = ref.tokenize(text.encode(), add_bos=True, special=True)
        joint = ref.tokenize((text + choice).encode(), add_bos=True, special=True)
        assert joint[: len(prompt)] == prompt
        choice_ids = joint[len(prompt) :]
        ref.reset()
        ref.eval(joint)
        scores = np.asarray(ref.scores[: len(joint)])
        total = sum(float(log_softmax(scores[len(prompt) - 1 + j])[t]) for j, t in enumerate(choice_ids))
        return total, len(choice_ids)

    yield Case(backend, reference, LLAMA_TOLERANCE)
    ref.close()
    backend.close()


CASES = [
    "hf_case",
    "vllm_case",
    "openai_case",
    "openai_untokenized_case",
    pytest.param("llamacpp_case", marks=pytest.mark.slow),
]


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest) -> Case:
    return request.getfixturevalue(request.param)


# --------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("choices", CHOICE_SETS, ids=["-".join(c) for c in CHOICE_SETS])
def test_a_choice_scores_the_teacher_forced_sum_of_its_tokens(case: Case, choices: tuple[str, ...]) -> None:
    results = case.backend.score(REQUESTS, choices)
    assert len(results) == len(REQUESTS)
    for request, scores in zip(REQUESTS, results, strict=True):
        assert list(scores) == list(choices)
        for choice in choices:
            expected, n_tokens = case.reference(request, choice)
            if choice == "TIE":
                assert n_tokens >= 2, "TIE must be several tokens here, or this test proves nothing"
            assert scores[choice] == pytest.approx(expected, abs=case.tolerance), choice


def test_results_are_choice_scores_in_request_order(case: Case) -> None:
    forward = case.backend.score(REQUESTS, ("A", "TIE"))
    backward = case.backend.score(REQUESTS[::-1], ("A", "TIE"))[::-1]
    for a, b in zip(forward, backward, strict=True):
        assert isinstance(a, ChoiceScores) and a.floored == ()
        assert a["TIE"] == pytest.approx(b["TIE"], abs=case.tolerance)


def test_an_empty_choice_list_is_a_backend_error(case: Case) -> None:
    with pytest.raises(BackendError, match="choice list is empty"):
        case.backend.score(REQUESTS[:1], [])


def test_a_choice_of_zero_tokens_is_a_backend_error(case: Case) -> None:
    with pytest.raises(BackendError, match="has no tokens"):
        case.backend.score(REQUESTS[:1], ["A", ""])


def test_a_repeated_choice_is_a_backend_error(case: Case) -> None:
    with pytest.raises(BackendError, match="more than once"):
        case.backend.score(REQUESTS[:1], ["A", "A"])


# --------------------------------------------------------------------------- pure helpers


def test_check_choices() -> None:
    assert check_choices(["A", "B"]) == ("A", "B")
    for bad in ([], "AB", ["A", 3], ("A", "A")):
        with pytest.raises(BackendError):
            check_choices(bad)  # type: ignore[arg-type]


def test_continuation_tokens() -> None:
    assert continuation_tokens([1, 2], [1, 2, 3, 4], lambda: [9], "TIE") == [3, 4]
    assert continuation_tokens([1, 2], [1, 7], lambda: [3, 4], "TIE") == [3, 4]  # the boundary merged
    with pytest.raises(BackendError, match="has no tokens"):
        continuation_tokens([1, 2], [1, 2], lambda: [], "", "spec:x")


def test_choice_scores_is_a_dict_that_names_floored_choices() -> None:
    scores = ChoiceScores({"A": -0.1, "B": -2.0}, floored=["B"])
    assert scores == {"A": -0.1, "B": -2.0} and floored_choices(scores) == ["B"]
    assert floored_choices({"A": -0.1}) == []  # a plain dict: nothing floored
    with pytest.raises(ValueError, match="no score"):
        ChoiceScores({"A": -0.1}, floored=["TIE"])


def test_vllm_continuation_logprob() -> None:
    from biasjudge.backends.vllm import continuation_logprob

    entries = [None, {5: types.SimpleNamespace(logprob=-0.5)}, {6: -1.0, 9: -0.1}]
    assert continuation_logprob(entries, [1, 5, 6], 1) == -1.5
    assert continuation_logprob(entries, [1, 5, 6], 2) == -1.0
    with pytest.raises(BackendError, match="no prompt log-prob for token 7"):
        continuation_logprob(entries, [1, 5, 7], 1)
    with pytest.raises(BackendError, match="no choice tokens"):
        continuation_logprob(entries, [1, 5, 6], 3)


# --------------------------------------------------------------------------- thinking stays off


def test_templates_that_think_by_default_render_without_thinking(hf_case: Case, vllm_case: Case) -> None:
    from biasjudge.backends.llamacpp import jinja_chat_template

    request = REQUESTS[0]
    for text in (hf_case.backend.render(request), vllm_case.backend._tokens(request)[0]):
        assert "<|think|>" not in text and text.startswith("<bos><|turn>system\nYou judge.")
    messages = [{"role": m.role, "content": m.content} for m in request.messages]
    assert "<|think|>" not in jinja_chat_template(THINKS_BY_DEFAULT, bos_token="<bos>")(messages)


def test_tokenizer_chat_template_passes_enable_thinking_false() -> None:
    class Recorder:
        chat_template = "{{ messages }}"

        def __init__(self) -> None:
            self.seen: dict[str, Any] = {}

        def apply_chat_template(self, messages: Any, **kwargs: Any) -> str:
            self.seen.update(kwargs)
            return "rendered"

    recorder = Recorder()
    template = tokenizer_chat_template(recorder)
    assert template is not None and template([{"role": "user", "content": "x"}]) == "rendered"
    assert recorder.seen["enable_thinking"] is False and recorder.seen["add_generation_prompt"] is True
    assert tokenizer_chat_template(types.SimpleNamespace(chat_template=None)) is None


def _template_calls_without_the_flag() -> list[str]:
    """`x.apply_chat_template(...)` and jinja `x.render(..., add_generation_prompt=...)` calls in src/
    that do not pass `enable_thinking=False`."""
    found: list[str] = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            keywords = {k.arg: k.value for k in node.keywords if k.arg}
            applies = node.func.attr == "apply_chat_template" or (
                node.func.attr == "render" and "add_generation_prompt" in keywords
            )
            flag = keywords.get("enable_thinking")
            if applies and not (isinstance(flag, ast.Constant) and flag.value is False):
                found.append(f"{path.relative_to(SRC).as_posix()}:{node.lineno}")
    return found


def test_every_chat_template_call_turns_thinking_off() -> None:
    offenders = _template_calls_without_the_flag()
    assert offenders == [], f"chat template applied without enable_thinking=False at {offenders}"


# --------------------------------------------------------------------------- train renders what inference renders


@pytest.fixture(scope="module")
def pair_messages(jfs: Path) -> list[ChatMessage]:
    """A real holdout pair, rendered with the shipped judge's prompt."""
    from biasjudge.io import read_records
    from biasjudge.prompts import load_prompt
    from biasjudge.prompts.render import judge_messages
    from biasjudge.records import Pair

    pair = read_records(jfs / "eval_set_unlabeled.jsonl", Pair, limit=1).records[0]
    return judge_messages(pair, load_prompt("judge_compact"))


@pytest.fixture(scope="module")
def untemplated_dir(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with its chat template removed (like the embedded Gemma 3 270M)."""
    import shutil

    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tiny-no-template")
    shutil.copytree(tiny_dir, folder, dirs_exist_ok=True)
    for name in ("chat_template.jinja", "chat_template.json"):
        (folder / name).unlink(missing_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    return folder


@pytest.mark.parametrize("target", ["verdict", "completion"])
def test_training_renders_byte_for_byte_what_each_backend_renders_with_a_template(
    tiny_dir: Path, hf_case: Case, vllm_case: Case, target: str, pair_messages: list[ChatMessage]
) -> None:
    from transformers import AutoTokenizer

    from biasjudge.backends.llamacpp import jinja_chat_template
    from biasjudge.prompts.render import render_prompt
    from biasjudge.train.common import RowEncoder

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    # A chat_format in the run config does not override the model's own template (nor does it at inference).
    encoder = RowEncoder(tokenizer, "gemma3", target)  # type: ignore[arg-type]
    messages = pair_messages
    prefix = SCORE_PREFIX if target == "verdict" else ""
    request = PromptRequest(tuple(messages), prefix)
    trained = encoder.prompt_text(messages)
    assert encoder.format_name == "chat_template" and "<|think|>" not in trained
    assert hf_case.backend.render(request) == trained
    assert vllm_case.backend._tokens(request)[0] == trained
    jinja = jinja_chat_template(tokenizer.chat_template, bos_token=tokenizer.bos_token, eos_token=tokenizer.eos_token)
    assert render_prompt(messages, template=jinja, assistant_prefix=prefix) == trained  # llama.cpp's path


@pytest.mark.parametrize("chat_format", ["gemma3", "gemma4"])
def test_training_renders_byte_for_byte_what_each_backend_renders_without_a_template(
    untemplated_dir: Path, gguf_model: Path, chat_format: str, pair_messages: list[ChatMessage]
) -> None:
    from transformers import AutoTokenizer

    from biasjudge.backends.hf import HFBackend
    from biasjudge.backends.llamacpp import LlamaCppBackend
    from biasjudge.backends.openai import OpenAIBackend
    from biasjudge.train.common import RowEncoder

    tokenizer = AutoTokenizer.from_pretrained(untemplated_dir)
    encoder = RowEncoder(tokenizer, chat_format, "verdict")
    messages = pair_messages
    request = PromptRequest(tuple(messages), SCORE_PREFIX)
    trained = encoder.prompt_text(messages)
    assert encoder.format_name == chat_format
    hf = HFBackend(str(untemplated_dir), spec="hf:tiny", dtype="float32", device="cpu", chat_format=chat_format)
    llama = LlamaCppBackend(str(gguf_model), spec="llamacpp:parity", n_ctx=512, chat_format=chat_format)
    openai = OpenAIBackend("http://127.0.0.1:9/v1#m", spec="openai:parity", chat_format=chat_format)
    try:
        assert hf.render(request) == trained
        assert llama.render(request) == trained  # the embedded GGUF has no template: the built-in format
        assert openai.render(request) == trained  # /completions mode renders locally
    finally:
        hf.close()
        llama.close()
        openai.close()


class RecordingLLM(FakeLLM):
    """A stand-in for `vllm.LLM` that records the SamplingParams a generate call gets."""

    def generate(self, prompts: list[dict[str, list[int]]], sampling: Any, use_tqdm: bool = False) -> list[Any]:
        self.sampling = sampling
        text = "<reasoning></reasoning><verdict>A</verdict>"
        done = types.SimpleNamespace(text=text, finish_reason="stop", token_ids=[1])
        return [types.SimpleNamespace(outputs=[done]) for _ in prompts]


@pytest.mark.parametrize("api", ["StructuredOutputsParams", "GuidedDecodingParams"])
def test_vllm_gets_the_grammar_through_its_structured_outputs(tiny_dir: Path, api: str) -> None:
    """vLLM 0.10.2 on takes `structured_outputs=StructuredOutputsParams(grammar=...)`, older ones
    `guided_decoding=GuidedDecodingParams(grammar=...)`: the backend finds whichever this vLLM has."""
    import biasjudge.backends.vllm as vllm_module
    from biasjudge.verdict import CONTRACT_GRAMMAR

    params_class = types.SimpleNamespace(**{api: lambda **kw: types.SimpleNamespace(kind=api, **kw)})
    fake_vllm = types.SimpleNamespace(
        LLM=RecordingLLM, SamplingParams=lambda **kw: types.SimpleNamespace(**kw), sampling_params=params_class
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vllm_module, "import_optional", lambda *args, **kwargs: fake_vllm)
        backend = vllm_module.VLLMBackend(str(tiny_dir), spec="vllm:tiny")
    request = PromptRequest((ChatMessage(role="user", content="q"),))
    backend.generate([request], GenerationParams(max_tokens=8, grammar=CONTRACT_GRAMMAR))
    field = "structured_outputs" if api == "StructuredOutputsParams" else "guided_decoding"
    held = getattr(backend._llm.sampling, field)
    assert held.kind == api and held.grammar == CONTRACT_GRAMMAR
    backend.generate([request], GenerationParams(max_tokens=8))
    assert not hasattr(backend._llm.sampling, field)  # no grammar asked, none sent
