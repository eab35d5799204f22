"""The saved-set report as Python objects (actnn.report)."""
import json
from dataclasses import dataclass, field
from typing import List, Tuple


@dataclass(frozen=True)
class SavedValue:
    """One value the forward pass saves for the backward pass."""
    index: int
    kind: str            # activation, mask, pool_index, statistic, held, meta, ...
    value: str           # "<producer op> %<value> -> <consumer ops>"
    shape: Tuple[int, ...]  # () for metadata (lists, scalars)
    dtype: str
    full_bytes: int      # as PyTorch autograd would hold it (0 for parameters and metadata)
    stored_bytes: int    # as the compiled module holds it
    bits: str            # bits per value as stored: "32", "4", "1.88" (mixed), "-" (metadata)
    dither: bool         # decoded with subtractive dither


@dataclass(frozen=True)
class Report:
    """actnn.report's answer: every saved value at the given input shapes
    (measured by running the compiled forward once), and the totals."""
    values: List[SavedValue]
    full_bytes: int
    stored_bytes: int
    ratio: float         # full_bytes / stored_bytes
    rule_ops: int        # forward ops differentiated by a derivative rule
    fallback_ops: int    # ... and under the autograd fallback (their saved tensors kept as autograd keeps them)
    branch_ops: int      # data-dependent ifs differentiated per branch
    arena_bytes: int = 0  # L5: the one buffer of the static memory plan
    summary: dict = field(default_factory=dict, repr=False)

    @staticmethod
    def from_json_lines(text):
        values, summary = [], None
        for line in text.splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            if "index" in row:
                shape = () if row["shape"] == "-" else tuple(int(d) for d in row["shape"].split("x") if d)
                values.append(SavedValue(row["index"], row["kind"], row["value"], shape, row["dtype"],
                                         row["full_bytes"], row["stored_bytes"], row["bits"], row["dither"]))
            elif "saved_values" in row:
                summary = row
        if summary is None:
            raise ValueError("actnn.report: the compiler's report has no summary line")
        return Report(values, summary["full_bytes"], summary["stored_bytes"], summary["ratio"], summary["rule_ops"],
                      summary["fallback_ops"], summary["branch_ops"], summary.get("arena_bytes", 0), summary)

    def breakdown(self):
        """The saved set grouped by kind and producing op (softmax outputs,
        linear-layer inputs made by layer norm, GELU inputs, ...), largest
        first: [(kind, producer, count, full_bytes, stored_bytes)]."""
        groups = {}
        for v in self.values:
            key = (v.kind, v.value.split(" ")[0] if v.value else "-")
            count, full, stored = groups.get(key, (0, 0, 0))
            groups[key] = (count + 1, full + v.full_bytes, stored + v.stored_bytes)
        rows = [(kind, producer, c, f, s) for (kind, producer), (c, f, s) in groups.items()]
        return sorted(rows, key=lambda r: (-r[3], -r[4], r[0], r[1]))

    def breakdown_table(self):
        """breakdown() as a Markdown table."""
        lines = ["| kind | made by | values | full precision | stored | ratio |", "|---|---|---|---|---|---|"]
        for kind, producer, count, full, stored in self.breakdown():
            ratio = "%.1fx" % (full / stored) if full and stored else "-"
            lines.append("| %s | %s | %d | %.1f MiB | %.1f MiB | %s |"
                         % (kind, producer, count, full / 2**20, stored / 2**20, ratio))
        lines.append("| all | | %d | %.1f MiB | %.1f MiB | %.2fx |" % (
            len(self.values), self.full_bytes / 2**20, self.stored_bytes / 2**20, self.ratio))
        return "\n".join(lines)

    def __str__(self):
        def mib(b):
            return "%.2f MiB" % (b / 2**20)
        lines = ["saved set: %d values, %s at full precision, %s stored (%.2fx)"
                 % (len(self.values), mib(self.full_bytes), mib(self.stored_bytes), self.ratio),
                 "differentiated: %d ops by rule, %d under the autograd fallback, %d data-dependent branches"
                 % (self.rule_ops, self.fallback_ops, self.branch_ops),
                 "%4s  %-11s %-18s %-10s %12s %12s  %-5s  %s" % ("#", "kind", "shape", "dtype", "full", "stored",
                                                               "bits", "value")]
        for v in self.values:
            shape = "x".join(str(d) for d in v.shape) if v.shape else "-"
            lines.append("%4d  %-11s %-18s %-10s %12s %12s  %-5s  %s%s" % (
                v.index, v.kind, shape, v.dtype, mib(v.full_bytes), mib(v.stored_bytes), v.bits, v.value,
                " (dithered)" if v.dither else ""))
        return "\n".join(lines)
