#!/usr/bin/env python3
"""benches/load/report.py: turns the raw records that run.sh collected into the results table,
Baton-to-peer ratios, and a JSON file. Standard library only.

Input: a JSON-lines file written by run.sh, one record per line:
  {"type": "proxy", "proxy": NAME, "processes": [{"pid", "role", "comm", "rss_kb_idle",
   "rss_kb_after"}], "version": STR}
  {"type": "run", "proxy": NAME, "mode": MODE, "tool": "wrk"|"h2load", "out": PATH, "log": PATH}
  {"type": "skip", "proxy": NAME, "mode": MODE, "reason": STR}
  {"type": "meta", ...}  (copied into the JSON as-is)
Several "run" records for one (proxy, mode) are repeats: the report gives their median.
"""

import json
import re
import statistics
import sys

MODES = ["h1-keepalive", "h1-close", "h2"]
PROXY_ORDER = ["baton", "nginx", "haproxy", "envoy"]


def parse_wrk(path):
    """Reads wrk's output; the WRKJSON line comes from wrk-report.lua."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    m = re.search(r"^WRKJSON (\{.*\})$", text, re.M)
    if not m:
        raise ValueError(f"could not find the wrk summary line in {path}")
    s = json.loads(m.group(1))
    secs = s["duration_us"] / 1e6
    socket_errors = s["err_connect"] + s["err_read"] + s["err_write"] + s["err_timeout"]
    return {
        "requests": s["requests"],
        "rps": s["requests"] / secs if secs > 0 else 0.0,
        "p50_ms": s["p50_us"] / 1000.0,
        "p90_ms": s["p90_us"] / 1000.0,
        "p99_ms": s["p99_us"] / 1000.0,
        "p999_ms": s["p999_us"] / 1000.0,
        "max_ms": s["max_us"] / 1000.0,
        "non_2xx": s["err_status"],
        "socket_errors": socket_errors,
        "errors": s["err_status"] + socket_errors,
        "error_detail": {k: s[k] for k in s if k.startswith("err_")},
    }


def percentile(sorted_vals, pct):
    if not sorted_vals:
        return 0.0
    idx = min(len(sorted_vals) - 1, max(0, int(round(pct / 100.0 * len(sorted_vals) + 0.5)) - 1))
    return sorted_vals[idx]


def parse_h2load(path, log_path):
    """Reads h2load's summary and its per-request log (tab-separated: start time in us since
    the epoch, status code, us until the end of the response) for the percentiles."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    m = re.search(r"finished in ([\d.]+)(\w+), ([\d.]+) req/s", text)
    r = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        text,
    )
    c = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if not (m and r and c):
        raise ValueError(f"could not parse the h2load summary in {path}")
    lat = []
    non_2xx = 0
    if log_path:
        try:
            with open(log_path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    parts = line.split("\t")
                    if len(parts) < 3:
                        continue
                    try:
                        status = int(parts[1])
                        lat.append(int(parts[2]))
                    except ValueError:
                        continue
                    if not 200 <= status < 300:
                        non_2xx += 1
        except OSError:
            pass
    lat.sort()
    failed, errored, timeout = int(r.group(5)), int(r.group(6)), int(r.group(7))
    status_non_2xx = int(c.group(2)) + int(c.group(3)) + int(c.group(4))
    return {
        "requests": int(r.group(4)),
        "rps": float(m.group(3)),
        "p50_ms": percentile(lat, 50) / 1000.0,
        "p90_ms": percentile(lat, 90) / 1000.0,
        "p99_ms": percentile(lat, 99) / 1000.0,
        "p999_ms": percentile(lat, 99.9) / 1000.0,
        "max_ms": (lat[-1] / 1000.0) if lat else 0.0,
        "non_2xx": max(status_non_2xx, non_2xx),
        "socket_errors": errored + timeout,
        "errors": failed + errored + timeout + status_non_2xx,
        "error_detail": {"failed": failed, "errored": errored, "timeout": timeout},
        "latency_samples": len(lat),
    }


def fmt_rss(proc_list, key):
    vals = [p.get(key) for p in proc_list if p.get(key) is not None]
    if not vals:
        return "-", ""
    total = sum(vals) / 1024.0
    if len(proc_list) == 1:
        return f"{total:.1f}", f"(1 process, {proc_list[0].get('threads', '?')} threads)"
    detail = " + ".join(f"{p['role']} {p.get(key, 0) / 1024.0:.1f}" for p in proc_list)
    return f"{total:.1f}", f"({detail})"


def sort_key(name):
    return (PROXY_ORDER.index(name) if name in PROXY_ORDER else len(PROXY_ORDER), name)


def main():
    if len(sys.argv) != 3:
        sys.stderr.write("usage: report.py RECORDS.jsonl OUT.json\n")
        return 2
    records_path, out_path = sys.argv[1], sys.argv[2]
    proxies, runs, skips, meta = {}, {}, [], {}
    with open(records_path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            kind = rec.get("type")
            if kind == "proxy":
                proxies[rec["proxy"]] = rec
            elif kind == "run":
                try:
                    if rec["tool"] == "wrk":
                        res = parse_wrk(rec["out"])
                    else:
                        res = parse_h2load(rec["out"], rec.get("log"))
                except (OSError, ValueError, KeyError) as e:
                    skips.append({"proxy": rec["proxy"], "mode": rec["mode"], "reason": str(e)})
                    continue
                runs.setdefault((rec["proxy"], rec["mode"]), []).append(res)
            elif kind == "skip":
                skips.append(rec)
            elif kind == "meta":
                meta.update({k: v for k, v in rec.items() if k != "type"})

    results = []
    for (proxy, mode), reps in runs.items():
        row = {
            "proxy": proxy,
            "mode": mode,
            "runs": len(reps),
            "rps": statistics.median(r["rps"] for r in reps),
            "p50_ms": statistics.median(r["p50_ms"] for r in reps),
            "p99_ms": statistics.median(r["p99_ms"] for r in reps),
            "errors": sum(r["errors"] for r in reps),
            "non_2xx": sum(r["non_2xx"] for r in reps),
            "socket_errors": sum(r["socket_errors"] for r in reps),
            "repeats": reps,
        }
        results.append(row)
    results.sort(key=lambda r: (MODES.index(r["mode"]) if r["mode"] in MODES else 9,
                                sort_key(r["proxy"])))

    hdr = f"{'proxy':<8} {'mode':<13} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}" \
          f" {'RSS idle MB':>11} {'RSS after MB':>12}  processes"
    print(hdr)
    print("-" * len(hdr))
    for row in results:
        procs = proxies.get(row["proxy"], {}).get("processes", [])
        idle, detail = fmt_rss(procs, "rss_kb_idle")
        after, _ = fmt_rss(procs, "rss_kb_after")
        print(f"{row['proxy']:<8} {row['mode']:<13} {row['rps']:>10.0f} {row['p50_ms']:>8.3f} "
              f"{row['p99_ms']:>8.3f} {row['errors']:>7} {idle:>11} {after:>12}  {detail}")
    for s in skips:
        print(f"{s['proxy']:<8} {s['mode']:<13} skipped: {s['reason']}")

    ratios = []
    by = {(r["proxy"], r["mode"]): r for r in results}
    for mode in MODES:
        base = by.get(("baton", mode))
        if not base:
            continue
        for (proxy, m), peer in sorted(by.items(), key=lambda kv: sort_key(kv[0][0])):
            if m != mode or proxy == "baton":
                continue
            ratios.append({
                "mode": mode,
                "peer": proxy,
                "rps_ratio": base["rps"] / peer["rps"] if peer["rps"] else None,
                "p99_ratio": base["p99_ms"] / peer["p99_ms"] if peer["p99_ms"] else None,
            })
    if ratios:
        print()
        print("Baton / peer   (req/s ratio > 1: Baton faster; p99 ratio < 1: Baton's tail lower)")
        for r in ratios:
            rps = f"{r['rps_ratio']:.2f}" if r["rps_ratio"] is not None else "-"
            p99 = f"{r['p99_ratio']:.2f}" if r["p99_ratio"] is not None else "-"
            print(f"  {r['mode']:<13} vs {r['peer']:<8} req/s x{rps:<6} p99 x{p99}")

    out = {"meta": meta, "proxies": proxies, "results": results, "ratios": ratios,
           "skipped": skips}
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    print()
    print(f"results JSON: {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
