#!/usr/bin/env python3
"""Turn the JSON lines of load-tests/bench into the Markdown tables of REPORT.md
and, when matplotlib is installed, into PNG plots.

usage: load-tests/summarize.py RESULTS_DIR [PLOTS_DIR]

Every throughput and latency is the median over the runs of one invocation.
Ratios are the median of the per-run ratios, each taken between two
measurements made one after the other in the same run. CPU costs are CPU
seconds of a process during a run divided by the run's operations, as a median
over the runs. "other CPU" is the share of the machine's two cores that
processes other than the server, nats-server and the load tool took during the
product's runs: the noise of the shared machine.
"""

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

PRODUCT = "watchword"


def load(path):
    """Return the run lines and the summary lines of a JSON-lines file."""
    runs, summaries = [], []
    if not path.exists():
        return runs, summaries
    for line in path.read_text().splitlines():
        record = json.loads(line)
        (runs if record["type"] == "run" else summaries).append(record)
    return runs, summaries


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=0):
    if value is None:
        return "–"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def per_op_micros(runs, field):
    return median([r[field] / r["operations"] * 1e6 for r in runs if r.get(field) is not None and r["operations"]])


def other_share(runs):
    return median([r["other_cpu_s"] / r["seconds"] / 2 for r in runs if r.get("other_cpu_s") is not None])


def group(runs, keys):
    grouped = defaultdict(list)
    for run in runs:
        grouped[tuple(run.get(k) for k in keys)].append(run)
    return grouped


