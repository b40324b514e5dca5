"""Pure progress logic: parse ffmpeg's `-progress` lines, weight steps, estimate the ETA."""

from __future__ import annotations

from dataclasses import dataclass, field


def parse_progress_line(line: str) -> tuple[str, str] | None:
    """'out_time_us=1500000' -> ('out_time_us', '1500000'); anything else -> None."""
    key, sep, value = line.strip().partition("=")
    if not sep or not key:
        return None
    return key, value.strip()


def out_time_seconds(key: str, value: str) -> float | None:
    """Media time reached, from the keys ffmpeg writes (out_time_us is in microseconds;
    out_time_ms is too, despite its name). 'N/A' before the first frame."""
    if key in ("out_time_us", "out_time_ms"):
        try:
            micro = int(value)
        except ValueError:
            return None
        return max(0.0, micro / 1_000_000)
    return None


@dataclass
class ProgressTracker:
    """Overall progress across weighted steps, monotonic, with speed and ETA.

    Speed is measured over the job's running time so far (wall clock supplied by the caller),
    which is steady enough for an ETA and needs no smoothing state.
    """

    weights: dict[str, float] = field(default_factory=lambda: {"main": 1.0})
    done: dict[str, float] = field(default_factory=dict)
    started_at: float | None = None
    best: float = 0.0

    def declare(self, weights: dict[str, float]) -> None:
        total = sum(w for w in weights.values() if w > 0)
        if total <= 0:
            raise ValueError("steps need a positive total weight")
        self.weights = {k: max(0.0, w) / total for k, w in weights.items()}
        self.done = {}

    def update(self, step: str, fraction: float) -> float:
        fraction = min(1.0, max(0.0, fraction))
        self.done[step] = max(self.done.get(step, 0.0), fraction)
        overall = sum(self.weights.get(name, 0.0) * f for name, f in self.done.items())
        self.best = max(self.best, min(1.0, overall))
        return self.best

    def eta(self, now: float) -> float | None:
        if self.started_at is None or self.best <= 0.01:
            return None
        elapsed = now - self.started_at
        return max(0.0, elapsed * (1.0 - self.best) / self.best)
