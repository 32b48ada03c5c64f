"""Cost control for every stage that calls a model: one ledger, one budget, one dry run.

The stages that generate with a backend (candidate answers, teacher labels, hard-negative
synthesis) each take a :class:`CostControl` and send every generate call through
:meth:`CostControl.meter`'s :meth:`Meter.generate`. Nothing else in biasjudge counts money.

Ledger
    A JSONL file, one :class:`LedgerEntry` per model call (stage, model, key, prompt and completion
    tokens, USD, time), appended and fsynced as soon as the call returns. Token counts are the
    server's (`usage` of an OpenAI-compatible reply); where a backend reports none they are
    estimated and marked `tokens_from: estimate`. One ledger may serve every stage of a project.

Prices
    USD per 1M input and output tokens per model name, from `biasjudge/configs/prices.yaml`, with a
    user's file (`--prices`) laid over it. A model is looked up by the name the backend sends (the
    `#MODEL` of an `openai:` spec). An in-process backend (`llamacpp:`, `hf:`, `vllm:`) not named
    in the table costs 0: it is the user's own compute. An `openai:` model (or one of any other
    scheme) not in the table is priced 0 with a warning and `priced: false` in its ledger lines
    when no budget is set, and is an error when one is: a budget cannot be held with an unknown
    price, and guessing one (0, or the dearest model's) would either spend without limit or stop
    at once for no reason.

Budget
    `budget_usd` caps the ledger's total: everything in it, from every stage and every earlier run.
    Before each call its cost is bounded from above (prompt tokens counted, plus `max_tokens` of
    output at the output price); a call whose bound would take the total past the budget is not
    made. Of a batch, the longest prefix whose bounds fit goes out; the rest is weighed again
    against what those calls really cost, so the run stops only when the next call's bound does
    not fit beside what was really spent. The results so far are written, then the stage raises
    :class:`BudgetReached` (the CLI exits with :data:`BUDGET_EXIT_CODE`). Finished work is in the
    stage's append-only output, so a rerun with a higher budget skips it; a rerun with the same
    budget makes no call, since the ledger already holds what was spent.

In flight
    The bounds of the calls in flight are written to `<ledger>.inflight.json` before the calls go
    out and the file is removed once their ledger lines are written. A run killed in between
    leaves the file; the next run over this ledger books each call it lists that has no ledger
    line at its bound (`tokens_from: in_flight`), because the provider may have billed it. So a
    kill does not make the ledger undercount what was spent (as far as the bound holds: see
    :func:`estimate_tokens`).

Dry run
    :meth:`Meter.estimate` bounds the calls a stage would make (calls, prompt tokens, output
    tokens at most, USD at most; and the USD expected from the mean completion length of this
    stage's earlier calls in the ledger) without calling the model. Prompt tokens are counted by
    the backend's `count_tokens` (the server's tokenize endpoint for `openai:`, free), never by a
    generate call.

One process writes a ledger at a time (an OS lock on `<ledger>.lock`; a second is refused with
a clear error), so two runs cannot both spend the same remaining budget.

The price table and the ledger's records are :mod:`biasjudge.backends.ledger` (exported here too).
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from biasjudge.backends.base import Backend, Generation, GenerationParams, PromptRequest
from biasjudge.backends.ledger import LedgerEntry as LedgerEntry
from biasjudge.backends.ledger import LedgerTotals as LedgerTotals
from biasjudge.backends.ledger import ModelPrice as ModelPrice
from biasjudge.backends.ledger import PriceTable as PriceTable
from biasjudge.backends.ledger import ledger_totals as ledger_totals
from biasjudge.backends.ledger import load_prices as load_prices
from biasjudge.backends.ledger import read_ledger as read_ledger
from biasjudge.errors import BackendError, BiasJudgeError, ConfigError
from biasjudge.io import JsonlAppender, folder_lock, read_json, side_path, write_json
from biasjudge.io.progress import progress_bar

log = logging.getLogger(__name__)
T = TypeVar("T")

BUDGET_EXIT_CODE = 3
"""Exit status of a command stopped by `--budget-usd` (0 = finished, 2 = an error)."""

PROMPT_SLACK_TOKENS = 8
"""Added to each counted prompt: tokens a server adds that the text does not show (BOS, template)."""

CHARS_PER_TOKEN = 4
"""A prompt is never estimated at fewer than len(text) / 4 tokens, so a backend without a
tokenizer (its `count_tokens` falls back to words) does not make the bound too low for English."""

FREE_SCHEMES = frozenset({"llamacpp", "hf", "vllm"})
"""In-process backends: a model they run costs nothing unless the price table names it."""

USD_EPSILON = 1e-12
"""Float slack in the budget comparison."""


# --------------------------------------------------------------------------- errors and estimates


class BudgetReached(BiasJudgeError):
    """The next call could take the ledger past the budget, so it was not made."""

    def __init__(self, *, stage: str, ledger: Path, spent: float, budget: float, next_usd: float, key: str) -> None:
        self.stage = stage
        self.ledger = ledger
        self.spent = spent
        self.budget = budget
        self.next_usd = next_usd
        self.key = key
        super().__init__(
            f"budget reached: {ledger} holds ${spent:.6f} of --budget-usd {budget:g}; the next {stage} call "
            f"(key {key}) could cost up to ${next_usd:.6f}, so it was not made. Everything finished is kept; "
            "run again with a higher --budget-usd to go on."
        )


@dataclass
class Estimate:
    """What a stage would spend: :meth:`Meter.estimate`'s answer (a dry run)."""

    stage: str
    model: str
    calls: int
    """Calls of one attempt each."""
    prompt_tokens: int
    """Prompt tokens of those calls (counted, plus slack)."""
    max_completion_tokens: int
    """Completion tokens if every call used its whole `max_tokens`."""
    usd_max: float
    """Their price at most (every call at `max_tokens`)."""
    priced: bool
    """False when the model has no price (the USD figures are 0 and mean nothing)."""
    max_attempts: int = 1
    """Attempts a stage may make per item (synthesis retries); `usd_worst` covers them all."""
    mean_completion_tokens: float | None = None
    """Mean completion of this stage and model's earlier calls in the ledger, when it has some."""
    usd_expected: float | None = None
    """Price at that mean completion length (one attempt per item)."""

    @property
    def usd_worst(self) -> float:
        """Price at most, every item taking every attempt."""
        return self.usd_max * self.max_attempts


