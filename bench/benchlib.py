#!/usr/bin/env python3
"""Helpers for bench/run.sh (stdlib only).

Subcommands:
  freeport [--udp]              print a free TCP (with --udp: TCP and UDP) port on 127.0.0.1
  wait-http URL SECONDS         poll URL until it answers 2xx (exit 1 on timeout)
  wait-dns PORT NAME SECONDS    query NAME (type A) on 127.0.0.1:PORT over UDP until it is answered
  probe-check LABEL URL         fetch a /probe URL, require a line `probe_success 1`, record it
  wrk ...                       run wrk once, measure CPU of the processes involved, record it
  mem LABEL PID                 record VmHWM / VmRSS of PID
  gen-config ...                write the self-scheduled config (N HTTP or ICMP probes)
  selfsched ...                 measure vigil in self-scheduled mode over a window
  slow-target ...               an HTTP server that answers each request exactly --delay-ms after reading it
  fid-sample ...                /probe the slow target at a steady rate; record the reported durations
  fid-runs ...                  record the latencies of self-scheduled runs from vigil's /api/v1/probes
  fid-load ...                  record the rate a background wrk load reached
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

def cmd_freeport(a):
    for _ in range(100):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        if not a.udp:
            s.close()
            print(port)
            return 0
        # a DNS server listens on both: the UDP port must be free as well
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            u.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            u.close()
            s.close()
        print(port)
        return 0
    print("no port free for both TCP and UDP after 100 tries", file=sys.stderr)
    return 1


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


def dns_query_a(name, qid):
    """A DNS query packet: one question, type A, class IN, recursion desired."""
    q = b"".join(bytes([len(l)]) + l.encode("ascii") for l in name.rstrip(".").split(".")) + b"\0"
    return qid.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + q + b"\x00\x01\x00\x01"


def cmd_wait_dns(a):
    """Poll a DNS server on 127.0.0.1:PORT until it answers NAME with rcode 0 and an answer record."""
    deadline = time.monotonic() + a.seconds
    last = "no answer"
    qid = os.getpid() & 0xFFFF
    while time.monotonic() < deadline:
        if a.pid and not alive(a.pid):
            print(f"process {a.pid} exited before it answered DNS on 127.0.0.1:{a.port}", file=sys.stderr)
            return 1
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            try:
                s.sendto(dns_query_a(a.name, qid), ("127.0.0.1", a.port))
                data, _ = s.recvfrom(4096)
                rcode, ancount = data[3] & 0x0F, int.from_bytes(data[6:8], "big")
                if data[:2] == qid.to_bytes(2, "big") and rcode == 0 and ancount > 0:
                    return 0
                last = f"rcode {rcode}, {ancount} answers"
            except OSError as e:  # refused (not listening yet) or timed out
                last = str(e)
        time.sleep(0.2)
    print(f"timed out after {a.seconds}s waiting for an answer to {a.name} A on 127.0.0.1:{a.port}: {last}",
          file=sys.stderr)
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
    append(a.results, {"type": "check", "label": a.label, "kind": a.kind, "when": a.when, "ok": ok,
                       "http_status": status, "line": line})
    print(f"  {a.label} /probe check ({a.when}): HTTP {status}, {line} -> {'OK' if ok else 'FAILED'}")
    if not ok:
        print("  --- response ---\n" + "\n".join(text.splitlines()[:40]), file=sys.stderr)
    return 0 if ok else 1


def cmd_wrk(a):
    wrk_args = a.wrk_args
    if wrk_args and wrk_args[0] == "--":
        wrk_args = wrk_args[1:]
    exp_before = proc_cpu_ticks(a.exporter_pid) if a.exporter_pid else None
    # the probes' target: nginx (http), dnsmasq (dns); none for icmp, which the kernel answers
    ngx_before = tree_cpu_ticks(a.target_pid) if a.target_pid else {}
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
    ngx_after = tree_cpu_ticks(a.target_pid) if a.target_pid else {}
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
        "type": "wrk", "label": a.label, "role": a.role, "kind": a.kind, "conns": a.conns, "threads": a.threads,
        "requests": reqs, "duration_s": round(dur, 3), "wall_s": round(wall, 3),
        "req_per_s": reqs / dur if dur else 0.0,
        "errors": errors,
        "err_detail": {k[4:]: w[k] for k in ("err_connect", "err_read", "err_write", "err_status", "err_timeout")},
        "lat_p50_ms": w["lat_p50_us"] / 1000, "lat_p99_ms": w["lat_p99_us"] / 1000,
        "lat_max_ms": w["lat_max_us"] / 1000,
        "target": a.target_name if a.target_pid else None,
        "target_cpu_s": tree_delta_seconds(ngx_before, ngx_after),
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
    rec["other_cpu_s"] = rec["system_busy_s"] - rec.get("exporter_cpu_s", 0) - rec["target_cpu_s"] - rec["wrk_cpu_s"]
    disturbed = rec["other_cpu_s"] / wall > OTHER_WARN
    if not (disturbed and a.discard_if_disturbed):
        append(a.results, rec)
    cores = lambda s: s / wall  # noqa: E731
    line = (f"  {a.label:<9} c={a.conns:<4} {rec['req_per_s']:>9,.0f} req/s  errors={errors:<5} "
            f"p50={rec['lat_p50_ms']:.2f}ms p99={rec['lat_p99_ms']:.2f}ms")
    if a.exporter_pid:
        line += f"  exporter {rec['cpu_us_per_probe']:.0f} us/probe ({cores(rec['exporter_cpu_s']):.2f} cores)"
    if a.target_pid:
        line += f"  {a.target_name} {cores(rec['target_cpu_s']):.2f}"
    line += (f"  wrk {cores(rec['wrk_cpu_s']):.2f}"
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


def cmd_scale_reload(a):
    """Changes the first probe's URL in the config, reloads, and records how long it took."""
    with open(a.config) as f:
        text = f.read()
    changed = text.replace("/?t=1\"", "/?t=1&reloaded=1\"", 1)
    if changed == text:
        raise SystemExit("scale-reload: the config has no probe t00001 to change")
    with open(a.config, "w") as f:
        f.write(changed)
    req = urllib.request.Request(a.reload_url, method="POST", headers={"User-Agent": "vigil-bench"})
    t0 = time.monotonic()
    with urllib.request.urlopen(req, timeout=60) as r:
        answer = r.read().decode("utf-8", "replace").strip()
    took = time.monotonic() - t0
    ok = "1 restarted" in answer and "0 started" in answer and "0 stopped" in answer
    append(a.results, {"type": "scale", "n": a.n, "startup_s": a.startup_s, "reload_ms": took * 1000,
                       "reload_answer": answer, "reload_ok": ok})
    print(f"  start-up {a.startup_s:.2f} s; reload of one probe {took * 1000:.0f} ms: {answer}")
    return 0 if ok else 1


