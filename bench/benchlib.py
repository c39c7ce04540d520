#!/usr/bin/env python3
"""Helpers for bench/run.sh (stdlib only).

Subcommands:
  freeport                      print a free TCP port on 127.0.0.1
  wait-http URL SECONDS         poll URL until it answers 2xx (exit 1 on timeout)
  probe-check LABEL URL         fetch a /probe URL, require a line `probe_success 1`, record it
  wrk ...                       run wrk once, measure CPU of the processes involved, record it
  mem LABEL PID                 record VmHWM / VmRSS of PID
  gen-config ...                write the self-scheduled config (N HTTP probes)
  selfsched ...                 measure vigil in self-scheduled mode over a window
  report ...                    print the results table and write the markdown file

Results are appended as JSON lines to the file given with --results; `report` renders them.
CPU time comes from /proc/PID/stat (utime + stime, fields 14 and 15, in clock ticks).
"""

import argparse
import json
import os
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
OTHER_WARN = 0.15  # cores used outside the measured processes above which a run is flagged
DISTURBED = 3  # exit code of a measurement discarded because other processes used the CPU


# ----------------------------------------------------------------------------- /proc readers

def proc_cpu_ticks(pid):
    """utime + stime of one process (all its threads), in clock ticks; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = data[data.rindex(")") + 2:].split()
    # rest[0] is field 3 (state); field 14 (utime) is rest[11], field 15 (stime) is rest[12]
    return int(rest[11]) + int(rest[12])


def alive(pid):
    """True while pid exists and is not a zombie (a child of run.sh that exited is one until reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return data[data.rindex(")") + 2:].split()[0] != "Z"


def proc_ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(data[data.rindex(")") + 2:].split()[1])


def children_of(pid):
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and proc_ppid(int(entry)) == pid:
            kids.append(int(entry))
    return kids


def tree_cpu_ticks(pid):
    """CPU ticks of a process and its direct children (nginx master + workers), per pid."""
    out = {}
    for p in [pid] + children_of(pid):
        t = proc_cpu_ticks(p)
        if t is not None:
            out[p] = t
    return out


def tree_delta_seconds(before, after):
    # a pid present at both ends contributes its delta; a new pid contributes all it used
    total = 0
    for p, t in after.items():
        total += t - before.get(p, 0)
    return total / CLK_TCK


def system_busy_ticks():
    """(busy, total) ticks over all CPUs from the first line of /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice; guest* are in user already,
    # steal (time the hypervisor gave to other guests) is not this machine's work
    fields = fields[:8]
    busy = fields[0] + fields[1] + fields[2] + fields[5] + fields[6]
    return busy, sum(fields)


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS", "Threads"):
                out[k] = int(v.split()[0])
    return out


# ----------------------------------------------------------------------------- small helpers

def append(results, rec):
    with open(results, "a") as f:
        f.write(json.dumps(rec) + "\n")


def load(results):
    recs = []
    if os.path.exists(results):
        with open(results) as f:
            for line in f:
                line = line.strip()
                if line:
                    recs.append(json.loads(line))
    return recs


def http_get(url, timeout=10):
    req = urllib.request.Request(url, headers={"User-Agent": "vigil-bench"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read()


# ----------------------------------------------------------------------------- subcommands

def cmd_freeport(_a):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])
    s.close()


def cmd_wait_http(a):
    deadline = time.monotonic() + a.seconds
    last = ""
    while time.monotonic() < deadline:
        if a.pid and not alive(a.pid):
            print(f"process {a.pid} exited before {a.url} answered", file=sys.stderr)
            return 1
        try:
            status, _ = http_get(a.url, timeout=2)
            if 200 <= status < 300:
                return 0
            last = f"HTTP {status}"
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last = str(e)
        time.sleep(0.2)
    print(f"timed out after {a.seconds}s waiting for {a.url}: {last}", file=sys.stderr)
    return 1


def cmd_probe_check(a):
    try:
        status, body = http_get(a.url, timeout=15)
        text = body.decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode("utf-8", "replace")
    except Exception as e:  # noqa: BLE001
        status, text = 0, f"request failed: {e}"
    ok = bool(re.search(r"^probe_success(\{\})? 1(\.0)?$", text, re.M))
    line = next((l for l in text.splitlines() if l.startswith("probe_success")), "(no probe_success line)")
    append(a.results, {"type": "check", "label": a.label, "when": a.when, "ok": ok, "http_status": status,
                       "line": line})
    print(f"  {a.label} /probe check ({a.when}): HTTP {status}, {line} -> {'OK' if ok else 'FAILED'}")
    if not ok:
        print("  --- response ---\n" + "\n".join(text.splitlines()[:40]), file=sys.stderr)
    return 0 if ok else 1


def cmd_wrk(a):
    wrk_args = a.wrk_args
    if wrk_args and wrk_args[0] == "--":
        wrk_args = wrk_args[1:]
    exp_before = proc_cpu_ticks(a.exporter_pid) if a.exporter_pid else None
    ngx_before = tree_cpu_ticks(a.nginx_pid)
    sys_before = system_busy_ticks()
    t0 = time.monotonic()
    with open(a.log, "w") as log:
        p = subprocess.Popen(wrk_args, stdout=subprocess.PIPE, stderr=log, text=True)

        def stop(signum, _frame):  # run.sh's cleanup TERMs us: take wrk down too
            p.kill()
            p.wait()
            sys.exit(128 + signum)
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        out = p.stdout.read()
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        log.write(out)
    wall = time.monotonic() - t0
    sys_after = system_busy_ticks()
    ngx_after = tree_cpu_ticks(a.nginx_pid)
    exp_after = proc_cpu_ticks(a.exporter_pid) if a.exporter_pid else None
    if p.returncode != 0:
        print(f"wrk failed (exit {p.returncode}); see {a.log}", file=sys.stderr)
        return 1
    m = re.search(r"^BENCH_JSON (\{.*\})$", out, re.M)
    if not m:
        print(f"wrk printed no BENCH_JSON line; see {a.log}", file=sys.stderr)
        return 1
    w = json.loads(m.group(1))
    reqs = w["requests"]
    dur = w["duration_us"] / 1e6
    errors = w["err_connect"] + w["err_read"] + w["err_write"] + w["err_status"] + w["err_timeout"]
    rec = {
        "type": "wrk", "label": a.label, "role": a.role, "conns": a.conns, "threads": a.threads,
        "requests": reqs, "duration_s": round(dur, 3), "wall_s": round(wall, 3),
        "req_per_s": reqs / dur if dur else 0.0,
        "errors": errors,
        "err_detail": {k[4:]: w[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout")},
        "lat_p50_ms": w["lat_p50_us"] / 1000, "lat_p99_ms": w["lat_p99_us"] / 1000,
        "lat_max_ms": w["lat_max_us"] / 1000,
        "nginx_cpu_s": tree_delta_seconds(ngx_before, ngx_after),
        "wrk_cpu_s": ru.ru_utime + ru.ru_stime,
        "system_busy_s": (sys_after[0] - sys_before[0]) / CLK_TCK,
        "cmd": shlex.join(wrk_args),
    }
    if a.exporter_pid:
        if exp_before is None or exp_after is None:
            print(f"exporter pid {a.exporter_pid} vanished during the run", file=sys.stderr)
            return 1
        rec["exporter_cpu_s"] = (exp_after - exp_before) / CLK_TCK
        rec["cpu_us_per_probe"] = rec["exporter_cpu_s"] * 1e6 / reqs if reqs else None
    # whatever the machine did besides the processes measured (softirq, other programs)
    rec["other_cpu_s"] = rec["system_busy_s"] - rec.get("exporter_cpu_s", 0) - rec["nginx_cpu_s"] - rec["wrk_cpu_s"]
    disturbed = rec["other_cpu_s"] / wall > OTHER_WARN
    if not (disturbed and a.discard_if_disturbed):
        append(a.results, rec)
    cores = lambda s: s / wall  # noqa: E731
    line = (f"  {a.label:<9} c={a.conns:<4} {rec['req_per_s']:>9,.0f} req/s  errors={errors:<5} "
            f"p50={rec['lat_p50_ms']:.2f}ms p99={rec['lat_p99_ms']:.2f}ms")
    if a.exporter_pid:
        line += f"  exporter {rec['cpu_us_per_probe']:.0f} us/probe ({cores(rec['exporter_cpu_s']):.2f} cores)"
    line += (f"  nginx {cores(rec['nginx_cpu_s']):.2f}  wrk {cores(rec['wrk_cpu_s']):.2f}"
             f"  other {cores(rec['other_cpu_s']):.2f}  system {cores(rec['system_busy_s']):.2f} cores")
    print(line)
    if errors:
        print(f"  WARNING: {errors} errors: {rec['err_detail']}")
    if disturbed:
        print(f"  WARNING: {cores(rec['other_cpu_s']):.2f} cores used by other processes during this run: "
              "figures are disturbed (is something compiling?)"
              + ("; discarded, the run will be repeated" if a.discard_if_disturbed else ""))
        if a.discard_if_disturbed:
            return DISTURBED
    return 0


def other_busy_cores(seconds, exclude):
    """Cores the machine spent over `seconds` outside the process trees in `exclude`."""
    t0 = {p: tree_cpu_ticks(p) for p in exclude}
    b0 = system_busy_ticks()
    time.sleep(seconds)
    b1 = system_busy_ticks()
    mine = sum(tree_delta_seconds(t0[p], tree_cpu_ticks(p)) for p in exclude)
    return ((b1[0] - b0[0]) / CLK_TCK - mine) / seconds


def cmd_idle_check(a):
    """Report whether the machine is idle (apart from the bench's own processes); with --wait,
    wait up to that many seconds for it to become idle."""
    deadline = time.monotonic() + a.wait
    busy = other_busy_cores(a.seconds, a.exclude)
    waited = False
    while busy > OTHER_WARN and time.monotonic() < deadline:
        if not waited:
            print(f"bench: machine busy ({busy:.2f} cores outside the bench); waiting up to {a.wait:.0f} s "
                  "for it to become idle", flush=True)
            waited = True
        busy = other_busy_cores(a.seconds, a.exclude)
    if busy > OTHER_WARN:
        top = subprocess.run(["ps", "-eo", "pid,pcpu,comm", "--sort=-pcpu"], capture_output=True, text=True).stdout
        print(f"bench: WARNING: the machine is busy ({busy:.2f} cores outside the bench over "
              f"{a.seconds:.0f} s); figures will be disturbed. Busiest processes:\n"
              + "\n".join("  " + l for l in top.splitlines()[:6]))
    elif not a.quiet or waited:
        print(f"bench: machine idle ({busy:.2f} cores busy outside the bench)")


def cmd_mem(a):
    st = proc_status(a.pid)
    append(a.results, {"type": "mem", "label": a.label, "hwm_kib": st["VmHWM"], "rss_kib": st["VmRSS"],
                       "threads": st.get("Threads")})
    print(f"  {a.label} memory: VmHWM {st['VmHWM'] / 1024:.1f} MiB, VmRSS {st['VmRSS'] / 1024:.1f} MiB")


def cmd_gen_config(a):
    with open(a.out, "w") as f:
        f.write("# generated by bench/benchlib.py gen-config\n")
        f.write(f"defaults: {{interval: {a.interval}, timeout: {a.timeout}}}\n")
        f.write("probes:\n")
        for i in range(1, a.n + 1):
            f.write(f'  - {{name: t{i:05d}, kind: http, url: "http://127.0.0.1:{a.port}/?t={i}"}}\n')


def parse_duration_s(s):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", s.strip())
    if not m:
        raise SystemExit(f"bad duration {s!r}")
    v = float(m.group(1))
    return v * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[m.group(2)]


RUNS_RE = re.compile(r"^vigil_probe_runs_total\{[^}]*\} (\S+)$", re.M)
UP_RE = re.compile(r'^vigil_probe_status\{[^}]*status="up"[^}]*\} 1(\.0)?$', re.M)
DOWN_RE = re.compile(r'^vigil_probe_status\{[^}]*status="down"[^}]*\} 1(\.0)?$', re.M)
DEGR_RE = re.compile(r'^vigil_probe_status\{[^}]*status="degraded"[^}]*\} 1(\.0)?$', re.M)
SUCC_RE = re.compile(r"^vigil_probe_success\{[^}]*\} 1(\.0)?$", re.M)


# What Prometheus 2.x sends when it scrapes.
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                     "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


def scrape(url):
    _, body = http_get(url, timeout=30)
    return body.decode("utf-8", "replace")


def runs_sum(text):
    vals = RUNS_RE.findall(text)
    return (sum(float(v) for v in vals), len(vals))


def cmd_selfsched(a):
    interval_s = parse_duration_s(a.interval)
    t_start = scrape(a.metrics_url)
    runs0, nseries = runs_sum(t_start)
    exp0, ngx0, sys0, w0 = proc_cpu_ticks(a.pid), tree_cpu_ticks(a.nginx_pid), system_busy_ticks(), time.monotonic()
    time.sleep(a.window)
    exp1, ngx1, sys1, w1 = proc_cpu_ticks(a.pid), tree_cpu_ticks(a.nginx_pid), system_busy_ticks(), time.monotonic()
    t_end = scrape(a.metrics_url)
    runs1, _ = runs_sum(t_end)
    wall = w1 - w0
    cpu_s = (exp1 - exp0) / CLK_TCK
    runs = runs1 - runs0
    runs_source = f"delta of vigil_probe_runs_total summed over {nseries} series"
    if nseries == 0 or runs <= 0:
        why = "no vigil_probe_runs_total series" if nseries == 0 else "vigil_probe_runs_total did not move"
        runs = a.n * wall / interval_s
        runs_source = f"ESTIMATED as N*window/{a.interval}: {why}"
    # scrape timings with curl, as Prometheus would see them (one connection per scrape, and
    # Prometheus' own Accept header, which asks for OpenMetrics; BENCH_SCRAPE_ACCEPT overrides it,
    # e.g. BENCH_SCRAPE_ACCEPT=text/plain for the classic format)
    accept = os.environ.get("BENCH_SCRAPE_ACCEPT", PROMETHEUS_ACCEPT)
    times, sizes = [], []
    for _ in range(a.scrapes):
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-H", f"Accept: {accept}",
                              "-w", "%{http_code} %{time_total} %{size_download}",
                              a.metrics_url], capture_output=True, text=True, check=True).stdout.split()
        if out[0] != "200":
            print(f"/metrics answered HTTP {out[0]}", file=sys.stderr)
            return 1
        times.append(float(out[1]))
        sizes.append(int(out[2]))
        time.sleep(0.2)
    text = scrape(a.metrics_url)
    st = proc_status(a.pid)
    rec = {
        "type": "selfsched", "label": "vigil", "n": a.n, "interval": a.interval, "window_s": round(wall, 2),
        "cpu_s": cpu_s, "cores": cpu_s / wall, "runs": runs, "runs_source": runs_source,
        "runs_per_s": runs / wall, "cpu_us_per_run": cpu_s * 1e6 / runs if runs else None,
        "expected_runs_per_s": a.n / interval_s,
        "nginx_cores": tree_delta_seconds(ngx0, ngx1) / wall,
        "system_cores": (sys1[0] - sys0[0]) / CLK_TCK / wall,
        "other_cores": ((sys1[0] - sys0[0]) / CLK_TCK - cpu_s - tree_delta_seconds(ngx0, ngx1)) / wall,
        "rss_kib": st["VmRSS"], "hwm_kib": st["VmHWM"], "threads": st.get("Threads"),
        "scrape_median_ms": statistics.median(times) * 1000, "scrape_max_ms": max(times) * 1000,
        "scrape_times_ms": [round(t * 1000, 2) for t in times],
        "scrape_bytes": sizes[-1], "metrics_lines": text.count("\n"),
        "up": len(UP_RE.findall(text)), "degraded": len(DEGR_RE.findall(text)),
        "down": len(DOWN_RE.findall(text)), "success_1": len(SUCC_RE.findall(text)),
        "runs_series": nseries,
    }
    disturbed = rec["other_cores"] > OTHER_WARN
    if not (disturbed and a.discard_if_disturbed):
        append(a.results, rec)
    print(f"  window {wall:.1f}s: {cpu_s:.2f} CPU s = {rec['cores']:.3f} cores; {runs:,.0f} runs "
          f"({rec['runs_per_s']:.0f}/s, expected {rec['expected_runs_per_s']:.0f}/s; {runs_source}) -> "
          f"{rec['cpu_us_per_run'] or 0:.0f} us/run")
    print(f"  RSS {st['VmRSS'] / 1024:.1f} MiB, HWM {st['VmHWM'] / 1024:.1f} MiB, threads {st.get('Threads')}")
    print(f"  /metrics: {sizes[-1]:,} bytes, scrape median {rec['scrape_median_ms']:.1f} ms, max "
          f"{rec['scrape_max_ms']:.1f} ms ({rec['scrape_times_ms']})")
    print(f"  status: up={rec['up']} degraded={rec['degraded']} down={rec['down']} (of {a.n}); "
          f"vigil_probe_success 1: {rec['success_1']}")
    if disturbed:
        print(f"  WARNING: {rec['other_cores']:.2f} cores used by other processes during the window"
              + ("; discarded, the window will be repeated" if a.discard_if_disturbed else ""))
        if a.discard_if_disturbed:
            return DISTURBED
    return 0


# ----------------------------------------------------------------------------- report

def fmt(v, spec, none="-"):
    return none if v is None else format(v, spec)


def mib(kib):
    return None if kib is None else kib / 1024


def verdict(ok):
    return "PASS" if ok else "FAIL"


def build_report(recs, meta):
    """Return (plain text, markdown)."""
    wrks = [r for r in recs if r["type"] == "wrk"]
    mems = {r["label"]: r for r in recs if r["type"] == "mem"}
    checks = [r for r in recs if r["type"] == "check"]
    ss = next((r for r in recs if r["type"] == "selfsched"), None)
    pre = mems.get("vigil-selfsched-before-scrape")  # after the warm-up, before any /metrics scrape
    if ss:
        ss = dict(ss, rss_before_scrape_kib=pre and pre["rss_kib"], hwm_before_scrape_kib=pre and pre["hwm_kib"])
    txt, md = [], []

    md.append("# vigil benchmark results\n")
    md.append(f"- date: {meta['date']}")
    md.append(f"- machine: {meta['nproc']} CPUs ({meta['cpu_model']}), kernel {meta['kernel']}, "
              f"{meta['mem_total']}")
    md.append(f"- nginx: {meta['nginx_version']}; blackbox_exporter: {meta['blackbox_version']}; "
              f"vigil: {meta['vigil_version']} ({meta['vigil_commit']}); wrk: {meta['wrk_version']}")
    md.append(f"- sections run: {meta['sections']}; wrk -t{meta['threads']} against the exporters, "
              f"-t{meta['nginx_threads']} against nginx alone; {meta['duration']} s per run, "
              f"connections {meta['conns']}, {meta['warmup']} s unmeasured warm-up per exporter")
    md.append("- every request to `/probe` makes the exporter open a fresh TCP connection to nginx; "
              "CPU is utime+stime from /proc/PID/stat over the wrk run; \"cores\" = CPU seconds / wall seconds "
              f"(the machine has {meta['nproc']}; \"system cores\" is the whole machine from /proc/stat)")
    md.append("")
    txt.append(f"vigil bench  {meta['date']}  nproc={meta['nproc']}  nginx {meta['nginx_version']}  "
               f"blackbox {meta['blackbox_version']}  vigil {meta['vigil_version']} ({meta['vigil_commit']})")

    if wrks:
        hdr = ["target", "wrk", "req/s", "errors", "p50 ms", "p99 ms", "exporter us/probe",
               "exporter cores", "nginx cores", "wrk cores", "other cores", "system cores"]
        rows = []
        for r in wrks:
            w = r["wall_s"]
            rows.append([
                r["label"], f"-t{r['threads']} -c{r['conns']}", f"{r['req_per_s']:,.0f}", str(r["errors"]),
                f"{r['lat_p50_ms']:.2f}", f"{r['lat_p99_ms']:.2f}",
                fmt(r.get("cpu_us_per_probe"), ".0f"),
                fmt(r["exporter_cpu_s"] / w if "exporter_cpu_s" in r else None, ".2f"),
                f"{r['nginx_cpu_s'] / w:.2f}", f"{r['wrk_cpu_s'] / w:.2f}", f"{r['other_cpu_s'] / w:.2f}",
                f"{r['system_busy_s'] / w:.2f}",
            ])
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(hdr)]
        txt.append("")
        txt.append(f"== /probe mode ({meta['duration']} s per wrk run; "
                   "nginx rows = nginx alone, Connection: close) ==")
        txt.append("  ".join(h.rjust(widths[i]) if i else h.ljust(widths[i]) for i, h in enumerate(hdr)))
        for row in rows:
            txt.append("  ".join(c.rjust(widths[i]) if i else c.ljust(widths[i]) for i, c in enumerate(row)))
        md.append("## /probe mode\n")
        md.append("`nginx` rows: wrk straight at nginx with `Connection: close` (one fresh connection per "
                  "request, the ceiling for any prober here). Other rows: wrk at the exporter's "
                  "`/probe?module=http_2xx&target=http://127.0.0.1:NGINX/`.\n")
        md.append("| " + " | ".join(hdr) + " |")
        md.append("|" + "|".join(["---"] + ["---:"] * (len(hdr) - 1)) + "|")
        for row in rows:
            md.append("| " + " | ".join(row) + " |")
        md.append("")

        # memory and checks
        mem_lines = []
        for label in ("blackbox", "vigil"):
            if label in mems:
                m = mems[label]
                mem_lines.append(f"{label}: peak RSS (VmHWM) {mib(m['hwm_kib']):.1f} MiB, "
                                 f"RSS at end {mib(m['rss_kib']):.1f} MiB, threads {m.get('threads')}")
        for c in checks:
            mem_lines.append(f"{c['label']} /probe check {c['when']}: `{c['line']}` -> "
                             f"{'OK' if c['ok'] else 'FAILED'}")
        if mem_lines:
            txt.append("")
            txt.extend("  " + l.replace("`", "") for l in mem_lines)
            md.extend("- " + l for l in mem_lines)
            md.append("")

        # ratios vigil / blackbox
        by = {}
        for r in wrks:
            by.setdefault(r["label"], {})[r["conns"]] = r
        if "vigil" in by and "blackbox" in by:
            rl = []
            for c in sorted(set(by["vigil"]) & set(by["blackbox"])):
                v, b = by["vigil"][c], by["blackbox"][c]
                rl.append((f"c={c}", v["req_per_s"] / b["req_per_s"],
                           v["cpu_us_per_probe"] / b["cpu_us_per_probe"]))
            vp = max(by["vigil"].values(), key=lambda r: r["req_per_s"])
            bp = max(by["blackbox"].values(), key=lambda r: r["req_per_s"])
            rl.append((f"peak (vigil c={vp['conns']}, blackbox c={bp['conns']})",
                       vp["req_per_s"] / bp["req_per_s"], vp["cpu_us_per_probe"] / bp["cpu_us_per_probe"]))
            txt.append("")
            txt.append("  ratios vigil/blackbox:")
            md.append("### vigil / blackbox\n")
            md.append("| at | probes/s ratio | CPU per probe ratio |")
            md.append("|---|---:|---:|")
            for at, pr, cr in rl:
                txt.append(f"    {at:<40} probes/s x{pr:.2f}   CPU/probe x{cr:.3f} (blackbox uses {1 / cr:.1f}x vigil's CPU)")
                md.append(f"| {at} | {pr:.2f} | {cr:.3f} (blackbox uses {1 / cr:.1f}x vigil's CPU) |")
            md.append("")
        if "vigil" in by:
            best_cpu = min(r["cpu_us_per_probe"] for r in by["vigil"].values())
            peak = max(r["req_per_s"] for r in by["vigil"].values())
            errs = sum(r["errors"] for r in by["vigil"].values())
            t = [f"vigil CPU per probe (best run) {best_cpu:.0f} us <= 100 us: {verdict(best_cpu <= 100)}",
                 f"vigil peak {peak:,.0f} probes/s >= 10,000: {verdict(peak >= 10000)}",
                 f"vigil errors across runs: {errs}"]
            txt.append("")
            txt.extend("  target: " + l for l in t)
            md.append("### targets (/probe)\n")
            md.extend("- " + l for l in t)
            md.append("")

    if ss:
        t = [
            ("probes", f"{ss['n']:,} HTTP probes, interval {ss['interval']}"),
            ("window", f"{ss['window_s']:.1f} s after {meta['ss_warmup']} s warm-up"),
            ("CPU", f"{ss['cpu_s']:.2f} s = {ss['cores']:.3f} cores"),
            ("probe runs", f"{ss['runs']:,.0f} ({ss['runs_per_s']:.0f}/s; expected {ss['expected_runs_per_s']:.0f}/s;"
                           f" from {ss['runs_source']})"),
            ("CPU per probe run", f"{fmt(ss['cpu_us_per_run'], '.0f')} us"),
            ("RSS / peak RSS, before any /metrics scrape",
             f"{fmt(mib(ss['rss_before_scrape_kib']), '.1f')} MiB / {fmt(mib(ss['hwm_before_scrape_kib']), '.1f')} MiB"),
            ("RSS / peak RSS, at the end", f"{mib(ss['rss_kib']):.1f} MiB / {mib(ss['hwm_kib']):.1f} MiB "
                                           f"(threads {ss['threads']})"),
            ("/metrics scrape", f"median {ss['scrape_median_ms']:.1f} ms, max {ss['scrape_max_ms']:.1f} ms "
                                f"({len(ss['scrape_times_ms'])} scrapes), {ss['scrape_bytes']:,} bytes, "
                                f"{ss['metrics_lines']:,} lines"),
            ("probe status", f"up {ss['up']:,}, degraded {ss['degraded']:,}, down {ss['down']:,} of {ss['n']:,}"),
            ("nginx / other / system", f"nginx {ss['nginx_cores']:.3f} cores, other {ss['other_cores']:.3f} cores, "
                                       f"whole machine {ss['system_cores']:.3f} cores"),
        ]
        targets = [
            f"one core or less: {ss['cores']:.3f} cores: {verdict(ss['cores'] <= 1.0)}",
            f"< 100 MiB RSS: peak {mib(ss['hwm_kib']):.1f} MiB ({fmt(mib(ss['hwm_before_scrape_kib']), '.1f')} MiB "
            f"before any /metrics scrape): {verdict(mib(ss['hwm_kib']) < 100)}",
            f"scrape < 100 ms: max {ss['scrape_max_ms']:.1f} ms: {verdict(ss['scrape_max_ms'] < 100)}",
            f"most probes UP: {ss['up']:,}/{ss['n']:,}: {verdict(ss['up'] >= 0.95 * ss['n'])}",
        ]
        txt.append("")
        txt.append(f"== self-scheduled mode (vigil, {ss['n']:,} probes) ==")
        kw = max(len(k) for k, _ in t)
        for k, v in t:
            txt.append(f"  {k:<{kw}}  {v}")
        txt.extend("  target: " + l for l in targets)
        md.append("## self-scheduled mode (vigil only)\n")
        md.append("| measure | value |")
        md.append("|---|---|")
        for k, v in t:
            md.append(f"| {k} | {v} |")
        md.append("")
        md.append("### targets (self-scheduled)\n")
        md.extend("- " + l for l in targets)
        md.append("")

    noisy = [f"{r['label']} -t{r['threads']} -c{r['conns']}: {r['other_cpu_s'] / r['wall_s']:.2f} cores"
             for r in wrks if r["other_cpu_s"] / r["wall_s"] > OTHER_WARN]
    if ss and ss["other_cores"] > OTHER_WARN:
        noisy.append(f"self-scheduled window: {ss['other_cores']:.2f} cores")
    if noisy:
        w = ("WARNING: other processes used CPU during these runs (\"other cores\"), so their figures are "
             "disturbed; re-run on an idle machine: " + "; ".join(noisy))
        txt.append("")
        txt.append(w)
        md.append(f"**{w}**\n")

    md.append("## commands\n")
    md.append("```")
    md.extend(meta.get("commands", []))
    for r in wrks:
        md.append(r["cmd"])
    md.append("```")
    return "\n".join(txt) + "\n", "\n".join(md) + "\n"


def cmd_report(a):
    with open(a.meta) as f:
        meta = json.load(f)
    text, md = build_report(load(a.results), meta)
    print(text)
    if a.md:
        os.makedirs(os.path.dirname(os.path.abspath(a.md)), exist_ok=True)
        with open(a.md, "w") as f:
            f.write(md)
        print(f"results written to {a.md}")


def main():
    ap = argparse.ArgumentParser()
    sp = ap.add_subparsers(dest="cmd", required=True)
    sp.add_parser("freeport").set_defaults(fn=cmd_freeport)

    p = sp.add_parser("wait-http")
    p.add_argument("url")
    p.add_argument("seconds", type=float)
    p.add_argument("--pid", type=int, help="fail at once if this process exits")
    p.set_defaults(fn=cmd_wait_http)

    p = sp.add_parser("probe-check")
    p.add_argument("--results", required=True)
    p.add_argument("--when", default="after")
    p.add_argument("label")
    p.add_argument("url")
    p.set_defaults(fn=cmd_probe_check)

    p = sp.add_parser("wrk")
    p.add_argument("--results", required=True)
    p.add_argument("--discard-if-disturbed", action="store_true",
                   help=f"record nothing and exit {DISTURBED} if other processes used the CPU")
    p.add_argument("--label", required=True)
    p.add_argument("--role", default="probe")
    p.add_argument("--conns", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--exporter-pid", type=int)
    p.add_argument("--nginx-pid", type=int, required=True)
    p.add_argument("--log", required=True)
    p.add_argument("wrk_args", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_wrk)

    p = sp.add_parser("idle-check")
    p.add_argument("seconds", type=float, nargs="?", default=2.0)
    p.add_argument("--wait", type=float, default=0.0)
    p.add_argument("--quiet", action="store_true", help="say nothing when idle at once")
    p.add_argument("--exclude", type=int, nargs="*", default=[], help="pids (with children) not counted")
    p.set_defaults(fn=cmd_idle_check)

    p = sp.add_parser("mem")
    p.add_argument("--results", required=True)
    p.add_argument("label")
    p.add_argument("pid", type=int)
    p.set_defaults(fn=cmd_mem)

    p = sp.add_parser("gen-config")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--interval", default="15s")
    p.add_argument("--timeout", default="5s")
    p.add_argument("--out", required=True)
    p.set_defaults(fn=cmd_gen_config)

    p = sp.add_parser("selfsched")
    p.add_argument("--results", required=True)
    p.add_argument("--discard-if-disturbed", action="store_true",
                   help=f"record nothing and exit {DISTURBED} if other processes used the CPU")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--nginx-pid", type=int, required=True)
    p.add_argument("--metrics-url", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--interval", default="15s")
    p.add_argument("--window", type=float, required=True)
    p.add_argument("--scrapes", type=int, default=5)
    p.set_defaults(fn=cmd_selfsched)

    p = sp.add_parser("report")
    p.add_argument("--results", required=True)
    p.add_argument("--meta", required=True)
    p.add_argument("--md")
    p.set_defaults(fn=cmd_report)

    a = ap.parse_args()
    sys.exit(a.fn(a) or 0)


if __name__ == "__main__":
    main()
