"""The curves of bench/stppo.py and bench/alp.py: one row of panels per `max_staleness`, one panel per metric, one
line per run (seed), coloured by variant."""

from __future__ import annotations

from pathlib import Path

COLOURS = ("#c44e52", "#dd8452", "#4c72b0", "#55a868")


def plot_runs(runs: dict, variants, keys: tuple[str, ...], out: Path, log_keys: tuple[str, ...] = ()) -> None:
    """`runs`: name -> {"variant", "max_staleness", "series": {key: [value per iteration, None where absent]}}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stalenesses = sorted({r["max_staleness"] for r in runs.values()})
    fig, axes = plt.subplots(len(stalenesses), len(keys), figsize=(4 * len(keys), 3.2 * len(stalenesses)),
                             squeeze=False)
    colours = dict(zip(variants, COLOURS))
    for row, staleness in enumerate(stalenesses):
        for col, key in enumerate(keys):
            ax = axes[row][col]
            for variant in variants:
                series = [r["series"][key] for r in runs.values()
                          if r["variant"] == variant and r["max_staleness"] == staleness]
                for i, values in enumerate(series):
                    ax.plot(range(1, len(values) + 1), [float("nan") if v is None else v for v in values],
                            color=colours[variant], alpha=0.8, label=variant if i == 0 else None)
            ax.set_title(f"{key} (max_staleness {staleness})", fontsize=9)
            ax.set_xlabel("iteration")
            if key in log_keys:
                ax.set_yscale("log")
            if row == 0 and col == 0:
                ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
