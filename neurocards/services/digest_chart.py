"""The owner's 14-day chart as a PNG, drawn with matplotlib's Agg canvas (no display, no global
pyplot state, so it can run in a worker thread)."""

from __future__ import annotations

import io

from neurocards.store.stats import DayNumbers

FAILURE_COLOURS = ("#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def render_chart(days: list[DayNumbers]) -> bytes:
    """Four panels over the days given: videos delivered, failures by class (stacked), revenue
    in Stars, new users. Returns PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # heavy import: only when drawn
    from matplotlib.figure import Figure

    labels = [d.day[8:10] + "." + d.day[5:7] for d in days]  # DD.MM
    x = list(range(len(days)))
    fig = Figure(figsize=(10, 7), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    (videos, failures), (revenue, users) = fig.subplots(2, 2, sharex=True)
    videos.bar(x, [d.delivered for d in days], color="#2ca02c")
    videos.set_title("Videos delivered")
    bottom = [0] * len(days)
    classes = sorted({c for d in days for c in d.failures_by_class})
    for index, cls in enumerate(classes):
        values = [d.failures_by_class.get(cls, 0) for d in days]
        failures.bar(x, values, bottom=bottom, label=cls, color=FAILURE_COLOURS[index % len(FAILURE_COLOURS)])
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    failures.set_title("Failures by class")
    if classes:
        failures.legend(fontsize=8, loc="upper left")
    revenue.bar(x, [d.revenue_stars for d in days], color="#e6b800")
    revenue.set_title("Revenue, Stars")
    users.bar(x, [d.new_users for d in days], color="#1f77b4")
    users.set_title("New users")
    for ax in (videos, failures, revenue, users):
        ax.set_xticks(x, labels, rotation=45, fontsize=8)
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"neurocards, {labels[0]} – {labels[-1]} (UTC)" if labels else "neurocards")
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()
