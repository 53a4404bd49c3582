"""Step choosers: which of a step's K samples a trajectory continues with.

The agent takes its chooser as a callable (`agent.graph.Agent(chooser=...)`), so it never
imports a judge; the CLI looks the `--choose` name up here and passes the chooser in.
"perplexity" needs none: the agent's own rule, the lowest perplexity, is the paper's.
"""

from __future__ import annotations

from typing import Callable, Optional

from reward.rules import judge_step


def choose_by_rules(kind: str, prompt: str, samples) -> Optional[int]:
    """The rule judge's first parseable pick (good before bad, then fewer steps, then lower
    perplexity), so grow follows the path the judge would keep; None when the judge cannot
    read the step, and the agent then takes the lowest perplexity."""
    verdict = judge_step(kind, prompt, samples)
    if not verdict.ok:
        return None
    return next((i for i in verdict.order if samples[i].parsed), None)


CHOOSERS: dict[str, Optional[Callable]] = {"perplexity": None, "rules": choose_by_rules}


def chooser_for(name: str) -> Optional[Callable]:
    """The chooser an `AgentConfig.choose` name stands for (None: the agent's own)."""
    if name not in CHOOSERS:
        raise ValueError(f"choose must be one of {', '.join(CHOOSERS)}, not {name!r}")
    return CHOOSERS[name]
