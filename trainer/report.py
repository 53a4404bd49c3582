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


def results_table(cfg, results):
    """The improve run's iterations as a rich table (what `cli.py improve` prints last)."""
    from rich.table import Table

    table = Table(title=f"improve {cfg.name}")
    for col in ("iteration", "examples", "train loss", f"{cfg.eval_split} exact", "promoted"):
        table.add_column(col)
    for r in results:
        table.add_row(str(r.iteration), str(r.examples),
                      "" if r.train_loss is None else f"{r.train_loss:.3f}",
                      f"{r.eval_exact:.3f} ± {r.eval_std:.3f}", "yes" if r.promoted else "")
    return table
