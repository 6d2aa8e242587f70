"""Reading the server's ``/metrics`` text: histogram snapshots and what changed between two of them."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Histogram:
    """One histogram summed over its label sets (other than ``le``): cumulative buckets, sum and count."""

    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative count
    total: float = 0.0
    count: float = 0.0

    def minus(self, earlier: Histogram) -> Histogram:
        return Histogram(
            buckets={le: c - earlier.buckets.get(le, 0.0) for le, c in self.buckets.items()},
            total=self.total - earlier.total,
            count=self.count - earlier.count,
        )

    def counts(self) -> dict[str, int]:
        """Observations per bucket (not cumulative), keyed by the bucket's upper bound; empty buckets left out."""
        out: dict[str, int] = {}
        previous = 0.0
        for le in sorted(self.buckets):
            n = self.buckets[le] - previous
            previous = self.buckets[le]
            if n > 0:
                out["+Inf" if le == float("inf") else f"{le:g}"] = round(n)
        return out

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


def histograms(text: str, label_filter: dict[str, str] | None = None) -> dict[str, Histogram]:
    """Every histogram in a metrics page, by name; series whose labels disagree with ``label_filter`` are left out.
    With a label named in ``label_filter`` as ``"*"``, one histogram per value of that label is kept, named
    ``name{label=value}``."""
    wanted = label_filter or {}
    result: dict[str, dict[str, object]] = {}
    for family in text_string_to_metric_families(text):
        if family.type != "histogram":
            continue
        for sample in family.samples:
            labels = dict(sample.labels)
            if any(v != "*" and labels.get(k) != v for k, v in wanted.items()):
                continue
            split = [k for k, v in wanted.items() if v == "*"]
            name = family.name + "".join(f"{{{k}={labels.get(k, '')}}}" for k in split)
            entry = result.setdefault(name, {"buckets": {}, "sum": 0.0, "count": 0.0})
            if sample.name.endswith("_bucket"):
                le = float(labels["le"])
                buckets = entry["buckets"]
                assert isinstance(buckets, dict)
                buckets[le] = buckets.get(le, 0.0) + sample.value
            elif sample.name.endswith("_sum"):
                entry["sum"] = float(entry["sum"]) + sample.value  # type: ignore[arg-type]
            elif sample.name.endswith("_count"):
                entry["count"] = float(entry["count"]) + sample.value  # type: ignore[arg-type]
    return {
        name: Histogram(buckets=dict(e["buckets"]), total=float(e["sum"]), count=float(e["count"]))  # type: ignore[arg-type, call-overload]
        for name, e in result.items()
    }
