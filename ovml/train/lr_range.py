"""`train-head --lr auto`: Leslie Smith's learning-rate range test picks the one-cycle maximum.

Smith's range test ("Cyclical learning rates for training neural networks", 2017; the one-cycle
policy's companion, "Super-convergence", 2018) trains for a bounded number of steps while the
learning rate grows geometrically, and reads the loss curve. ovml's rule, on the smoothed loss
after the first `SKIP` of the steps (the first batches' noise decides nothing):
- the learning rate of the lowest loss, divided by `DIVISOR` (the minimum is where training
  starts to be too fast; a little further the loss blows up, and the one-cycle schedule spends
  most of its steps well below its maximum anyway);
- or, when smaller, the knee: the first learning rate at which the loss has made `KNEE` of its
  drop to that minimum. It guards against a long plateau, where the minimum lies far to the
  right of where the learning happened. The knee counts only when the drop exceeds
  `NOISE_RATIO` times the loss's batch-to-batch noise: on a flat curve it is noise.
docs/method.md ("`--lr auto`: the range test") gives the cases measured on planted worlds.
The test is seeded, restores every weight afterwards, and writes its curve (lr_range.json,
lr_range.png) to the run folder.
"""
from __future__ import annotations

import math
import os
import statistics
from dataclasses import asdict, dataclass
from typing import Callable

from ..files import write_json
from ..progress import progress

LR_START, LR_END = 1e-6, 1.0   # the range swept, geometrically
SMOOTHING = 0.9                # exponential moving average of the loss (bias-corrected)
DIVERGED = 4.0                 # stop once the smoothed loss passes this multiple of its minimum
DIVISOR = 10.0                 # one-cycle maximum = lr at the smoothed minimum / DIVISOR ...
KNEE = 0.8                     # ... or the lr where the loss has made this part of its drop, if smaller
NOISE_RATIO = 1.5              # the knee counts when the drop exceeds this many noise standard deviations
SKIP = 0.1                     # the first part of the steps, left out of the choice
RULE = (f"min(lr at the lowest smoothed loss (EMA {SMOOTHING}) / {DIVISOR:g}, lr where {KNEE:.0%} of the drop "
        f"is made when the drop > {NOISE_RATIO:g} x noise), the first {SKIP:.0%} of the steps left out")


@dataclass
class RangeTest:
    """The curve of one range test and the learning rate it chose."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    chosen: float
    rule: str = RULE

    def summary(self) -> dict:
        """What config.json records: the choice, the rule and the sweep, without the curve."""
        return {"chosen": self.chosen, "rule": self.rule, "steps": len(self.lrs),
                "range": [self.lrs[0], self.lrs[-1]] if self.lrs else []}


def learning_rates(steps: int, start: float = LR_START, end: float = LR_END) -> list[float]:
    """`steps` learning rates from `start` to `end`, evenly spaced in log scale."""
    if steps < 2:
        raise ValueError(f"a range test needs at least 2 steps, not {steps}")
    return [start * (end / start) ** (k / (steps - 1)) for k in range(steps)]


def choose_lr(lrs: list[float], smoothed: list[float], losses: list[float] | None = None) -> float:
    """The module's rule on one curve (`losses`, the raw ones, measure the noise; without them
    the knee is not considered)."""
    body = range(int(SKIP * len(lrs)) if len(lrs) >= 10 else 0, len(lrs))
    best = min(body, key=lambda k: smoothed[k])
    chosen = lrs[best] / DIVISOR
    drop = smoothed[body[0]] - smoothed[best]
    if losses is not None and best > body[0] + 2:
        noise = statistics.pstdev(losses[k] - smoothed[k] for k in range(body[0], best + 1))
        if drop > NOISE_RATIO * noise:
            knee = next(k for k in body if smoothed[k] <= smoothed[best] + (1 - KNEE) * drop)
            chosen = min(chosen, lrs[knee])
    return chosen


def run_range_test(step: Callable[[float], float], steps: int, show: bool = True) -> RangeTest:
    """Call `step(lr)` (one optimisation step at that learning rate, returning its loss) along the
    sweep, stopping early once the loss diverges; returns the curve and the chosen rate."""
    record = RangeTest([], [], [], chosen=float("nan"))
    average, lowest = 0.0, math.inf
    bar = progress(total=steps, desc="lr range test", unit="step", enabled=show)
    for k, lr in enumerate(learning_rates(steps)):
        loss = step(lr)
        bar.update(1)
        if not math.isfinite(loss):
            break
        average = SMOOTHING * average + (1 - SMOOTHING) * loss
        smoothed = average / (1 - SMOOTHING ** (k + 1))
        record.lrs.append(lr)
        record.losses.append(loss)
        record.smoothed.append(smoothed)
        lowest = min(lowest, smoothed)
        if smoothed > DIVERGED * lowest:
            break
    bar.close()
    if not record.lrs:
        raise RuntimeError("the learning-rate range test diverged at its first step")
    record.chosen = choose_lr(record.lrs, record.smoothed, record.losses)
    return record


def write_range_test(record: RangeTest, folder: str) -> list[str]:
    """lr_range.json (the whole curve) and lr_range.png in `folder`; returns the paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    paths = [os.path.join(folder, "lr_range.json"), os.path.join(folder, "lr_range.png")]
    write_json(paths[0], asdict(record), indent=1)
    figure, axis = plt.subplots(figsize=(5, 3.5))
    axis.plot(record.lrs, record.losses, color="lightgrey", label="loss")
    axis.plot(record.lrs, record.smoothed, color="tab:blue", label="smoothed")
    axis.axvline(record.chosen, color="tab:red", linestyle="--", label=f"chosen {record.chosen:.3g}")
    axis.set_xscale("log")
    axis.set_xlabel("learning rate")
    axis.set_ylabel("training loss")
    axis.set_title("learning-rate range test")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(paths[1], dpi=100)
    plt.close(figure)
    return paths
