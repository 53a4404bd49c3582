"""The improve report: held-out accuracy per iteration, as a PNG."""

from __future__ import annotations

from pathlib import Path


def iteration_points(store, run) -> list[tuple[int, float, float]]:
    """(iteration, exact-match mean, std) for every evaluated model version of the run."""
    points = []
    for mv in store.model_versions():
        if mv.run_id != run.id:
            continue
        ev = (mv.metrics or {}).get("eval")
        if ev:
            points.append((mv.iteration, ev["exact_mean"], ev.get("exact_std", 0.0)))
    return sorted(points)


def plot_improve(store, run, out: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    pts = iteration_points(store, run)
    if not pts:
        raise ValueError(f"improve run {run.name} has no evaluated iterations yet")
    its, means, stds = zip(*pts)
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=120)
    ax.errorbar(its, [100 * m for m in means], yerr=[100 * s for s in stds], marker="o", capsize=3)
    ax.set_xlabel("iteration")
    ax.set_ylabel("held-out exact match (%)")
    ax.set_xticks(list(its))
    ax.set_title(run.name, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out)
    plt.close(fig)
    return out
