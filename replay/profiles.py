"""Load profiles and their seeded, open-loop schedules.

A schedule is a plain list of planned requests: when to send (seconds from the
start of the run), which prompt class, how many tokens to ask for, the prompt.
Arrivals are a Poisson process (exponential gaps at the profile's rate), so the
offered load does not depend on how fast the service answers.

Everything comes from `numpy.random.default_rng`, seeded: the same profile, seed
and duration give exactly the same schedule, and a longer schedule starts with
the shorter one (arrival gaps, classes and prompts are drawn from three separate
streams, one draw sequence per request). Only uniform draws are used and shaped
here (the exponential by its inverse CDF), so a numpy release that changes its
distribution algorithms does not change the schedules.

    plan = schedule_phases(PROFILES["rag_mixed_20rps"], 42,
                           [("baseline", 600), ("fault", 600), ("recovery", 300)])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from runfmt.errors import ConfigError


@dataclass(frozen=True)
class PromptClass:
    """One kind of request: its answer budget and how its prompt is built."""

    max_tokens: int
    template: str  # placeholders: {topic}, {context}
    context_words: int = 0  # words of filler text in {context}


@dataclass(frozen=True)
class Profile:
    """Offered load: a Poisson rate and a mix of prompt classes (weights sum to 1)."""

    rate_rps: float
    mix: Mapping[str, float]
    classes: Mapping[str, PromptClass]

    def __post_init__(self) -> None:
        if not self.rate_rps > 0:
            raise ConfigError(f"profile rate {self.rate_rps!r} rps is not positive",
                              "give a request rate above 0")
        unknown = sorted(set(self.mix) - set(self.classes))
        if unknown:
            raise ConfigError(f"profile mix names classes without a definition: {', '.join(unknown)}",
                              "add them to the profile's classes")
        total = sum(self.mix.values())
        if abs(total - 1.0) > 1e-6 or min(self.mix.values(), default=-1) < 0:
            raise ConfigError(f"profile mix weights {dict(self.mix)} do not sum to 1",
                              "give non-negative weights that add up to 1")


@dataclass(frozen=True)
class PlannedRequest:
    request_id: str
    send_at: float  # seconds from the start of the run
    prompt_class: str
    max_tokens: int
    prompt: str
    phase: str | None = None


_TOPICS = (
    "TCP retransmission timers", "DNS negative caching", "CPU run-queue latency",
    "TLS session resumption", "KV-cache eviction", "token streaming over SSE",
    "vector index recall", "load shedding", "tail latency budgets", "connection pooling",
    "page cache reclaim", "cgroup CPU quotas", "retry storms", "consistent hashing",
)

_WORDS = (
    "the service answers each request after the retriever returns passages from the index "
    "while the gateway streams tokens to the client and the scheduler places threads on cores "
    "so latency depends on queueing network round trips cache hits and the length of the answer"
).split()

RAG_MIXED_20RPS = Profile(
    rate_rps=20.0,
    mix={"chat_short": 0.5, "rag_medium": 0.35, "context_long": 0.15},
    classes={
        "chat_short": PromptClass(
            max_tokens=64,
            template="In two sentences, explain {topic} to a new on-call engineer.",
        ),
        "rag_medium": PromptClass(
            max_tokens=128,
            template=("Using the retrieved passages, answer: how does {topic} affect "
                      "time to first token?\n\nPassages:\n{context}"),
            context_words=300,
        ),
        "context_long": PromptClass(
            max_tokens=256,
            template="Summarise the incident notes below, focusing on {topic}.\n\n{context}",
            context_words=2000,
        ),
    },
)

PROFILES: dict[str, Profile] = {"rag_mixed_20rps": RAG_MIXED_20RPS}


def _pick(rng: np.random.Generator, n: int) -> int:
    return min(int(rng.random() * n), n - 1)


def _prompt(cls: PromptClass, rng: np.random.Generator) -> str:
    topic = _TOPICS[_pick(rng, len(_TOPICS))]
    context = ""
    if cls.context_words:
        start = _pick(rng, len(_WORDS))
        ring = _WORDS * (2 + cls.context_words // len(_WORDS))
        context = " ".join(ring[start:start + cls.context_words])
    return cls.template.format(topic=topic, context=context)


def schedule(profile: Profile, seed: int, duration_s: float, start_offset_s: float = 0.0) -> list[PlannedRequest]:
    """Poisson arrivals in [start_offset_s, start_offset_s + duration_s), in send order.

    Request ids are f"{seed}-{index:06d}", the index counting from 0 in this schedule.
    """
    arrivals, classes, prompts = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    names = list(profile.mix)
    cumulative = np.cumsum([profile.mix[n] for n in names])
    cumulative /= cumulative[-1]
    planned: list[PlannedRequest] = []
    t = 0.0
    while True:
        t += -math.log1p(-arrivals.random()) / profile.rate_rps  # exponential gap, inverse CDF
        if t >= duration_s:
            return planned
        name = names[min(int(np.searchsorted(cumulative, classes.random(), side="right")), len(names) - 1)]
        cls = profile.classes[name]
        planned.append(PlannedRequest(
            request_id=f"{seed}-{len(planned):06d}",
            send_at=start_offset_s + t,
            prompt_class=name,
            max_tokens=cls.max_tokens,
            prompt=_prompt(cls, prompts),
        ))


def schedule_phases(profile: Profile, seed: int, phases: Sequence[tuple[str, float]]) -> list[PlannedRequest]:
    """One continuous schedule over all phases, each request tagged by its send time.

    Phase boundaries do not restart the arrival process, so the phases' lengths
    change only the tags, never the send times.
    """
    if not phases or any(seconds <= 0 for _, seconds in phases):
        raise ConfigError(f"phases {list(phases)!r} need at least one phase, each longer than 0 s",
                          "pass phases as [(name, seconds), ...], e.g. [('baseline', 600)]")
    ends = np.cumsum([seconds for _, seconds in phases])
    planned = schedule(profile, seed, float(ends[-1]))
    index = np.searchsorted(ends, [req.send_at for req in planned], side="right")
    return [replace(req, phase=phases[int(i)][0]) for req, i in zip(planned, index)]
