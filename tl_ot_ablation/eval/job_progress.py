"""One progress bar for a whole job, with the time left, and an estimate before it starts.

A job (``compare``) is a list of stages, each a list of passes of prompts through the model
(``Pass``: a forward pass, or a greedy generation that then decodes one token per call). Its
cost is the model's calls: a call of ``t`` tokens costs ``seconds_per_call + t ×
seconds_per_token`` (``CostModel``; on a CPU a 32-row decode step costs as much as a prefill of
~70 tokens because every weight is read for few rows, so counting tokens alone would put the
decoding at a third of its weight). Two timed forward passes calibrate the model before the
job starts, so the first line already says how long the job should take.

While the job runs, a hook on the model's embedding sees every call (its shape says how many
tokens) and moves the bar by the call's estimated cost. The time those calls took against their
estimate turns the estimated seconds left into real ones, correcting the calibration as it goes
(tqdm's own rate would count a stage's jump, below, as work done). A stage may cost less than
planned (a cached result, a candidate stopped early) or more: when it ends the bar jumps to the
stage's planned end, or the total grows, so the bar is full exactly when the job ends.

Why hand-written: tqdm draws the bar, but no library plans the cost of a job of model calls;
this module only plans and counts.
"""

import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from ..core.bars import job_bar_running
from ..core.errors import UserInputError
from ..lens.collect import model_device


@dataclass(frozen=True)
class Pass:
    """``prompts`` prompts padded to ``length`` tokens, in batches of ``batch_size``; with
    ``new_tokens`` > 1 each batch then decodes one token per call (``new_tokens`` - 1 calls)."""

    prompts: int
    length: int
    batch_size: int
    new_tokens: int = 1

    def calls(self) -> Iterator[tuple[int, int]]:
        """``(number of calls, tokens per call)`` of the pass."""
        for start in range(0, self.prompts, self.batch_size):
            rows = min(self.batch_size, self.prompts - start)
            yield 1, rows * self.length
            if self.new_tokens > 1:
                yield self.new_tokens - 1, rows