def write_table(results):
    runs, summaries = load(results / "write.jsonl")
    by_cell = group([r for r in runs if r["target"] == PRODUCT], ["size", "concurrency"])
    print("| content | writers | writes/s | p50 ms | p99 ms | p999 ms | raw publish/s | ratio | raw write path/s | ratio"
          " | server µs/write | nats µs/write | load µs/write | other CPU |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for summary in sorted(summaries, key=lambda s: (s["size"], s["concurrency"])):
        cell = by_cell[(summary["size"], summary["concurrency"])]
        medians, ratios = summary["median"], summary["ratio_per_second"]
        product = medians[PRODUCT]
        raw = medians.get("raw-publish", {})
        path = medians.get("raw-write-path", {})
        print(f"| {summary['size']:,} B | {summary['concurrency']} | {fmt(product['per_second'])}"
              f" | {fmt(product['p50_ms'], 1)} | {fmt(product['p99_ms'], 1)} | {fmt(product['p999_ms'], 1)}"
              f" | {fmt(raw.get('per_second'))} | {fmt(ratios.get('watchword/raw-publish'), 3)}"
              f" | {fmt(path.get('per_second'))} | {fmt(ratios.get('watchword/raw-write-path'), 3)}"
              f" | {fmt(per_op_micros(cell, 'server_cpu_s'))} | {fmt(per_op_micros(cell, 'nats_cpu_s'))}"
              f" | {fmt(per_op_micros(cell, 'load_cpu_s'))} | {fmt(other_share(cell) * 100 if cell else None)} % |")
    return summaries


def read_table(results):
    runs, summaries = load(results / "read.jsonl")
    by_cell = group([r for r in runs if r["target"] == PRODUCT], ["secrets", "concurrency"])
    print("| secrets | readers | reads/s | p50 ms | p99 ms | p999 ms | read model/s | ratio"
          " | read model + data-key get/s | ratio | server µs/read | nats µs/read | other CPU |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for summary in sorted(summaries, key=lambda s: (s["secrets"], s["concurrency"])):
        cell = by_cell[(summary["secrets"], summary["concurrency"])]
        medians, ratios = summary["median"], summary["ratio_per_second"]
        product = medians[PRODUCT]
        model = medians.get("read-model", {})
        model_key = medians.get("read-model+data-key", {})
        print(f"| {summary['secrets']:,} | {summary['concurrency']} | {fmt(product['per_second'])}"
              f" | {fmt(product['p50_ms'], 2)} | {fmt(product['p99_ms'], 2)} | {fmt(product['p999_ms'], 2)}"
              f" | {fmt(model.get('per_second'))} | {fmt(ratios.get('watchword/read-model'), 3)}"
              f" | {fmt(model_key.get('per_second'))} | {fmt(ratios.get('watchword/read-model+data-key'), 3)}"
              f" | {fmt(per_op_micros(cell, 'server_cpu_s'))} | {fmt(per_op_micros(cell, 'nats_cpu_s'))}"
              f" | {fmt(other_share(cell) * 100 if cell else None)} % |")
    return summaries


def lag_table(results):
    runs, _ = load(results / "lag.jsonl")
    print("| offered writes/s | sent/s | committed/s | lag p50 ms | lag p99 ms | lag p999 ms | lag max ms"
          " | write p99 ms | poll gap ms | delayed writes | other CPU |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    cells = group(runs, ["rate"])
    for (rate,), cell in sorted(cells.items()):
        m = lambda field: median([r[field] for r in cell])  # noqa: E731
        print(f"| {fmt(rate)} | {fmt(m('sent_per_second'))} | {fmt(m('per_second'))} | {fmt(m('p50_ms'), 1)}"
              f" | {fmt(m('p99_ms'), 1)} | {fmt(m('p999_ms'), 1)} | {fmt(m('max_ms'), 1)} | {fmt(m('write_p99_ms'), 1)}"
              f" | {fmt(m('poll_gap_median_ms'), 2)} | {fmt(m('delayed_by_max_in_flight'))}"
              f" | {fmt(other_share(cell) * 100)} % |")
    return cells


def replay_table(results):
    runs, summaries = load(results / "replay.jsonl")
    print("| events | watchword-replay events/s | decode events/s | ratio | replay CPU µs/event"
          " | decode CPU µs/event | other CPU |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for summary in summaries:
        medians = summary["median"]
        verify, decode = medians.get("watchword-replay", {}), medians.get("decode", {})
        cell = [r for r in runs if r["events"] == summary["events"]]
        verify_runs = [r for r in cell if r["target"] == "watchword-replay"]
        decode_runs = [r for r in cell if r["target"] == "decode"]
        print(f"| {summary['events']:,} | {fmt(verify.get('per_second'))} | {fmt(decode.get('per_second'))}"
              f" | {fmt(summary['ratio_per_second'].get('watchword-replay/decode'), 3)}"
              f" | {fmt(per_op_micros(verify_runs, 'children_cpu_s'), 1)}"
              f" | {fmt(per_op_micros(decode_runs, 'load_cpu_s'), 1)}"
              f" | {fmt(other_share(verify_runs) * 100 if verify_runs else None)} % |")


def memory_table(results):
    print("| scenario | server RSS max MiB | server RSS at the end MiB |")
    print("| --- | ---: | ---: |")
    for name in ["write", "read", "lag", "replay"]:
        runs, _ = load(results / f"{name}.jsonl")
        if not runs:
            continue
        peak = max(r["server_rss_max_mib"] for r in runs if r.get("server_rss_max_mib") is not None)
        end = runs[-1].get("server_rss_end_mib")
        print(f"| {name} | {fmt(peak, 1)} | {fmt(end, 1)} |")


def plot(results, plots, write_summaries, read_summaries):
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plots", file=sys.stderr)
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots.mkdir(parents=True, exist_ok=True)
    figure, (throughput, latency) = plt.subplots(1, 2, figsize=(11, 4.2))
    for size in sorted({s["size"] for s in write_summaries}):
        cells = sorted((s for s in write_summaries if s["size"] == size), key=lambda s: s["concurrency"])
        writers = [s["concurrency"] for s in cells]
        line, = throughput.plot(writers, [s["median"][PRODUCT]["per_second"] for s in cells], "o-",
                                label=f"watchword, {size:,} B")
        throughput.plot(writers, [s["median"]["raw-write-path"]["per_second"] for s in cells], "s--",
                        color=line.get_color(), alpha=0.6, label=f"raw write path, {size:,} B")
        latency.plot(writers, [s["median"][PRODUCT]["p99_ms"] for s in cells], "o-", label=f"{size:,} B")
    throughput.set(xscale="log", yscale="log", xlabel="writers", ylabel="committed writes/s (median of 5)",
                   title="Write throughput")
    throughput.axhline(10_000, color="grey", linestyle=":", label="target 10,000/s")
    throughput.legend(fontsize=7)
    latency.set(xscale="log", yscale="log", xlabel="writers", ylabel="p99 latency, ms (median of 5)",
                title="Write p99 latency")
    latency.axhline(25, color="grey", linestyle=":", label="target 25 ms")
    latency.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(plots / "write.png", dpi=110)

    figure, axes = plt.subplots(figsize=(6, 4))
    labels, rates = [], defaultdict(list)
    for summary in sorted(read_summaries, key=lambda s: (s["secrets"], s["concurrency"])):
        labels.append(f"{summary['secrets']:,} secrets\n{summary['concurrency']} readers")
        for target in [PRODUCT, "read-model+data-key", "read-model"]:
            rates[target].append(summary["median"].get(target, {}).get("per_second", 0))
    width = 0.27
    for offset, (target, values) in enumerate(rates.items()):
        axes.bar([i + (offset - 1) * width for i in range(len(labels))], values, width, label=target)
    axes.set_xticks(range(len(labels)), labels, fontsize=7)
    axes.set(yscale="log", ylabel="reads/s (median of 5)", title="Reads")
    axes.axhline(50_000, color="grey", linestyle=":", label="target 50,000/s")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(plots / "read.png", dpi=110)


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    results = Path(sys.argv[1])
    plots = Path(sys.argv[2]) if len(sys.argv) == 3 else None
    print("### Writes\n")
    write_summaries = write_table(results)
    print("\n### Reads\n")
    read_summaries = read_table(results)
    print("\n### Projection lag\n")
    lag_table(results)
    print("\n### Replay\n")
    replay_table(results)
    print("\n### Memory\n")
    memory_table(results)
    if plots is not None:
        plot(results, plots, write_summaries, read_summaries)


if __name__ == "__main__":
    main()