# ----------------------------------------------------------------------------- fidelity (F)

SLOW_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"


def cmd_slow_target(a):
    """An HTTP server on 127.0.0.1:PORT that answers every request exactly DELAY after it accepted
    the connection (once the request's headers are read), on a thread per connection, and
    appends each hold (accept to answer written, seconds) to --log: the truth a probe's reported
    latency is compared with. Run it under `chrt -f` so that a saturated machine delays it less
    than the exporters it measures."""
    import threading
    delay = a.delay_ms / 1000
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", a.port))
    srv.listen(1024)
    log = open(a.log, "a", buffering=1)
    lock = threading.Lock()

    def serve(conn, accepted):
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(10)
            buf = b""
            try:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    buf += chunk
                # From the accept: the thread's start and the read count as the target's time.
                t0 = accepted
                # A sleep, not a spin: a spinning thread would hold the GIL from the others.
                # Under SCHED_FIFO the kernel wakes it with no timer slack.
                time.sleep(max(0.0, t0 + delay - time.monotonic()))
                conn.sendall(SLOW_ANSWER)
                held = time.monotonic() - t0
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                return
        with lock:
            log.write(f"{held:.6f}\n")

    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn, time.monotonic()), daemon=True).start()


DURATION_RE = re.compile(r"^probe_duration_seconds(?:\{\})? (\S+)$", re.M)
SUCCESS_RE = re.compile(r"^probe_success(?:\{\})? (\S+)$", re.M)


def cmd_fid_sample(a):
    """CLIENTS threads, each fetching URL (a /probe of the slow target) once every EVERY seconds,
    staggered, for SECONDS; records every reported probe_duration_seconds, and the machine's busy
    cores over the window."""
    import threading
    durations, failed, errors = [], [0], [0]
    lock = threading.Lock()
    start = time.monotonic()
    stop_at = start + a.seconds

    def client(k):
        nxt = start + k * a.every / a.clients
        while True:
            now = time.monotonic()
            if nxt > now:
                time.sleep(nxt - now)
            if time.monotonic() >= stop_at:
                return
            nxt += a.every
            try:
                _, body = http_get(a.url, timeout=30)
                text = body.decode("utf-8", "replace")
                d, ok = DURATION_RE.search(text), SUCCESS_RE.search(text)
                with lock:
                    if d is None or ok is None:
                        errors[0] += 1
                    elif float(ok.group(1)) != 1:
                        failed[0] += 1
                    else:
                        durations.append(float(d.group(1)))
            except Exception:  # noqa: BLE001
                with lock:
                    errors[0] += 1

    b0 = system_busy_ticks()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    b1 = system_busy_ticks()
    wall = time.monotonic() - start
    rec = {"type": "fidelity", "exporter": a.exporter, "scenario": a.scenario, "how": "/probe",
           "samples": durations, "failed": failed[0], "errors": errors[0],
           "machine_cores": (b1[0] - b0[0]) / CLK_TCK / wall}
    append(a.results, rec)
    print(f"  {a.exporter} {a.scenario}: {fid_summary(rec)}")
    return 0 if durations else 1


def parse_rfc3339(s):
    import datetime
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


def cmd_fid_runs(a):
    """The latencies of the runs of probes PREFIX01..PREFIXNN (from /api/v1/probes/NAME, which
    reads the history store) that ended between --since and --until (Unix seconds)."""
    durations, failed = [], 0
    for k in range(1, a.n + 1):
        _, body = http_get(f"{a.api}/{a.prefix}{k:02d}", timeout=30)
        for run in json.loads(body)["runs"]:
            if not a.since <= parse_rfc3339(run["at"]) <= a.until:
                continue
            if run["level"] == "down":
                failed += 1
            else:
                durations.append(run["latency_seconds"])
    rec = {"type": "fidelity", "exporter": a.exporter, "scenario": a.scenario, "how": "self-scheduled",
           "samples": durations, "failed": failed, "errors": 0, "machine_cores": a.machine_cores}
    append(a.results, rec)
    print(f"  {a.exporter} {a.scenario}: {fid_summary(rec)}")
    return 0 if durations else 1


def cmd_busy(a):
    """Sleeps SECONDS and prints the machine's busy cores over them."""
    b0 = system_busy_ticks()
    t0 = time.monotonic()
    time.sleep(a.seconds)
    b1 = system_busy_ticks()
    print(f"{(b1[0] - b0[0]) / CLK_TCK / (time.monotonic() - t0):.3f}")


