"""Check an exported GGUF: does llama.cpp judge like the transformers model it came from?

Both sides run biasjudge's own score-mode path, so the check measures what a judge will see at
runtime: the GGUF through :class:`~biasjudge.backends.llamacpp.LlamaCppBackend` (its chat template
or built-in turns, its KV-cache prefix reuse), the reference through
:class:`~biasjudge.backends.hf.HFBackend` (a merged folder, or the base plus the PEFT adapter).
Each scores `A`, `B` and `TIE` after the forced `<verdict>` by the backends' rule (a choice of
several tokens, `TIE` = `T` + `IE` in the Gemma 3 vocabulary, gets the SUM of its tokens'
log-probabilities), and the three are renormalised as the judge's score mode does. The check also
requires both sides to tokenise every prompt, and every choice after it, to the same ids.

This module never imports the eval stage or the judge (train may not): the renormalisation is
repeated in :func:`three_way`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from biasjudge.backends.base import PromptRequest
from biasjudge.prompts.render import DEFAULT_TURN_FORMAT, SCORE_PREFIX
from biasjudge.records import ChatMessage
from biasjudge.train.config import resolve_model
from biasjudge.train.export.merge import adapter_base, adapter_meta
from biasjudge.verdict import VERDICTS

if TYPE_CHECKING:
    from biasjudge.backends.hf import HFBackend
    from biasjudge.backends.llamacpp import LlamaCppBackend

CHECK_TOLERANCE: dict[str, float] = {"f16": 0.02, "Q8_0": 0.03, "Q5_K_M": 0.08, "lora": 0.05}
"""Largest allowed difference of any of the 3-way verdict probabilities (A, B, TIE) between the GGUF
in llama.cpp and the merged transformers model. The llama.cpp CPU kernels alone move them by up to
~0.03 on a Q4 base (ANCHORS); f16 and Q8_0 weights add little; Q5_K_M re-quantises every weight."""


@dataclass
class GgufCheck:
    """How a GGUF in llama.cpp agrees with the transformers model on verdict probabilities."""

    gguf: str
    reference: str
    n_prompts: int
    tolerance: float
    max_abs_diff: float
    mean_abs_diff: float
    token_ids_match: int
    """Prompts on which llama.cpp and transformers produced identical token ids (prompt and choices)."""
    passed: bool
    per_prompt: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The check as plain JSON-ready data (every field, the per-prompt rows included)."""
        return asdict(self)


def three_way(logprobs: Mapping[str, float]) -> dict[str, float] | None:
    """P(A), P(B), P(TIE) renormalised over the three from their log-probabilities; None if any is not finite.

    The judge's score-mode rule (:func:`biasjudge.judge.protocol.verdict_from_logprobs`, which counts a
    non-finite score as a parse failure).

    >>> {v: round(p, 3) for v, p in three_way({"A": -1.0, "B": -1.0, "TIE": -2.0}).items()}
    {'A': 0.422, 'B': 0.422, 'TIE': 0.155}
    >>> three_way({"A": -1.0, "B": float("nan"), "TIE": -2.0}) is None
    True
    """
    values = [float(logprobs.get(v, math.nan)) for v in VERDICTS]
    if not all(math.isfinite(x) for x in values):
        return None
    top = max(values)
    weights = [math.exp(x - top) for x in values]
    total = sum(weights)
    return {v: w / total for v, w in zip(VERDICTS, weights, strict=True)}


