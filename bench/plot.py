"""One PNG: latency by stage per contender (the headline job), and the server's throughput and p95 latency
against the number of concurrent clients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.workload import Job

STACK = ("preprocess", "vision_encoder", "text_encoder", "first_decode", "decode")


def _stacks(results: dict[str, Any], headline: Job) -> dict[str, dict[str, float]]:
    """Seconds per stage for each contender; later decode steps as one block; the rest as ``other``."""
    stacks: dict[str, dict[str, float]] = {}
    for name, contender in results.get("contenders", {}).items():
        entry = contender.get("summary", {}).get(headline.key)
        if not entry:
            continue
        stages = dict(entry["stages_s"])
        stages["decode"] = stages.pop("per_token_decode", 0.0) * max(0, entry["new_tokens"] - 1)
        stack = {s: stages.get(s, 0.0) for s in STACK}
        stack["other"] = max(0.0, (entry["end_to_end_s"] or 0.0) - sum(stack.values()))  # None: one stage only
        stacks[name] = stack
    return stacks


def draw(results: dict[str, Any], headline: Job, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display; the file is the product
    import matplotlib.pyplot as plt

    fig, (stages_ax, throughput_ax, latency_ax) = plt.subplots(1, 3, figsize=(17, 5))
    stacks = _stacks(results, headline)
    names = list(stacks)
    left = [0.0] * len(names)
    for stage in (*STACK, "other"):
        widths = [stacks[n][stage] for n in names]
        stages_ax.barh(names, widths, left=left, label=stage)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    stages_ax.set_xlabel("seconds")
    stages_ax.set_title(f"latency by stage, {headline.max_new_tokens} tokens, greedy, batch 1")
    stages_ax.invert_yaxis()
    if names:
        stages_ax.legend(fontsize="small")

    levels = (results.get("server") or {}).get("levels", [])
    clients = [lv["concurrency"] for lv in levels]
    throughput_ax.plot(clients, [lv["throughput_tokens_per_s"] or 0 for lv in levels], marker="o")
    throughput_ax.set_xlabel("concurrent clients")
    throughput_ax.set_ylabel("completion tokens / s")
    throughput_ax.set_title("server throughput")
    latency_ax.plot(clients, [lv["latency_s"]["p95"] or 0 for lv in levels], marker="o", color="tab:red")
    latency_ax.set_xlabel("concurrent clients")
    latency_ax.set_ylabel("seconds")
    latency_ax.set_title("server p95 latency")
    for ax in (throughput_ax, latency_ax):
        ax.set_ylim(bottom=0)
        ax.set_xticks(clients or [1])
        ax.grid(alpha=0.3)
        if not levels:
            ax.text(0.5, 0.5, "server not measured", ha="center", va="center", transform=ax.transAxes)
    fig.suptitle(f"Florence-2 {results['model']['arch']} (random weights), {results['date']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