def cmd_fid_holds(a):
    """Records how long the slow target held its answers (the truth the probes are compared with)."""
    with open(a.log) as f:
        holds = [float(l) for l in f if l.strip()]
    rec = {"type": "fidelity-holds", "n": len(holds), "rt": a.rt,
           "p50": percentile(holds, 50), "p99": percentile(holds, 99), "max": max(holds, default=None)}
    append(a.results, rec)
    if holds:
        print(f"  slow target: {len(holds)} answers held p50 {rec['p50'] * 1000:.2f} ms, "
              f"p99 {rec['p99'] * 1000:.2f} ms, max {rec['max'] * 1000:.2f} ms (scheduling: {a.rt})")


def cmd_fid_load(a):
    """Records the requests/s of a background wrk run (its stdout in LOG)."""
    with open(a.log) as f:
        text = f.read()
    m = re.search(r"^Requests/sec:\s+(\S+)", text, re.M)
    append(a.results, {"type": "fidelity-load", "exporter": a.exporter, "scenario": a.scenario,
                       "rate": float(m.group(1)) if m else None})


def percentile(values, q):
    """The q-th percentile (0-100) by the nearest rank."""
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, max(0, int(-(-q * len(v) // 100)) - 1))]


def fid_summary(rec, delay=0.1):
    s = rec["samples"]
    if not s:
        return f"no samples ({rec['failed']} failed, {rec['errors']} errors)"
    p50, p99 = percentile(s, 50), percentile(s, 99)
    return (f"{len(s)} runs, reported latency p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, "
            f"max {max(s) * 1000:.2f} ms (p99 - {delay * 1000:.0f} ms = {(p99 - delay) * 1000:+.2f} ms); "
            f"{rec['failed']} failed, {rec['errors']} errors; machine {rec['machine_cores']:.2f} cores busy")


# loopback addresses the icmp probes are spread over: 127.0.0.1-127.0.255.254 (the kernel answers
# every 127/8 address on lo), skipping the .0 and .255 of each /24
ICMP_HOSTS = 256 * 254


def icmp_host(k):
    return f"127.0.{k // 254}.{k % 254 + 1}"


def cmd_gen_config(a):
    if a.kind == "http" and a.port is None:
        raise SystemExit("gen-config --kind http needs --port")
    if a.kind == "icmp" and a.n > ICMP_HOSTS:
        raise SystemExit(f"gen-config --kind icmp: at most {ICMP_HOSTS} probes (one loopback address each)")
    with open(a.out, "w") as f:
        f.write("# generated by bench/benchlib.py gen-config\n")
        f.write(f"defaults: {{interval: {a.interval}, timeout: {a.timeout}}}\n")
        f.write("probes:\n")
        for i in range(1, a.n + 1):
            if a.kind == "http":
                f.write(f'  - {{name: t{i:05d}, kind: http, url: "http://127.0.0.1:{a.port}/?t={i}"}}\n')
            else:
                # evenly over the whole range, one address per probe
                f.write(f"  - {{name: i{i:05d}, kind: icmp, host: {icmp_host((i - 1) * ICMP_HOSTS // a.n)}}}\n")
        # the fidelity section's probes of its slow target, read back from /api/v1/probes/fNN
        for k in range(1, a.slow_n + 1):
            f.write(f'  - {{name: f{k:02d}, kind: http, url: "http://127.0.0.1:{a.slow_port}/?f={k}", '
                    f'interval: {a.slow_interval}, timeout: 900ms}}\n')


def parse_duration_s(s):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", s.strip())
    if not m:
        raise SystemExit(f"bad duration {s!r}")
    v = float(m.group(1))
    return v * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[m.group(2)]


# Runs: the latency histogram's count (one observation per run; vigil_probe_runs_total is only
# published with metrics.detail).
RUNS_RE = re.compile(r"^vigil_probe_duration_seconds_count\{[^}]*\} (\S+)$", re.M)
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
    target = (lambda: tree_cpu_ticks(a.target_pid)) if a.target_pid else dict
    exp0, ngx0, sys0, w0 = proc_cpu_ticks(a.pid), target(), system_busy_ticks(), time.monotonic()
    time.sleep(a.window)
    exp1, ngx1, sys1, w1 = proc_cpu_ticks(a.pid), target(), system_busy_ticks(), time.monotonic()
    t_end = scrape(a.metrics_url)
    runs1, _ = runs_sum(t_end)
    wall = w1 - w0
    cpu_s = (exp1 - exp0) / CLK_TCK
    runs = runs1 - runs0
    runs_source = f"delta of vigil_probe_duration_seconds_count summed over {nseries} series"
    if nseries == 0 or runs <= 0:
        why = "no vigil_probe_duration_seconds_count series" if nseries == 0 else "vigil_probe_duration_seconds_count did not move"
        runs = a.n * wall / interval_s
        runs_source = f"ESTIMATED as N*window/{a.interval}: {why}"
    # scrape timings with curl, as Prometheus would see them (one connection per scrape, and
    # Prometheus' own Accept header, which asks for OpenMetrics; BENCH_SCRAPE_ACCEPT overrides it,
    # e.g. BENCH_SCRAPE_ACCEPT=text/plain for the classic format)
    accept = os.environ.get("BENCH_SCRAPE_ACCEPT", PROMETHEUS_ACCEPT)
    times, sizes = [], []
    # The exporter's CPU over the scrapes, less what its probes take meanwhile (the window's
    # rate): the CPU one scrape costs.
    scrape_cpu0, scrape_w0 = proc_cpu_ticks(a.pid), time.monotonic()
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
    scrape_cpu_s = (proc_cpu_ticks(a.pid) - scrape_cpu0) / CLK_TCK - cpu_s / wall * (time.monotonic() - scrape_w0)
    text = scrape(a.metrics_url)
    st = proc_status(a.pid)
    rec = {
        "type": "selfsched", "label": "vigil", "kind": a.kind, "n": a.n, "interval": a.interval, "window_s": round(wall, 2),
        "cpu_s": cpu_s, "cores": cpu_s / wall, "runs": runs, "runs_source": runs_source,
        "runs_per_s": runs / wall, "cpu_us_per_run": cpu_s * 1e6 / runs if runs else None,
        "expected_runs_per_s": a.n / interval_s,
        "target": a.target_name if a.target_pid else None,
        "target_cores": tree_delta_seconds(ngx0, ngx1) / wall,
        "system_cores": (sys1[0] - sys0[0]) / CLK_TCK / wall,
        "other_cores": ((sys1[0] - sys0[0]) / CLK_TCK - cpu_s - tree_delta_seconds(ngx0, ngx1)) / wall,
        "rss_kib": st["VmRSS"], "hwm_kib": st["VmHWM"], "threads": st.get("Threads"),
        "scrape_median_ms": statistics.median(times) * 1000, "scrape_max_ms": max(times) * 1000,
        "scrape_times_ms": [round(t * 1000, 2) for t in times],
        "scrape_bytes": sizes[-1], "metrics_lines": text.count("\n"),
        "scrape_cpu_ms": max(scrape_cpu_s, 0.0) * 1000 / a.scrapes,
        "lines_per_probe": text.count("\n") / a.n if a.n else None,
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

RATIO_BAR = 0.2       # dns, icmp: vigil's CPU per /probe at most this share of blackbox's, in the same run
ICMP_SS_N = 10000     # icmp self-scheduled goal: this many targets...
ICMP_SS_INTERVAL = 15  # ...every this many seconds...
ICMP_SS_CORES = 0.05  # ...under this many cores

# the /probe sections of the other kinds: (title, what wrk asks for)
KIND_SECTIONS = {
    "dns": ("dns", "`/probe?module=dns_a&target=127.0.0.1:DNSMASQ`: one A query for `ok.vigil.test` over UDP "
                   "to the bench's dnsmasq (single-threaded, its CPU in the `dnsmasq cores` column) per request."),
    "icmp": ("icmp", "`/probe?module=icmp&target=127.0.0.1`: one echo request to 127.0.0.1 per request, "
                     "answered by the kernel (its work shows in the exporter's system time or in `other cores`)."),
}


def fmt(v, spec, none="-"):
    return none if v is None else format(v, spec)


def mib(kib):
    return None if kib is None else kib / 1024


def verdict(ok):
    return "PASS" if ok else "FAIL"


def kind_of(r):
    return r.get("kind", "http")  # records of the http sections have always been http


def wrk_table(wrks, target_col):
    """Header and rows of a wrk table; target_col names the column of the target process, or None."""
    hdr = ["target", "wrk", "req/s", "errors", "p50 ms", "p99 ms", "exporter us/probe", "exporter cores"]
    hdr += [target_col] if target_col else []
    hdr += ["wrk cores", "other cores", "system cores"]
    rows = []
    for r in wrks:
        w = r["wall_s"]
        row = [
            r["label"], f"-t{r['threads']} -c{r['conns']}", f"{r['req_per_s']:,.0f}", str(r["errors"]),
            f"{r['lat_p50_ms']:.2f}", f"{r['lat_p99_ms']:.2f}",
            fmt(r.get("cpu_us_per_probe"), ".0f"),
            fmt(r["exporter_cpu_s"] / w if "exporter_cpu_s" in r else None, ".2f"),
        ]
        if target_col:
            row.append(f"{r['target_cpu_s'] / w:.2f}" if r.get("target") else "-")
        row += [f"{r['wrk_cpu_s'] / w:.2f}", f"{r['other_cpu_s'] / w:.2f}", f"{r['system_busy_s'] / w:.2f}"]
        rows.append(row)
    return hdr, rows


def emit_table(txt, md, title, hdr, rows):
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(hdr)]
    txt.append("")
    txt.append(title)
    txt.append("  ".join(h.rjust(widths[i]) if i else h.ljust(widths[i]) for i, h in enumerate(hdr)))
    for row in rows:
        txt.append("  ".join(c.rjust(widths[i]) if i else c.ljust(widths[i]) for i, c in enumerate(row)))
    md.append("| " + " | ".join(hdr) + " |")
    md.append("|" + "|".join(["---"] + ["---:"] * (len(hdr) - 1)) + "|")
    for row in rows:
        md.append("| " + " | ".join(row) + " |")
    md.append("")


def mem_check_lines(mems, checks, labels, kind):
    out = []
    for label in labels:
        if label in mems:
            m = mems[label]
            out.append(f"{label}: peak RSS (VmHWM) {mib(m['hwm_kib']):.1f} MiB, "
                       f"RSS at end {mib(m['rss_kib']):.1f} MiB, threads {m.get('threads')}")
    for c in checks:
        if kind_of(c) == kind:
            out.append(f"{c['label']} /probe check {c['when']}: `{c['line']}` -> {'OK' if c['ok'] else 'FAILED'}")
    return out


def ratio_rows(by, vlabel, blabel):
    """[(at, probes/s ratio, CPU per probe ratio)] at each connection count both ran, then at each one's peak."""
    if vlabel not in by or blabel not in by:
        return []
    ok = lambda r: r.get("cpu_us_per_probe") and r["req_per_s"]  # noqa: E731 - a run with no probe has no ratio
    rl = []
    for c in sorted(set(by[vlabel]) & set(by[blabel])):
        v, b = by[vlabel][c], by[blabel][c]
        if ok(v) and ok(b):
            rl.append((f"c={c}", v["req_per_s"] / b["req_per_s"], v["cpu_us_per_probe"] / b["cpu_us_per_probe"]))
    vs, bs = [r for r in by[vlabel].values() if ok(r)], [r for r in by[blabel].values() if ok(r)]
    if vs and bs:
        vp = max(vs, key=lambda r: r["req_per_s"])
        bp = max(bs, key=lambda r: r["req_per_s"])
        rl.append((f"peak (vigil c={vp['conns']}, blackbox c={bp['conns']})",
                   vp["req_per_s"] / bp["req_per_s"], vp["cpu_us_per_probe"] / bp["cpu_us_per_probe"]))
    return rl


def emit_ratios(txt, md, rl, heading):
    txt.append("")
    txt.append("  ratios vigil/blackbox:")
    md.append(f"### {heading}\n")
    md.append("| at | probes/s ratio | CPU per probe ratio |")
    md.append("|---|---:|---:|")
    for at, pr, cr in rl:
        txt.append(f"    {at:<40} probes/s x{pr:.2f}   CPU/probe x{cr:.3f} (blackbox uses {1 / cr:.1f}x vigil's CPU)")
        md.append(f"| {at} | {pr:.2f} | {cr:.3f} (blackbox uses {1 / cr:.1f}x vigil's CPU) |")
    md.append("")


def ratio_goal(rl):
    """(text, ok) for the bar on CPU per probe, judged on the worst ratio at equal connection counts."""
    same = [(at, cr) for at, _, cr in rl if at.startswith("c=")]
    if not same:
        return "no vigil and blackbox runs at the same connection count: not judged", None
    worst = max(same, key=lambda x: x[1])
    best = min(same, key=lambda x: x[1])
    ok = worst[1] <= RATIO_BAR
    span = f"x{best[1]:.3f}" if best is worst else f"x{best[1]:.3f}-x{worst[1]:.3f} (worst at {worst[0]})"
    return f"vigil CPU per probe / blackbox's {span} <= {RATIO_BAR}: {verdict(ok)}", ok


def selfsched_rows(ss, meta, what):
    return [
        ("probes", f"{ss['n']:,} {what}, interval {ss['interval']}"),
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
                            f"{ss['metrics_lines']:,} lines ({fmt(ss.get('lines_per_probe'), '.1f')} per probe); "
                            f"CPU per scrape {fmt(ss.get('scrape_cpu_ms'), '.0f')} ms"),
        ("probe status", f"up {ss['up']:,}, degraded {ss['degraded']:,}, down {ss['down']:,} of {ss['n']:,}"),
    ]


def emit_selfsched(txt, md, t, targets, title, heading, targets_heading):
    txt.append("")
    txt.append(title)
    kw = max(len(k) for k, _ in t)
    for k, v in t:
        txt.append(f"  {k:<{kw}}  {v}")
    txt.extend("  target: " + l for l in targets)
    md.append(f"## {heading}\n")
    md.append("| measure | value |")
    md.append("|---|---|")
    for k, v in t:
        md.append(f"| {k} | {v} |")
    md.append("")
    md.append(f"### {targets_heading}\n")
    md.extend("- " + l for l in targets)
    md.append("")


def icmp_ss_goal(ss):
    """(text, ok) for "10,000 ICMP targets at a 15 s interval under 0.05 of a core"; ok None when not judged."""
    goal = f"{ICMP_SS_N:,} ICMP targets at a {ICMP_SS_INTERVAL} s interval under {ICMP_SS_CORES} of a core"
    if ss["n"] < ICMP_SS_N or parse_duration_s(ss["interval"]) > ICMP_SS_INTERVAL:
        return (f"{goal}: not judged, this run had {ss['n']:,} targets at {ss['interval']} "
                f"({ss['cores']:.3f} cores)"), None
    ok = ss["cores"] < ICMP_SS_CORES and ss["up"] >= 0.95 * ss["n"]
    why = "" if ss["up"] >= 0.95 * ss["n"] else f" (but only {ss['up']:,} of {ss['n']:,} up)"
    return f"{goal}: {ss['cores']:.3f} cores with {ss['n']:,} at {ss['interval']}{why}: {verdict(ok)}", ok


def build_report(recs, meta):
    """Return (plain text, markdown)."""
    allwrks = [r for r in recs if r["type"] == "wrk"]
    wrks = [r for r in allwrks if kind_of(r) == "http"]
    mems = {r["label"]: r for r in recs if r["type"] == "mem"}
    checks = [r for r in recs if r["type"] == "check"]
    sss = {}
    for r in recs:
        if r["type"] == "selfsched":
            pre = mems.get("vigil-selfsched-before-scrape" if kind_of(r) == "http"
                           else f"vigil-selfsched-{kind_of(r)}-before-scrape")  # after the warm-up, before any /metrics scrape
            sss[kind_of(r)] = dict(r, rss_before_scrape_kib=pre and pre["rss_kib"],
                                   hwm_before_scrape_kib=pre and pre["hwm_kib"])
    ss = sss.get("http")
    txt, md = [], []
    goals = []  # (text, ok) of the dns and icmp goals, summed up at the end

    md.append("# vigil benchmark results\n")
    md.append(f"- date: {meta['date']}")
    md.append(f"- machine: {meta['nproc']} CPUs ({meta['cpu_model']}), kernel {meta['kernel']}, "
              f"{meta['mem_total']}")
    md.append(f"- nginx: {meta['nginx_version']}; blackbox_exporter: {meta['blackbox_version']}; "
              f"vigil: {meta['vigil_version']} ({meta['vigil_commit']}); wrk: {meta['wrk_version']}"
              + (f"; dnsmasq: {meta['dnsmasq_version']}" if meta.get("dnsmasq_version", "not run") != "not run" else ""))
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
        hdr, rows = wrk_table(wrks, "nginx cores")
        md.append("## /probe mode\n")
        md.append("`nginx` rows: wrk straight at nginx with `Connection: close` (one fresh connection per "
                  "request, the ceiling for any prober here). Other rows: wrk at the exporter's "
                  "`/probe?module=http_2xx&target=http://127.0.0.1:NGINX/`.\n")
        emit_table(txt, md, f"== /probe mode ({meta['duration']} s per wrk run; "
                            "nginx rows = nginx alone, Connection: close) ==", hdr, rows)

        # memory and checks
        mem_lines = mem_check_lines(mems, checks, ("blackbox", "vigil"), "http")
        if mem_lines:
            txt.append("")
            txt.extend("  " + l.replace("`", "") for l in mem_lines)
            md.extend("- " + l for l in mem_lines)
            md.append("")

        # ratios vigil / blackbox
        by = {}
        for r in wrks:
            by.setdefault(r["label"], {})[r["conns"]] = r
        rl = ratio_rows(by, "vigil", "blackbox")
        if rl:
            emit_ratios(txt, md, rl, "vigil / blackbox")
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
        t = selfsched_rows(ss, meta, "HTTP probes")
        t.append(("nginx / other / system", f"nginx {ss['target_cores']:.3f} cores, other {ss['other_cores']:.3f} cores, "
                                            f"whole machine {ss['system_cores']:.3f} cores"))
        targets = [
            f"one core or less: {ss['cores']:.3f} cores: {verdict(ss['cores'] <= 1.0)}",
            f"< 100 MiB RSS: peak {mib(ss['hwm_kib']):.1f} MiB ({fmt(mib(ss['hwm_before_scrape_kib']), '.1f')} MiB "
            f"before any /metrics scrape): {verdict(mib(ss['hwm_kib']) < 100)}",
            f"scrape < 100 ms: max {ss['scrape_max_ms']:.1f} ms: {verdict(ss['scrape_max_ms'] < 100)}",
            f"most probes UP: {ss['up']:,}/{ss['n']:,}: {verdict(ss['up'] >= 0.95 * ss['n'])}",
        ]
        emit_selfsched(txt, md, t, targets, f"== self-scheduled mode (vigil, {ss['n']:,} probes) ==",
                       "self-scheduled mode (vigil only)", "targets (self-scheduled)")

    # the other kinds' /probe sections: blackbox-KIND and vigil-KIND rows, each against its own target
    for kind, (title, what) in KIND_SECTIONS.items():
        kw = [r for r in allwrks if kind_of(r) == kind]
        if not kw:
            continue
        tname = next((r["target"] for r in kw if r.get("target")), None)
        hdr, rows = wrk_table(kw, f"{tname} cores" if tname else None)
        md.append(f"## /probe mode, {title}\n")
        md.append(f"wrk at each exporter's {what} Both exporters read the same blackbox_exporter config "
                  "(module in the commands below)."
                  + (f" `net.ipv4.ping_group_range` is `{' '.join(meta['ping_group_range'])}`: exporters whose "
                     "group is outside it use raw ICMP sockets." if kind == "icmp" and meta.get("ping_group_range")
                     else "") + "\n")
        emit_table(txt, md, f"== /probe mode, {title} ({meta['duration']} s per wrk run) ==", hdr, rows)
        labels = (f"blackbox-{kind}", f"vigil-{kind}")
        mem_lines = mem_check_lines(mems, checks, labels, kind)
        if mem_lines:
            txt.append("")
            txt.extend("  " + l.replace("`", "") for l in mem_lines)
            md.extend("- " + l for l in mem_lines)
            md.append("")
        by = {}
        for r in kw:
            by.setdefault(r["label"], {})[r["conns"]] = r
        rl = ratio_rows(by, labels[1], labels[0])
        if rl:
            emit_ratios(txt, md, rl, f"vigil / blackbox ({title})")
        t = []
        if rl:
            g = ratio_goal(rl)
            goals.append((f"{title} /probe: " + g[0], g[1]))
            t.append(g[0])
        for label in labels:
            if label in by:
                rs = by[label].values()
                lo, hi = (f(r["cpu_us_per_probe"] or 0 for r in rs) for f in (min, max))
                t.append(f"{label}: peak {max(r['req_per_s'] for r in rs):,.0f} probes/s, CPU per probe "
                         + (f"{lo:.0f} us" if round(lo) == round(hi) else f"{lo:.0f}-{hi:.0f} us")
                         + f", errors across runs: {sum(r['errors'] for r in rs)}")
        if tname:
            busiest = max(kw, key=lambda r: r["target_cpu_s"] / r["wall_s"])
            tc = busiest["target_cpu_s"] / busiest["wall_s"]
            line = f"{tname}: at most {tc:.2f} cores ({busiest['label']} -c{busiest['conns']})"
            if tc >= 0.9:
                line += (f"; WARNING: {tname} is single-threaded and was near a full core, so that run's "
                         "probes/s are bounded by it, not by the exporter (CPU per probe still holds)")
            t.append(line)
        if t:
            txt.append("")
            txt.extend("  target: " + l for l in t)
            md.append(f"### targets (/probe {title})\n")
            md.extend("- " + l for l in t)
            md.append("")

    icmp_ss = sss.get("icmp")
    if icmp_ss:
        t = selfsched_rows(icmp_ss, meta, "ICMP probes, one loopback address 127.0.X.Y each")
        t.append(("other / system", f"other {icmp_ss['other_cores']:.3f} cores (the kernel's echo replies, if not in "
                                    f"vigil's system time), whole machine {icmp_ss['system_cores']:.3f} cores"))
        g = icmp_ss_goal(icmp_ss)
        goals.append(("icmp self-scheduled: " + g[0], g[1]))
        targets = [g[0], f"most probes UP: {icmp_ss['up']:,}/{icmp_ss['n']:,}: "
                         f"{verdict(icmp_ss['up'] >= 0.95 * icmp_ss['n'])}"]
        emit_selfsched(txt, md, t, targets, f"== self-scheduled mode, icmp (vigil, {icmp_ss['n']:,} probes) ==",
                       "self-scheduled mode, icmp (vigil only)", "targets (self-scheduled icmp)")

    if goals:
        ok = [g for _, g in goals]
        overall = ("PASS" if all(ok) else "FAIL") if None not in ok else \
            ("FAIL" if False in ok else "INCOMPLETE (not every goal judged)")
        txt.append("")
        txt.append("== dns and icmp goals ==")
        txt.extend(f"  {l}" for l, _ in goals)
        txt.append(f"  verdict: {overall}")
        md.append("## dns and icmp goals\n")
        md.extend(f"- {l}" for l, _ in goals)
        md.append(f"\n**verdict: {overall}**\n")

    scale = sorted((r for r in recs if r["type"] == "scale"), key=lambda r: r["n"])
    if scale:
        hdr = ["probes", "interval", "cores", "CPU per run", "RSS before any scrape", "RSS / peak at the end",
               "/metrics bytes", "lines per probe", "scrape median", "CPU per scrape", "start-up", "reload of one probe"]
        rows = []
        for r in scale:
            ss_n = sss.get(f"scale-{r['n']}")
            pre = mems.get(f"vigil-scale-{r['n']}-before-scrape")
            if not ss_n:
                continue
            rows.append([f"{r['n']:,}", ss_n["interval"], f"{ss_n['cores']:.3f}", f"{fmt(ss_n['cpu_us_per_run'], '.0f')} us",
                         f"{fmt(mib(pre and pre['rss_kib']), '.1f')} MiB",
                         f"{mib(ss_n['rss_kib']):.1f} / {mib(ss_n['hwm_kib']):.1f} MiB",
                         f"{ss_n['scrape_bytes']:,}", fmt(ss_n.get("lines_per_probe"), ".1f"),
                         f"{ss_n['scrape_median_ms']:.0f} ms", f"{fmt(ss_n.get('scrape_cpu_ms'), '.0f')} ms",
                         f"{r['startup_s']:.2f} s", f"{r['reload_ms']:.0f} ms" + ("" if r["reload_ok"] else " (FAILED)")])
        txt.append("")
        txt.append("== growth (self-scheduled HTTP probes) ==")
        w = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(hdr)]
        txt.append("  " + "  ".join(h.rjust(w[i]) for i, h in enumerate(hdr)))
        txt.extend("  " + "  ".join(c.rjust(w[i]) for i, c in enumerate(row)) for row in rows)
        md.append("## growth (self-scheduled HTTP probes)\n")
        md.append("| " + " | ".join(hdr) + " |")
        md.append("|" + "---:|" * len(hdr))
        md.extend("| " + " | ".join(row) + " |" for row in rows)
        md.append("")

    fids = [r for r in recs if r["type"] == "fidelity"]
    if fids:
        loads = {(r["exporter"], r["scenario"]): r["rate"] for r in recs if r["type"] == "fidelity-load"}
        holds = next((r for r in recs if r["type"] == "fidelity-holds"), None)
        what = {"idle": "/probe, nothing else", "paced": "/probe, beside a paced /probe load of nginx",
                "saturated": "/probe, beside wrk -c256 at /probe of nginx",
                "selfsched-others": "self-scheduled, beside 10,000 self-scheduled probes of nginx",
                "selfsched-saturated": "self-scheduled, beside those and wrk -c256 at its /probe"}
        hdr = ["exporter", "how", "load (probes/s)", "machine cores", "runs", "p50", "p99", "max",
               "p99 - 100 ms", "failed / errors"]
        rows, goal_lines = [], []
        for r in fids:
            smp = r["samples"]
            p50, p99 = percentile(smp, 50), percentile(smp, 99)
            rate = loads.get((r["exporter"], r["scenario"]))
            ms = lambda v: "-" if v is None else f"{v * 1000:.2f} ms"  # noqa: E731
            rows.append([r["exporter"], what.get(r["scenario"], r["scenario"]), fmt(rate, ",.0f"),
                         f"{r['machine_cores']:.2f}", f"{len(smp):,}", ms(p50), ms(p99), ms(max(smp, default=None)),
                         "-" if p99 is None else f"{(p99 - 0.1) * 1000:+.2f} ms", f"{r['failed']} / {r['errors']}"])
            bar = {"selfsched-others": 0.002, "selfsched-saturated": 0.005, "saturated": 0.005}.get(r["scenario"])
            if r["exporter"] == "vigil" and bar is not None and p99 is not None:
                ok = p99 - 0.1 <= bar and r["failed"] == 0
                goal_lines.append((f"vigil {what[r['scenario']]}: p99 {p99 * 1000:.2f} ms, within "
                                   f"{bar * 1000:.0f} ms of 100 ms: {verdict(ok)}", ok))
        txt.append("")
        txt.append("== measurement fidelity: a target that answers after exactly 100 ms ==")
        w = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(hdr)]
        txt.append("  " + "  ".join(h.ljust(w[i]) if i < 2 else h.rjust(w[i]) for i, h in enumerate(hdr)))
        txt.extend("  " + "  ".join(c.ljust(w[i]) if i < 2 else c.rjust(w[i]) for i, c in enumerate(row))
                   for row in rows)
        md.append("## measurement fidelity: a target that answers after exactly 100 ms\n")
        if holds and holds["n"]:
            h = (f"The slow target ({holds['rt']} scheduling) held its {holds['n']:,} answers p50 "
                 f"{holds['p50'] * 1000:.2f} ms, p99 {holds['p99'] * 1000:.2f} ms, max {holds['max'] * 1000:.2f} ms "
                 "from reading the request to writing the answer; a probe adds its connect, request and read.")
            txt.append("  " + h)
            md.append(h + "\n")
        md.append("| " + " | ".join(hdr) + " |")
        md.append("|---|---|" + "---:|" * (len(hdr) - 2))
        md.extend("| " + " | ".join(row) + " |" for row in rows)
        md.append("")
        for line, ok in goal_lines:
            txt.append(f"  {line}")
            md.append(f"- {line}")
        md.append("")

    noisy = [f"{r['label']} -t{r['threads']} -c{r['conns']}: {r['other_cpu_s'] / r['wall_s']:.2f} cores"
             for r in allwrks if r["other_cpu_s"] / r["wall_s"] > OTHER_WARN]
    for kind, s in sss.items():
        if s["other_cores"] > OTHER_WARN:
            noisy.append(f"self-scheduled{'' if kind == 'http' else ' ' + kind} window: {s['other_cores']:.2f} cores")
    if noisy:
        w = ("WARNING: other processes used CPU during these runs (\"other cores\"), so their figures are "
             "disturbed; re-run on an idle machine: " + "; ".join(noisy))
        txt.append("")
        txt.append(w)
        md.append(f"**{w}**\n")

    md.append("## commands\n")
    md.append("```")
    md.extend(meta.get("commands", []))
    for r in allwrks:
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
    p = sp.add_parser("freeport")
    p.add_argument("--udp", action="store_true", help="the UDP port of the same number must be free too")
    p.set_defaults(fn=cmd_freeport)

    p = sp.add_parser("wait-http")
    p.add_argument("url")
    p.add_argument("seconds", type=float)
    p.add_argument("--pid", type=int, help="fail at once if this process exits")
    p.set_defaults(fn=cmd_wait_http)

    p = sp.add_parser("wait-dns")
    p.add_argument("port", type=int)
    p.add_argument("name")
    p.add_argument("seconds", type=float)
    p.add_argument("--pid", type=int, help="fail at once if this process exits")
    p.set_defaults(fn=cmd_wait_dns)

    p = sp.add_parser("probe-check")
    p.add_argument("--results", required=True)
    p.add_argument("--when", default="after")
    p.add_argument("--kind", default="http", help="the probe kind, for the report's sections")
    p.add_argument("label")
    p.add_argument("url")
    p.set_defaults(fn=cmd_probe_check)

    p = sp.add_parser("wrk")
    p.add_argument("--results", required=True)
    p.add_argument("--discard-if-disturbed", action="store_true",
                   help=f"record nothing and exit {DISTURBED} if other processes used the CPU")
    p.add_argument("--label", required=True)
    p.add_argument("--role", default="probe")
    p.add_argument("--kind", default="http", help="the probe kind, for the report's sections")
    p.add_argument("--conns", type=int, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--exporter-pid", type=int)
    p.add_argument("--target-pid", "--nginx-pid", dest="target_pid", type=int,
                   help="the probes' target process (with its children); none: the kernel answers")
    p.add_argument("--target-name", default="nginx")
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
    p.add_argument("--kind", choices=("http", "icmp"), default="http")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--port", type=int, help="nginx's port (http)")
    p.add_argument("--interval", default="15s")
    p.add_argument("--timeout", default="5s")
    p.add_argument("--out", required=True)
    p.add_argument("--slow-n", type=int, default=0, help="also this many probes f01... of the slow target")
    p.add_argument("--slow-port", type=int)
    p.add_argument("--slow-interval", default="1s")
    p.set_defaults(fn=cmd_gen_config)

    p = sp.add_parser("selfsched")
    p.add_argument("--results", required=True)
    p.add_argument("--discard-if-disturbed", action="store_true",
                   help=f"record nothing and exit {DISTURBED} if other processes used the CPU")
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--kind", default="http", help="the probe kind, for the report's sections")
    p.add_argument("--target-pid", "--nginx-pid", dest="target_pid", type=int,
                   help="the probes' target process (with its children); none: the kernel answers")
    p.add_argument("--target-name", default="nginx")
    p.add_argument("--metrics-url", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--interval", default="15s")
    p.add_argument("--window", type=float, required=True)
    p.add_argument("--scrapes", type=int, default=5)
    p.set_defaults(fn=cmd_selfsched)

    p = sp.add_parser("scale-reload")
    p.add_argument("--results", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--startup-s", type=float, required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--reload-url", required=True)
    p.set_defaults(fn=cmd_scale_reload)

    p = sp.add_parser("slow-target")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--delay-ms", type=float, default=100.0)
    p.add_argument("--log", required=True, help="each hold, in seconds, one per line")
    p.set_defaults(fn=cmd_slow_target)

    p = sp.add_parser("fid-sample")
    p.add_argument("--results", required=True)
    p.add_argument("--exporter", required=True)
    p.add_argument("--scenario", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--every", type=float, default=1.0)
    p.add_argument("--seconds", type=float, required=True)
    p.set_defaults(fn=cmd_fid_sample)

    p = sp.add_parser("fid-runs")
    p.add_argument("--results", required=True)
    p.add_argument("--exporter", required=True)
    p.add_argument("--scenario", required=True)
    p.add_argument("--api", required=True, help="http://HOST:PORT/api/v1/probes")
    p.add_argument("--prefix", default="f")
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--since", type=float, required=True)
    p.add_argument("--until", type=float, required=True)
    p.add_argument("--machine-cores", type=float, required=True)
    p.set_defaults(fn=cmd_fid_runs)

    p = sp.add_parser("fid-load")
    p.add_argument("--results", required=True)
    p.add_argument("--exporter", required=True)
    p.add_argument("--scenario", required=True)
    p.add_argument("--log", required=True)
    p.set_defaults(fn=cmd_fid_load)

    p = sp.add_parser("fid-holds")
    p.add_argument("--results", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--rt", default="none")
    p.set_defaults(fn=cmd_fid_holds)

    p = sp.add_parser("busy")
    p.add_argument("seconds", type=float)
    p.set_defaults(fn=cmd_busy)

    p = sp.add_parser("report")
    p.add_argument("--results", required=True)
    p.add_argument("--meta", required=True)
    p.add_argument("--md")
    p.set_defaults(fn=cmd_report)

    a = ap.parse_args()
    sys.exit(a.fn(a) or 0)


if __name__ == "__main__":
    main()