@dataclass(frozen=True)
class CostModel:
    """Seconds of one model call of ``tokens`` tokens: ``per_call + tokens × per_token``."""

    per_call: float
    per_token: float

    def seconds(self, tokens: int) -> float:
        return self.per_call + tokens * self.per_token

    def of(self, passes: Sequence[Pass]) -> float:
        """Estimated seconds of ``passes``."""
        return float(sum(n * self.seconds(tokens) for p in passes for n, tokens in p.calls()))

    @classmethod
    def calibrated(cls, model: Any, rows: int, length: int) -> "CostModel":
        """Time a forward pass of ``rows`` × 1 tokens (a decode step's shape) and one of 2 ×
        ``length`` (a short prefill), after one untimed warm-up call."""
        device = model_device(model)
        token = int(model.tokenizer.eos_token_id or 0)

        def timed(shape: tuple[int, int]) -> float:
            ids = torch.full(shape, token, dtype=torch.long, device=device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            begin = time.perf_counter()
            with torch.inference_mode():
                model(ids, return_type=None)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return time.perf_counter() - begin

        timed((1, 1))
        step = timed((rows, 1))
        prefill = timed((2, length))
        per_token = max((prefill - step) / max(2 * length - rows, 1), 0.0)
        return cls(max(step - rows * per_token, 0.0), per_token)


def minutes(seconds: float) -> str:
    """``seconds`` as a short duration (``"42 s"``, ``"7 min"``, ``"2 h 11 min"``)."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{int(seconds // 3600)} h {seconds % 3600 / 60:.0f} min"


def _input_embedding(model: Any) -> torch.nn.Module | None:
    """The module every forward call of ``model`` starts with: a bridge's Hugging Face model's
    input embedding (generation calls that model directly), else a ``HookedTransformer``'s."""
    hf_model = getattr(model, "original_model", None)
    if hf_model is not None and hasattr(hf_model, "get_input_embeddings"):
        return hf_model.get_input_embeddings()
    embed = getattr(model, "embed", None)
    return embed if isinstance(embed, torch.nn.Module) else None


class JobProgress:
    """The bar of one job: enter it around the job, and each stage with ``stage(name)``.

    Args:
        model: The model whose calls are counted (a hook on its input embedding).
        plan: ``(stage name, passes)`` in the order the job runs them.
        cost: The calibrated cost of a call (``CostModel.calibrated``); ``None``: no bar, and
            ``stage`` does nothing (a job run with ``progress=False``).
        desc: The bar's label.
    """

    def __init__(
        self,
        model: Any,
        plan: Sequence[tuple[str, Sequence[Pass]]],
        cost: CostModel | None,
        *,
        desc: str = "job",
    ) -> None:
        names = [name for name, _ in plan]
        if len(set(names)) != len(names):
            raise UserInputError(f"a job's stages need distinct names, got {names}")
        self.model = model
        self.plan = list(plan)
        self.cost = cost
        self.enabled = cost is not None
        self.planned = {name: 0.0 if cost is None else cost.of(passes) for name, passes in plan}
        self.order = names
        self.total = sum(self.planned.values())
        self.done = 0.0
        self.desc = desc
        self._next = 0
        self._bar: Any = None
        self._hook: Any = None
        self._bars_off: Any = None
        self.counted = 0.0
        """The cost of the calls counted (``done`` less the jumps of stages that cost less)."""
        self._started: float | None = None
        self.spent: dict[str, float] = {}
        """Each stage run so far: the cost of the calls it made (beside ``planned``)."""

    def estimate_line(self) -> str:
        """What the job will run and how long it should take, before it starts."""
        passes = [p for stage in self.plan for p in stage[1]]
        forward = sum(p.prompts for p in passes if p.new_tokens <= 1)
        decoded = sum(p.prompts * p.new_tokens for p in passes if p.new_tokens > 1)
        return (
            f"{self.desc}: {len(passes)} passes ({forward} prompts run once, {decoded} new "
            f"tokens decoded) in {len(self.order)} stages, estimated {minutes(self.total)} on "
            "this machine; the bar below corrects the estimate as it runs"
        )

    def _count(self, _module: Any, args: tuple[Any, ...]) -> None:
        ids = args[0] if args else None
        if isinstance(ids, torch.Tensor) and self.cost is not None:
            seconds = self.cost.seconds(ids.numel())
            self.counted += seconds
            self._advance(seconds)

    def seconds_left(self) -> float:
        """The estimated seconds left: the plan's cost still to run, scaled by how the calls
        counted so far compare with the time they took (the calibration, corrected)."""
        left = max(self.total - self.done, 0.0)
        if self.counted <= 0 or self._started is None:
            return left
        return left * (time.perf_counter() - self._started) / self.counted

    def _advance(self, seconds: float) -> None:
        self.done += seconds
        if self._bar is not None:
            self._bar.set_postfix_str(f"about {minutes(self.seconds_left())} left", refresh=False)
            self._bar.update(seconds)

    def __enter__(self) -> "JobProgress":
        if not self.enabled:
            return self
        self._bars_off = job_bar_running()
        self._bars_off.__enter__()
        self._bar = tqdm(
            total=self.total,
            desc=self.desc,
            file=sys.stderr,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed} elapsed{postfix}]",
            postfix=f"about {minutes(self.total)} left",
        )
        self._started = time.perf_counter()
        embedding = _input_embedding(self.model)
        if embedding is not None:  # else the bar moves stage by stage only
            self._hook = embedding.register_forward_pre_hook(self._count)
        return self

    def __exit__(self, error: type[BaseException] | None, *rest: object) -> None:
        if error is None and self._next < len(self.order):  # stages the job did not need
            self._settle(self.order[-1])
        if self._hook is not None:
            self._hook.remove()
        if self._bar is not None:
            self._bar.close()
        if self._bars_off is not None:
            self._bars_off.__exit__(None, None, None)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Run one stage of the plan; at its end the bar is at the stage's planned end (or the
        total grows by what the stage cost beyond its plan)."""
        if not self.enabled:
            yield
            return
        if name not in self.planned:
            raise UserInputError(f"stage {name!r} is not in the job's plan {self.order}")
        index = self.order.index(name)
        if index < self._next:
            raise UserInputError(f"stage {name!r} ran twice or out of order ({self.order})")
        for skipped in self.order[self._next : index]:  # stages the job did not need
            self._settle(skipped)
        if self._bar is not None:
            self._bar.set_description_str(f"{self.desc} ({name})")
        before = self.done
        yield
        self.spent[name] = self.done - before
        self._settle(name)
        self._next = index + 1

    def _settle(self, name: str) -> None:
        end = sum(self.planned[s] for s in self.order[: self.order.index(name) + 1])
        overrun = max(self.total - sum(self.planned.values()), 0.0)
        target = end + overrun
        if self.done > target:
            self.total += self.done - target
            if self._bar is not None:
                self._bar.total = self.total
                self._bar.refresh()
        else:
            self._advance(target - self.done)
