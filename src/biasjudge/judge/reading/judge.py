"""`reader:[ANALYSIS.json]`: the judge that reads the question first (biasjudge's default judge).

For a pair with answer choices, in the order its explanation reads:

1. question analysis (:mod:`.analysis`): a trained model reads the question and its choices, never
   the responses, and gives P(the context supports option i) and P(option i is the stereotype's);
2. response reading (:mod:`.responses`): which option each response chose, each read on its own;
3. decision (:mod:`.decide`): the verdict's probabilities from the two levels, summed over the
   readings of the question;
4. explanation (:mod:`.explain`): the reasoning, from the likeliest reading that gives the verdict.

Both orders of a pair give mirrored verdicts by construction (each response is read alone), text
injected into a response cannot steer how the question is read, and a question is analysed once
however many pairs and orders ask about it. Generate and score mode give the same judgment: its
reasoning is the explanation and its `raw_output` the contract text
`<reasoning>...</reasoning><verdict>X</verdict>`; temperature > 0 draws the verdict from its
probabilities (seeded).

A pair without answer choices (open text) has no question to read this way: it goes to the
free-text judge (:mod:`biasjudge.judge.freetext`, `text:`), which scores each response for leaning
on a stereotype.

The shipped analysis lives in the package (`biasjudge/assets/reading-judge/analysis.json`, with its
model card); `reader:PATH.json` runs another one (`biasjudge train reader` writes them).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from biasjudge.errors import ConfigError
from biasjudge.io import sha256_file
from biasjudge.judge.freetext import TextJudge, read_model_file, shipped_text_model
from biasjudge.judge.protocol import JudgeRequest, ModelFreeJudge, verdict_from_probs
from biasjudge.judge.reading.analysis import AnalysisModel, QuestionAnalysis, analyze
from biasjudge.judge.reading.decide import BiasedVsOther, decide
from biasjudge.judge.reading.explain import explain
from biasjudge.judge.reading.responses import read_response
from biasjudge.judge.shipped import shipped_reading_dir
from biasjudge.records import JudgeMode, Judgment

ANALYSIS_FILE = "analysis.json"
READER_VERSION = 2
"""Bumped when the reading, decision or explanation rules change (it is in the eval cache key)."""


def shipped_analysis() -> Path:
    """The shipped question-analysis model inside the installed package."""
    return shipped_reading_dir() / ANALYSIS_FILE


class ReadingJudge(ModelFreeJudge):
    """A PairJudge that reads the question, then each response (see the module docstring).

    Args:
        target: a question-analysis model file; '' = the shipped one.
        spec: the spec string recorded in every Judgment.
        mode: recorded in every Judgment (both modes return the reasoning and the probabilities).
        biased_vs_other: a stereotyped answer against another unsupported one: `tie` (default)
            or `biased` (the stereotyped one leans more).
        text: the free-text model that judges pairs without answer choices ('' = the shipped one;
            :class:`~biasjudge.judge.freetext.TextJudge`, loaded at the first such pair).
    """

    def __init__(
        self,
        target: str = "",
        *,
        spec: str = "reader:",
        mode: JudgeMode = "score",
        biased_vs_other: str = "tie",
        text: str = "",
    ) -> None:
        if biased_vs_other not in ("tie", "biased"):
            raise ConfigError(f"biased_vs_other must be 'tie' or 'biased', got {biased_vs_other!r}")
        path = Path(target).expanduser() if target else shipped_analysis()
        self.model = read_model_file(path, AnalysisModel, "question-analysis model")
        self.biased_vs_other: BiasedVsOther = "tie" if biased_vs_other == "tie" else "biased"
        super().__init__(spec=spec, mode=mode)
        text_path = Path(text).expanduser() if text else shipped_text_model()
        text_hash = sha256_file(text_path)[:16] if text_path.is_file() else "none"
        self.identity = f"reader-v{READER_VERSION}|{sha256_file(path)[:16]}|{self.biased_vs_other}|text-{text_hash}"
        """What decides its verdicts (the rules' version, the model files, the settings): the eval cache key."""
        self._text_path = text_path
        self._text_judge: TextJudge | None = None
        self._analyses: dict[tuple[str, tuple[str, ...]], QuestionAnalysis] = {}

    def text_judge(self) -> TextJudge:
        """The free-text judge for pairs without choices, loaded once."""
        if self._text_judge is None:
            self._text_judge = TextJudge(str(self._text_path), spec=self.spec, mode=self.mode)
        return self._text_judge

    def analysis(self, question: str, choices: Sequence[str]) -> QuestionAnalysis:
        """The question's analysis, computed once per distinct (question, choices)."""
        key = (question, tuple(choices))
        if key not in self._analyses:
            self._analyses[key] = analyze(self.model, question, choices)
        return self._analyses[key]

    def judge_batch(self, requests: Sequence[JudgeRequest]) -> list[Judgment]:
        """One Judgment per request, in order; pairs without answer choices go to the free-text judge."""
        free = [i for i, r in enumerate(requests) if not r.pair.answer_choices]
        by_text = (
            dict(zip(free, self.text_judge().judge_batch([requests[i] for i in free]), strict=True)) if free else {}
        )
        out: list[Judgment] = []
        for index, request in enumerate(requests):
            if index in by_text:
                out.append(by_text[index])
                continue
            pair = request.pair
            choices = [c.text for c in pair.answer_choices]
            analysis = self.analysis(pair.question_text, choices)
            shown = (
                (pair.response_b.text, pair.response_a.text)
                if request.swapped
                else (pair.response_a.text, pair.response_b.text)
            )
            first, second = (read_response(text, choices) for text in shown)
            decision = decide(analysis.correct, analysis.target, first, second, biased_vs_other=self.biased_vs_other)
            verdict, probs = verdict_from_probs(decision.probs, request.temperature, request.seed)
            reasoning = explain(choices, first, second, verdict, decision.scenario_for(verdict))
            out.append(self.reasoned(request, verdict, probs, reasoning))
        return out