def verify_gguf(
    gguf: str | Path,
    reference: str | Path,
    prompts: Sequence[Sequence[ChatMessage]],
    *,
    lora_path: str | Path | None = None,
    chat_format: str | None = None,
    tolerance: float | None = None,
    quant: str | None = None,
    n_ctx: int = 4096,
) -> GgufCheck:
    """Compare score-mode verdict probabilities of `gguf` in llama.cpp with `reference` in transformers.

    Args:
        gguf: the GGUF model file (with `lora_path`: the base GGUF the adapter applies to).
        reference: the transformers side: a merged folder, or (with `lora_path`) the adapter folder,
            applied to the base model training recorded beside it.
        prompts: chat messages to judge (scored after `<verdict>`, as score mode does).
        lora_path: a GGUF LoRA adapter applied in llama.cpp.
        chat_format: the built-in turn format for a model without a chat template (default: the one
            training recorded, else gemma4); a model's own template wins, as at runtime.
        tolerance: the largest allowed probability difference; default CHECK_TOLERANCE[quant].
        quant: the GGUF's quantisation (picks the default tolerance).
        n_ctx: llama.cpp's context length.
    """
    from biasjudge.backends.hf import HFBackend
    from biasjudge.backends.llamacpp import LlamaCppBackend

    reference = Path(reference)
    fmt = chat_format or adapter_meta(reference).get("chat_format") or DEFAULT_TURN_FORMAT
    if fmt == "chat_template":  # trained on the model's own template, which both backends use when present
        fmt = DEFAULT_TURN_FORMAT
    tol = tolerance if tolerance is not None else CHECK_TOLERANCE["lora" if lora_path else (quant or "Q8_0")]
    requests = [PromptRequest(messages=tuple(m), assistant_prefix=SCORE_PREFIX) for m in prompts]

    # float32 and one prompt per forward pass: the reference has no padding, so the check measures the GGUF.
    # One model at a time: the transformers side is freed before llama.cpp loads.
    if lora_path is not None:
        hf = HFBackend(
            resolve_model(adapter_base(reference)),
            adapter=str(reference),
            dtype="float32",
            chat_format=fmt,
            batch_size=1,
        )
    else:
        hf = HFBackend(str(reference), dtype="float32", chat_format=fmt, batch_size=1)
    try:
        hf_tokens = [_scored_tokens(hf, r) for r in requests]
        hf_scores = hf.score(requests, VERDICTS)
    finally:
        hf.close()
    cpp = LlamaCppBackend(str(gguf), lora_path=str(lora_path) if lora_path else None, n_ctx=n_ctx, chat_format=fmt)
    try:
        cpp_tokens = [_scored_tokens(cpp, r) for r in requests]
        cpp_scores = cpp.score(requests, VERDICTS)
    finally:
        cpp.close()

    rows: list[dict[str, Any]] = []
    for hf_tok, cpp_tok, hf_lp, cpp_lp in zip(hf_tokens, cpp_tokens, hf_scores, cpp_scores, strict=True):
        hf_p, cpp_p = three_way(hf_lp), three_way(cpp_lp)
        rows.append(
            {
                "tokens": len(cpp_tok[0]),
                "token_ids_match": hf_tok == cpp_tok,
                "choice_tokens": cpp_tok[1],
                "transformers": hf_p,
                "llama_cpp": cpp_p,
                "max_abs_diff": (
                    max(abs(hf_p[v] - cpp_p[v]) for v in VERDICTS)
                    if hf_p is not None and cpp_p is not None
                    else math.inf
                ),
            }
        )
    diffs = [r["max_abs_diff"] for r in rows]
    matched = sum(r["token_ids_match"] for r in rows)
    worst = max(diffs, default=0.0)
    return GgufCheck(
        gguf=str(gguf) + (f" + {lora_path}" if lora_path else ""),
        reference=str(reference),
        n_prompts=len(rows),
        tolerance=tol,
        max_abs_diff=worst,
        mean_abs_diff=sum(diffs) / len(diffs) if diffs else 0.0,
        token_ids_match=matched,
        passed=worst <= tol and matched == len(rows),
        per_prompt=rows,
    )


def _scored_tokens(
    backend: HFBackend | LlamaCppBackend, request: PromptRequest
) -> tuple[list[int], dict[str, list[int]]]:
    """The token ids a backend scores for a request: the prompt's, and each choice's after it."""
    text = backend.render(request)
    ids = backend.tokenize(text)
    return list(ids), {c: list(backend.choice_tokens(text, ids, c)) for c in VERDICTS}


def check_export(
    source: Path,
    gguf: Path,
    pairs_file: Path,
    *,
    n: int = 8,
    system_prompt: str | None = None,
    quant: str = "f16",
    base: str | None = None,
) -> tuple[GgufCheck, Path]:
    """`biasjudge export gguf --check-pairs`: judge the first `n` pairs of `pairs_file` through the
    exported GGUF and through transformers (`source`: a merged folder, or an adapter folder whose
    GGUF LoRA is `gguf`), compare with :func:`verify_gguf`, and write the result beside the GGUF
    as `<name>.check.json`. Returns the check and where it was written."""
    from biasjudge.io import read_records, write_json
    from biasjudge.prompts import load_prompt
    from biasjudge.prompts.render import judge_messages
    from biasjudge.records import Pair
    from biasjudge.train.config import resolve_model
    from biasjudge.train.export.merge import adapter_meta

    system = system_prompt if system_prompt is not None else load_prompt("judge_system")
    pairs = read_records(pairs_file, Pair, limit=n).records
    prompts = [judge_messages(p, system) for p in pairs]
    if (source / "adapter_config.json").is_file():
        base_gguf = resolve_model(base or adapter_meta(source).get("base_model", ""))
        check = verify_gguf(base_gguf, source, prompts, lora_path=gguf)
    else:
        check = verify_gguf(gguf, source, prompts, quant=quant)
    report = gguf.with_suffix(".check.json")
    write_json(report, check.to_dict())
    return check, report