# --------------------------------------------------------------------------- cost control


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _scheme(backend: Backend) -> str:
    return backend.spec.split(":", 1)[0] if ":" in backend.spec else backend.spec


def model_name(backend: Backend) -> str:
    """The name a backend's calls are priced under: the model an `openai:` backend sends, else the spec."""
    name = getattr(backend, "model", None)  # OpenAIBackend.model; torch models elsewhere are no names
    return name if isinstance(name, str) and name else backend.spec


def prompt_text(backend: Backend, request: PromptRequest) -> str:
    """The text a backend sends for `request`: its own rendering where it has one, else the turns joined."""
    render = getattr(backend, "render", None)
    if callable(render):
        try:
            text = render(request)
            if isinstance(text, str):
                return text
        except BiasJudgeError:
            pass  # a backend that cannot render this request (chat mode) still gets an estimate
    return "\n\n".join(m.content for m in request.messages) + request.assistant_prefix


def estimate_tokens(backend: Backend | None, text: str) -> int:
    """Tokens of `text`: the backend's count, never less than len(text) / CHARS_PER_TOKEN."""
    floor = math.ceil(len(text) / CHARS_PER_TOKEN)
    if backend is None:
        return floor
    return max(backend.count_tokens(text), floor)


@dataclass
class CostControl:
    """Where calls are booked (`ledger`), at what prices, under what budget; or a dry run.

    Use it as a context manager (the CLI does): it holds the ledger's lock and file while open.
    Stages get one :class:`Meter` each from :meth:`meter`.
    """

    ledger: Path
    """The ledger JSONL (appended to)."""
    prices: PriceTable = field(default_factory=load_prices)
    budget_usd: float | None = None
    """Cap on the ledger's total USD; None = no cap."""
    dry_run: bool = False
    """Estimate only: no model call is made and nothing is written."""
    made: list[LedgerEntry] = field(default_factory=list)
    """Calls made through this control (this run)."""
    estimates: list[Estimate] = field(default_factory=list)
    """Dry-run estimates made through this control."""
    booked_in_flight: int = 0
    """Calls of a killed earlier run booked at their bound when the ledger was opened."""
    _entries: list[LedgerEntry] = field(default_factory=list, repr=False)
    _spent: float = field(default=0.0, repr=False)
    _appender: JsonlAppender[LedgerEntry] | None = field(default=None, repr=False)
    _stack: ExitStack | None = field(default=None, repr=False)
    _opened: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.ledger = Path(self.ledger)
        if self.budget_usd is not None and not (self.budget_usd >= 0 and math.isfinite(self.budget_usd)):
            raise ConfigError(f"--budget-usd must be a finite number >= 0, got {self.budget_usd}")

    # ------------------------------------------------------------------ the ledger file

    @property
    def inflight_path(self) -> Path:
        """Where the bounds of calls in flight are kept (`<ledger>.inflight.json`)."""
        return side_path(self.ledger, ".inflight.json")

    def open(self) -> CostControl:
        """Read the ledger (and book a killed run's in-flight calls); take its lock unless a dry run."""
        if self._opened:
            return self
        if self.dry_run:
            self._entries = read_ledger(self.ledger)
        else:
            stack = ExitStack()
            try:
                stack.enter_context(
                    folder_lock(self.ledger.parent, f"{self.ledger.name}.lock", what="another run over this ledger")
                )
                self._appender = stack.enter_context(JsonlAppender(self.ledger, LedgerEntry, key=lambda e: e.call_id))
            except BaseException:
                stack.close()
                raise
            self._stack = stack
            self._entries = list(self._appender.done.values())
            self._book_in_flight()
        self._spent = sum(e.usd for e in self._entries)
        self._opened = True
        return self

    def _book_in_flight(self) -> None:
        path = self.inflight_path
        if not path.exists() or self._appender is None:
            return
        try:
            pending = [LedgerEntry.model_validate(item) for item in read_json(path)]
        except Exception as exc:  # a torn file cannot happen (atomic write); say so if it does
            raise ConfigError(f"{path}: unreadable in-flight record ({exc}); check it, then delete it") from None
        for entry in pending:
            if entry.call_id not in self._appender:
                self._appender.append(entry)
                self._entries.append(entry)
                self.booked_in_flight += 1
        path.unlink()

    def close(self) -> None:
        """Release the ledger's lock and close its file."""
        if self._stack is not None:
            self._stack.close()
            self._stack = None
        self._appender = None
        self._opened = False

    def __enter__(self) -> CostControl:
        return self.open()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    # ------------------------------------------------------------------ accounting

    @property
    def spent(self) -> float:
        """USD in the ledger (every stage, every run, this one included)."""
        return self._spent

    @property
    def entries(self) -> list[LedgerEntry]:
        """Every ledger entry, those of earlier runs first."""
        return list(self._entries)

    def book(self, entry: LedgerEntry) -> None:
        """Append one call to the ledger (fsynced) and count it."""
        if self._appender is None:
            raise ConfigError("the cost ledger is not open (use CostControl as a context manager)")
        self._appender.append(entry)
        self._entries.append(entry)
        self.made.append(entry)
        self._spent += entry.usd

    def mark_in_flight(self, entries: Sequence[LedgerEntry]) -> None:
        """Record the bounds of the calls about to be made (booked at their bound if the run dies)."""
        write_json(self.inflight_path, [e.model_dump(mode="json") for e in entries])

    def clear_in_flight(self) -> None:
        """Forget the calls in flight: they returned and are booked."""
        self.inflight_path.unlink(missing_ok=True)

    def price(self, backend: Backend, model: str) -> ModelPrice | None:
        """The model's price; 0 for an in-process backend not in the table; None when unknown."""
        found = self.prices.price_of(model)
        if found is None and _scheme(backend) in FREE_SCHEMES:
            return ModelPrice(input=0.0, output=0.0)
        return found

    def meter(self, backend: Backend, stage: str) -> Meter:
        """The meter a stage sends its calls through (opens the ledger if needed)."""
        self.open()
        return Meter(backend, stage, self)


