"""transformers backend: `hf:MODEL_ID_OR_DIR`, `hf:PATH.gguf` (dequantised on load), `hf:embedded`.

The model loads through `AutoModelForCausalLM`, which in transformers 5 maps every Gemma family
member to its class: `gemma3_text` -> Gemma3ForCausalLM (the 270M GGUF), `gemma4` ->
Gemma4ForConditionalGeneration (the E2B/E4B checkpoints; text-only use needs no processor),
`gemma4_text` -> Gemma4ForCausalLM. A `.gguf` file is read with `gguf_file=` (the tokenizer too).

Prompts are rendered with the tokenizer's `chat_template` when it has one (with
`enable_thinking=False`), else with the built-in turn format `chat_format`; `<|think|>` anywhere in
the rendered prompt is refused. BOS is added at tokenisation unless the rendered text starts with it.

Batching: prompts are padded on the LEFT; positions are computed from the attention mask, so a
padded row gets the same positions as it would alone.

Score follows the scoring rule of :mod:`biasjudge.backends.base` (the sum of the choice's tokens'
log-probabilities, teacher-forced) and reads only the last positions' logits (`logits_to_keep`),
never the full-vocabulary logits of every position: the prompt is extended by a choice's first
tokens and the logits of the last few positions are kept, so A, B and TIE (`T` + `IE` in the
Gemma 3 vocabulary) together cost ONE forward pass of the prompt plus one token.

Generation: greedy (temperature 0) or sampling at the temperature with `torch.manual_seed(seed)`
(top-k/top-p off); stops at the format's end-of-turn marker, the model's EOS and `params.stop`,
none of which is kept in the text; finish_reason is 'length' when max_tokens was reached. A
`params.grammar` (GBNF) holds every row to it through llguidance (:class:`GrammarLogitsProcessor`);
once the grammar is complete only EOS is allowed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from biasjudge.backends import base
from biasjudge.backends.base import ChoiceScores, Generation, GenerationParams, PromptRequest, files_identity
from biasjudge.errors import BackendError
from biasjudge.prompts.render import DEFAULT_TURN_FORMAT, PromptRendering, turn_format

DTYPES = ("auto", "float32", "bfloat16", "float16")


def _resolve_target(target: str) -> tuple[str, str | None]:
    """(pretrained name or folder, gguf file name or None)."""
    if target in ("", "embedded"):
        from biasjudge.backends.embedded import embedded_gguf_path

        path = embedded_gguf_path()
        return str(path.parent), path.name
    if target.endswith(".gguf"):
        path = Path(target).expanduser()
        if not path.is_file():
            raise BackendError(f"hf: GGUF file {path} not found")
        return str(path.parent), path.name
    return target, None


class GrammarLogitsProcessor:
    """A transformers logits processor holding each row of a batch to a GBNF grammar.

    llguidance (the engine behind vLLM's `guidance` backend and llama.cpp's `%llguidance`) keeps
    one matcher per row: each step it takes the row's last token and masks every token the grammar
    does not allow next. A row that leaves the grammar (it cannot, unless the model's tokenizer and
    llguidance's disagree) is left unmasked, and its text is parsed as it is.

    Args:
        tokenizer: an `llguidance.LLTokenizer` of the model's tokenizer.
        grammar: the grammar text (GBNF).
        rows: batch size.
        prompt_width: the padded prompt length (generated tokens start after it).
    """

    def __init__(self, tokenizer: Any, grammar: str, rows: int, prompt_width: int) -> None:
        llguidance = base.import_optional("llguidance", "llguidance", "hf", "constrained generation on the hf: backend")
        compiled = llguidance.grammar_from("gbnf", grammar)
        self._matchers = [llguidance.LLMatcher(tokenizer, compiled, log_level=0) for _ in range(rows)]
        self._width = prompt_width

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        for row, matcher in enumerate(self._matchers):
            if input_ids.shape[1] > self._width and not matcher.is_stopped():
                matcher.consume_token(int(input_ids[row, -1]))
            if matcher.is_error():
                continue
            allowed = torch.frombuffer(bytearray(matcher.compute_logit_bias()), dtype=torch.uint8)
            width = min(allowed.numel(), scores.shape[1])
            scores[row, :width].masked_fill_(allowed[:width].to(scores.device) == 0, float("-inf"))
            scores[row, width:] = float("-inf")
        return scores


class HFBackend:
    """A transformers causal LM.

    Args:
        target: hub id, local folder, a .gguf file, or '' / 'embedded' for the embedded 270M GGUF.
        spec: the spec string.
        dtype: 'auto' (bfloat16 on a GPU, float32 on the CPU), 'float32', 'bfloat16' or 'float16'.
        device: 'auto' (cuda if available, else cpu), or a torch device string.
        chat_format: built-in turn format for models without a chat template.
        batch_size: prompts per forward pass.
        adapter: a PEFT adapter folder applied on top of the model.
        trust_remote_code: passed to from_pretrained.
    """

    def __init__(
        self,
        target: str = "",
        *,
        spec: str = "",
        chat_format: str = DEFAULT_TURN_FORMAT,
        dtype: str = "auto",
        device: str = "auto",
        batch_size: int = 8,
        adapter: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        torch = base.import_optional("torch", "torch", "hf", "the hf: backend")
        transformers = base.import_optional("transformers", "transformers", "hf", "the hf: backend")
        if dtype not in DTYPES:
            raise BackendError(f"hf: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        if batch_size < 1:
            raise BackendError(f"hf: batch_size must be >= 1, got {batch_size}")
        self.spec = spec or f"hf:{target}"
        self.batch_size = batch_size
        self._torch = torch
        self._format = turn_format(chat_format)
        name, gguf_file = _resolve_target(target)
        self.device = (
            torch.device("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else torch.device(device)
        )
        if dtype == "auto":
            dtype = "bfloat16" if self.device.type == "cuda" else "float32"
        kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        if gguf_file:
            kwargs["gguf_file"] = gguf_file
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(name, **kwargs)
            model = transformers.AutoModelForCausalLM.from_pretrained(name, dtype=getattr(torch, dtype), **kwargs)
        except (OSError, ValueError) as exc:
            raise BackendError(f"hf: could not load {target!r}: {exc}") from None
        if adapter is not None:
            peft = base.import_optional("peft", "peft", "train", "LoRA adapters on the hf: backend")
            model = peft.PeftModel.from_pretrained(model, adapter)
        self.model = model.to(self.device).eval()
        self.model_type: str = getattr(model.config, "model_type", "")
        tok = self.tokenizer
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"
        self._prompts = PromptRendering.of_tokenizer(tok, self._format)
        self.chat_template = self._prompts.chat_template
        self.render_format = self._prompts.render_format
        """How prompts are rendered (template hash or built-in format); part of the eval cache key."""
        self.identity = files_identity(target.partition("?")[0], adapter)
        """The model folder or file (and adapter) fingerprint; part of the eval cache key."""
        self._stop_ids = {i for i in (tok.eos_token_id, tok.pad_token_id) if i is not None}

    # ------------------------------------------------------------------ rendering and tokens

    def render(self, request: PromptRequest) -> str:
        """The prompt text for a request (chat template or built-in format, plus the assistant prefix)."""
        return self._prompts.render(request.messages, request.assistant_prefix)

    def tokenize(self, text: str) -> list[int]:
        """Token ids of `text`, BOS added unless the text starts with it."""
        bos = self.tokenizer.bos_token
        add_special = not (bos and text.startswith(bos))
        ids: list[int] = self.tokenizer(text, add_special_tokens=add_special).input_ids
        return ids

    def choice_tokens(self, prompt_text: str, prompt_ids: Sequence[int], choice: str) -> list[int]:
        """Tokens of `choice` as a continuation of the prompt (:func:`~biasjudge.backends.base.continuation_tokens`)."""

        def alone() -> list[int]:
            ids: list[int] = self.tokenizer(choice, add_special_tokens=False).input_ids
            return ids

        return base.continuation_tokens(prompt_ids, self.tokenize(prompt_text + choice), alone, choice, self.spec)

    def _pad(self, rows: Sequence[Sequence[int]]) -> tuple[Any, Any, Any]:
        """Left-padded (input_ids, attention_mask, position_ids) on the model's device."""
        torch = self._torch
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + list(r) for r in rows], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids.to(self.device), mask.to(self.device), positions.to(self.device)

    # ------------------------------------------------------------------ Backend protocol

    def score(self, requests: Sequence[PromptRequest], choices: Sequence[str]) -> list[dict[str, float]]:
        """Each choice's teacher-forced log-probability after each prompt (module docstring)."""
        torch = self._torch
        choices = base.check_choices(choices, self.spec)
        texts = [self.render(r) for r in requests]
        prompts = [self.tokenize(t) for t in texts]
        per_choice = [{c: self.choice_tokens(t, p, c) for c in choices} for t, p in zip(texts, prompts, strict=True)]
        out: list[dict[str, float]] = [ChoiceScores() for _ in texts]
        order = sorted(range(len(texts)), key=lambda i: len(prompts[i]))  # less padding per batch
        for start in range(0, len(order), self.batch_size):
            batch = order[start : start + self.batch_size]
            # Extend the prompt by each maximal multi-token path (a path that is no other's prefix):
            # the kept logits along it serve every choice whose leading tokens lie on it.
            heads = {tuple(ids[:-1]) for i in batch for ids in per_choice[i].values()}
            paths = [p for p in heads if not any(len(q) > len(p) and q[: len(p)] == p for q in heads)]
            for path in sorted(paths):
                rows = [prompts[i] + list(path) for i in batch]
                ids, mask, positions = self._pad(rows)
                with torch.inference_mode():
                    logits = self.model(
                        input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=len(path) + 1
                    ).logits
                logprobs = torch.log_softmax(logits.float(), dim=-1)  # (batch, len(path) + 1, vocab)
                for row, i in enumerate(batch):
                    for choice, ctoks in per_choice[i].items():
                        if choice in out[i] or tuple(ctoks[:-1]) != path[: len(ctoks) - 1]:
                            continue
                        # Teacher-forced: position j of the kept logits has read the choice's first j tokens.
                        out[i][choice] = float(sum(logprobs[row, j, t] for j, t in enumerate(ctoks)))
        return out

    supports_grammar = True
    """Generation can be held to a GBNF grammar (:class:`GrammarLogitsProcessor`)."""

    def _grammar_tokenizer(self) -> Any:
        """llguidance's view of the tokenizer, built once (about a second for a 262k vocabulary)."""
        if "_lltokenizer" not in self.__dict__:
            base.import_optional("llguidance", "llguidance", "hf", "constrained generation on the hf: backend")
            from llguidance.hf import from_tokenizer

            self._lltokenizer = from_tokenizer(self.tokenizer)
        return self._lltokenizer

    def generate(self, requests: Sequence[PromptRequest], params: GenerationParams) -> list[Generation]:
        """Generate for each prompt, in batches of `batch_size`, held to `params.grammar` when given."""
        torch = self._torch
        transformers = base.import_optional("transformers", "transformers", "hf", "the hf: backend")
        stops = [self._format.end_of_turn, *params.stop]
        prompts = [self.tokenize(self.render(r)) for r in requests]
        out: list[Generation] = []
        for start in range(0, len(prompts), self.batch_size):
            rows = prompts[start : start + self.batch_size]
            ids, mask, _ = self._pad(rows)
            sampling: dict[str, Any] = {"do_sample": False}
            if params.temperature > 0:
                sampling = {"do_sample": True, "temperature": params.temperature, "top_k": 0, "top_p": 1.0}
                if params.seed is not None:
                    torch.manual_seed(params.seed)
            if params.grammar is not None:
                held = GrammarLogitsProcessor(self._grammar_tokenizer(), params.grammar, len(rows), ids.shape[1])
                sampling["logits_processor"] = transformers.LogitsProcessorList([held])
            with torch.inference_mode():
                generated = self.model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=params.max_tokens,
                    stop_strings=stops,
                    tokenizer=self.tokenizer,
                    pad_token_id=self.tokenizer.pad_token_id,
                    **sampling,
                )
            for row, prompt in zip(generated[:, ids.shape[1] :].tolist(), rows, strict=True):
                out.append(self._finish(row, len(prompt), stops, params.max_tokens))
        return out

    def _finish(self, new_ids: list[int], prompt_len: int, stops: Sequence[str], max_tokens: int) -> Generation:
        ended = False
        for k, token in enumerate(new_ids):
            if token in self._stop_ids:
                new_ids, ended = new_ids[:k], True
                break
        text: str = self.tokenizer.decode(new_ids, skip_special_tokens=False)
        cuts = [text.find(s) for s in stops if s and s in text]
        if cuts:
            text, ended = text[: min(cuts)], True
        finish = "stop" if ended or len(new_ids) < max_tokens else "length"
        return Generation(text=text, finish_reason=finish, prompt_tokens=prompt_len, completion_tokens=len(new_ids))

    def count_tokens(self, text: str) -> int:
        """Length of `text` in the model's tokens (no special tokens)."""
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def close(self) -> None:
        """Drop the model (and free GPU memory)."""
        self.model = None
        if self.device.type == "cuda":
            self._torch.cuda.empty_cache()