class Meter:
    """One stage's calls of one backend, booked in a :class:`CostControl` (or not, without one).

    `Meter(backend, stage, None)` passes calls straight through: what library callers and tests
    that do not count money get.
    """

    def __init__(self, backend: Backend, stage: str, control: CostControl | None = None) -> None:
        self.backend = backend
        self.stage = stage
        self.control = control
        self.stopped: BudgetReached | None = None
        """Set when a batch was cut short by the budget; :meth:`check` raises it."""
        self.model = model_name(backend) if control is not None else backend.spec
        self.price: ModelPrice | None = None
        if control is not None:
            self.price = control.price(backend, self.model)
            if self.price is None:
                where = "the price table (biasjudge/configs/prices.yaml and --prices)"
                if control.budget_usd is not None:
                    entry = f"models: {{{self.model}: {{input: USD_PER_1M, output: USD_PER_1M}}}}"
                    raise ConfigError(
                        f"model {self.model!r} has no price in {where}, so --budget-usd cannot be held; "
                        f"add it to a prices file ('{entry}') and pass --prices FILE"
                    )
                log.warning(
                    "model %r has no price in %s; its calls are booked at $0 (priced: false)",
                    self.model,
                    where,
                )

    @property
    def dry_run(self) -> bool:
        """Whether this run only estimates (no call is made)."""
        return self.control is not None and self.control.dry_run

    def _usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return self.price.usd(prompt_tokens, completion_tokens) if self.price is not None else 0.0

    def bound(self, request: PromptRequest, params: GenerationParams) -> tuple[int, float]:
        """(prompt tokens, USD at most) of one call: counted prompt plus slack, `max_tokens` of output."""
        tokens = estimate_tokens(self.backend, prompt_text(self.backend, request)) + PROMPT_SLACK_TOKENS
        return tokens, self._usd(tokens, params.max_tokens)

    def generate(
        self, requests: Sequence[PromptRequest], params: GenerationParams, keys: Sequence[str]
    ) -> list[Generation]:
        """Generate for as many of `requests`, in order, as the budget allows, booking each call.

        The longest prefix whose bounds fit goes out as one backend call; when that is not all
        of them, the rest is weighed again against what the calls really cost, and so on. Returns
        one Generation per request made: all of them, or a prefix when the budget stopped the
        batch (then :attr:`stopped` is set: write the results, then call :meth:`check`).

        Raises:
            BudgetReached: not even the first request fits.
        """
        if len(keys) != len(requests):
            raise BackendError(f"{self.stage}: {len(keys)} keys for {len(requests)} requests")
        control = self.control
        if control is None:
            return self._call(list(requests), params) if requests else []
        if control.dry_run:
            raise ConfigError(f"{self.stage}: a dry run makes no model call")
        if control.budget_usd is not None:
            bounds = [self.bound(r, params) for r in requests]
        else:  # no cap to hold: a bound without tokenizer calls, only for the in-flight record
            cheap = [estimate_tokens(None, prompt_text(self.backend, r)) + PROMPT_SLACK_TOKENS for r in requests]
            bounds = [(tokens, self._usd(tokens, params.max_tokens)) for tokens in cheap]
        done: list[Generation] = []
        while len(done) < len(requests):
            start = len(done)
            admitted = len(requests) - start
            if control.budget_usd is not None:
                total, admitted = control.spent, 0
                for _, usd in bounds[start:]:
                    if total + usd > control.budget_usd + USD_EPSILON:
                        break
                    total, admitted = total + usd, admitted + 1
            if admitted == 0:
                stop = BudgetReached(
                    stage=self.stage,
                    ledger=control.ledger,
                    spent=control.spent,
                    budget=control.budget_usd or 0.0,
                    next_usd=bounds[start][1],
                    key=keys[start],
                )
                if not done:
                    raise stop
                self.stopped = stop
                break
            chunk = slice(start, start + admitted)
            done += self._booked_call(control, list(requests[chunk]), params, list(keys[chunk]), bounds[chunk])
        return done

    def _booked_call(
        self,
        control: CostControl,
        batch: list[PromptRequest],
        params: GenerationParams,
        keys: list[str],
        bounds: list[tuple[int, float]],
    ) -> list[Generation]:
        """One backend call, its bounds on record while it is in flight, each result booked."""
        pending = [
            LedgerEntry(
                time=_now(),
                stage=self.stage,
                model=self.model,
                key=key,
                prompt_tokens=tokens,
                completion_tokens=params.max_tokens,
                usd=usd,
                priced=self.price is not None,
                tokens_from="in_flight",
                call_id=uuid.uuid4().hex,
            )
            for key, (tokens, usd) in zip(keys, bounds, strict=True)
        ]
        control.mark_in_flight(pending)
        generations = self._call(batch, params)
        for request, gen, booked in zip(batch, generations, pending, strict=True):
            if gen.prompt_tokens is not None and gen.completion_tokens is not None:
                prompt, completion, source = gen.prompt_tokens, gen.completion_tokens, "server"
            else:
                prompt = (
                    gen.prompt_tokens
                    if gen.prompt_tokens is not None
                    else estimate_tokens(self.backend, prompt_text(self.backend, request)) + PROMPT_SLACK_TOKENS
                )
                completion = (
                    gen.completion_tokens
                    if gen.completion_tokens is not None
                    else estimate_tokens(self.backend, gen.text)
                )
                source = "estimate"
            control.book(
                booked.model_copy(
                    update={
                        "time": _now(),
                        "prompt_tokens": prompt,
                        "completion_tokens": completion,
                        "usd": self._usd(prompt, completion),
                        "tokens_from": source,
                    }
                )
            )
        control.clear_in_flight()
        return generations

    def _call(self, batch: list[PromptRequest], params: GenerationParams) -> list[Generation]:
        generations = self.backend.generate(batch, params)
        if len(generations) != len(batch):
            raise BackendError(
                f"backend {self.backend.spec!r} returned {len(generations)} generations for {len(batch)} prompts"
            )
        return generations

    def check(self) -> None:
        """Raise the :class:`BudgetReached` of a batch the budget cut short, once its results are written."""
        if self.stopped is not None:
            raise self.stopped

    def generations(
        self,
        items: Sequence[T],
        *,
        request: Callable[[T], PromptRequest],
        key: Callable[[T], str],
        params: GenerationParams,
        batch_size: int,
        description: str,
        total: int,
        progress: bool = True,
    ) -> Iterator[tuple[T, Generation]]:
        """The resumable generate loop of a stage: `items` (what is left of `total`) in batches of
        `batch_size`, each through :meth:`generate`, behind one progress bar on which what earlier
        runs did counts as done. Yields each item with its generation and advances the bar once the
        caller has written it; after a batch the budget cut short, stops (BudgetReached).
        """
        bar = progress_bar(enabled=progress)
        with bar:
            task = bar.add_task(description, total=total, completed=total - len(items), info="")
            for start in range(0, len(items), batch_size):
                batch = list(items[start : start + batch_size])
                generations = self.generate([request(x) for x in batch], params, [key(x) for x in batch])
                for item, generation in zip(batch[: len(generations)], generations, strict=True):
                    yield item, generation
                    bar.advance(task, 1)
                self.check()

    def estimate(
        self, requests: Sequence[PromptRequest], params: GenerationParams, *, max_attempts: int = 1
    ) -> Estimate:
        """Bound the calls `requests` would make (a dry run; no model call). Recorded in the control."""
        prompt_tokens = 0
        usd = 0.0
        for request in requests:
            tokens, bound = self.bound(request, params)
            prompt_tokens += tokens
            usd += bound
        estimate = Estimate(
            stage=self.stage,
            model=self.model,
            calls=len(requests),
            prompt_tokens=prompt_tokens,
            max_completion_tokens=len(requests) * params.max_tokens,
            usd_max=usd,
            priced=self.price is not None,
            max_attempts=max_attempts,
        )
        if self.control is not None:
            seen = [
                e
                for e in self.control.entries
                if e.stage == self.stage and e.model == self.model and e.tokens_from == "server"
            ]
            if seen:
                mean = sum(e.completion_tokens for e in seen) / len(seen)
                estimate.mean_completion_tokens = mean
                estimate.usd_expected = self._usd(prompt_tokens, 0) + len(requests) * self._usd(0, round(mean))
            self.control.estimates.append(estimate)
        return estimate


def meter_for(backend: Backend, stage: str, cost: CostControl | None) -> Meter:
    """`cost.meter(backend, stage)`, or a pass-through meter when there is no cost control."""
    return cost.meter(backend, stage) if cost is not None else Meter(backend, stage, None)


__all__ = [
    "BUDGET_EXIT_CODE",
    "BudgetReached",
    "CostControl",
    "Estimate",
    "LedgerEntry",
    "LedgerTotals",
    "Meter",
    "ModelPrice",
    "PriceTable",
    "ledger_totals",
    "load_prices",
    "meter_for",
    "model_name",
    "read_ledger",
]
