"""Inside a VM whose kernel has DAMON vaddr (boot.sh): samples/farmem_hotread under --access faults,
then --access damon; how much of the hot (read-only) set stays resident while the cold stream
faults; then the damon pager SIGKILLed and the next start (attach) seen stopping its context.
Reads the pager's state files, not the CLI (a Python start under TCG takes ~50 s)."""
import json, os, re, signal, subprocess, sys, time
import numpy as np
MT = "/work/main/.venv/bin/mappedtrace"
EXE = "/tmp/hotread"
subprocess.run(["cc", "-O2", "-o", EXE, "/work/wt/damon/samples/farmem_hotread.c"], check=True)
KD = "/sys/kernel/mm/damon/admin/kdamonds"
SD = "/run/mappedtrace/farmem"
BUDGET = 12 << 20

def rd(p):
    try:
        return open(p).read().strip()
    except OSError as e:
        return f"({e.strerror})"

def present(pid, lo, hi):
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek(lo // 4096 * 8)
        pm = np.frombuffer(f.read((hi - lo) // 4096 * 8), dtype=np.uint64)
    return int(((pm >> np.uint64(63)) & np.uint64(1)).sum())

def state(pid):
    try:
        return json.load(open(f"{SD}/{pid}.json"))
    except (OSError, ValueError):
        return {}

def run(access, settle=20.0, kill_pager=False):
    t0 = time.monotonic()
    p = subprocess.Popen([MT, "farmem", "run", "--local", str(BUDGET), "--store", f"file:/tmp/store-{access}",
                          "--access", access, "--", EXE, "4", "28", "900", "1"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    m = re.search(r"pid=(\d+) hot=(0x[0-9a-f]+)-(0x[0-9a-f]+) cold=(0x[0-9a-f]+)-(0x[0-9a-f]+)", line)
    assert m, (line, p.stderr.read())
    pid = int(m.group(1)); hot = (int(m.group(2), 16), int(m.group(3), 16)); cold = (int(m.group(4), 16), int(m.group(5), 16))
    print(f"[{access}] ready after {time.monotonic() - t0:.1f} s pid={pid}", flush=True)
    deadline = time.monotonic() + 300
    while True:
        st = state(pid)
        if st.get("pages_evicted", 0) > 0 and st.get("access", {}).get("source") in ("damon", "faults"):
            break
        assert time.monotonic() < deadline, st
        time.sleep(0.5)
    print(f"[{access}] paging after {time.monotonic() - t0:.1f} s; access={st['access']}", flush=True)
    samples = []
    f0 = st["faults"]
    t1 = time.monotonic()
    while time.monotonic() - t1 < settle:
        time.sleep(0.25)
        samples.append((present(pid, *hot), present(pid, *cold)))
    st = state(pid)
    hp, cp = (hot[1] - hot[0]) // 4096, (cold[1] - cold[0]) // 4096
    print(f"[{access}] after {settle:.0f} s more: hot resident {samples[-1][0]}/{hp}, cold resident {samples[-1][1]}/{cp}; "
          f"hot resident over {len(samples)} samples: mean {np.mean([s[0] for s in samples]):.0f}, "
          f"min {min(s[0] for s in samples)}; faults in the window {st['faults'] - f0}; "
          f"evicted {st['pages_evicted']}; access={st['access']}", flush=True)
    out = {"access": access, "hot_pages": hp, "cold_pages": cp, "samples": samples,
           "faults_window": st["faults"] - f0, "settle_s": settle, "status_access": st["access"]}
    if kill_pager:
        rec = rd(f"{SD}/damon.json")
        print(f"[{access}] record: {rec}; nr_kdamonds={rd(KD + '/nr_kdamonds')} state={rd(KD + '/0/state')} "
              f"ops={rd(KD + '/0/contexts/0/operations')} regions={rd(KD + '/0/contexts/0/targets/0/regions/nr_regions')}", flush=True)
        os.kill(p.pid, signal.SIGKILL); p.wait()
        time.sleep(1)
        print(f"[{access}] pager killed: nr_kdamonds={rd(KD + '/nr_kdamonds')} state={rd(KD + '/0/state')}", flush=True)
        out["after_kill"] = {"nr": rd(KD + "/nr_kdamonds"), "state": rd(KD + "/0/state")}
        a = subprocess.Popen([MT, "farmem", "attach", str(pid), "--local", str(BUDGET), "--access", "faults"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 300
        while state(pid).get("pager_pid") != a.pid or state(pid).get("state") != "running":
            assert time.monotonic() < deadline and a.poll() is None, (state(pid), a.poll())
            time.sleep(0.5)
        print(f"[{access}] next start (attach --access faults): nr_kdamonds={rd(KD + '/nr_kdamonds')} "
              f"record={rd(SD + '/damon.json')} access={state(pid).get('access')}", flush=True)
        out["after_next_start"] = {"nr": rd(KD + "/nr_kdamonds"), "record": rd(SD + "/damon.json")}
        os.kill(a.pid, signal.SIGTERM)      # detach: every page home
        time.sleep(3)
        os.kill(pid, signal.SIGUSR1)
        a.wait(timeout=120)
    else:
        os.kill(pid, signal.SIGUSR1)
        o, e = p.communicate(timeout=120)
        print(f"[{access}] program: {o.strip()} rc={p.returncode}; nr_kdamonds after exit={rd(KD + '/nr_kdamonds')}", flush=True)
        out["program"] = o.strip()
        out["nr_after_exit"] = rd(KD + "/nr_kdamonds")
    for q in (pid,):
        try:
            os.kill(q, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return out

res = [run("faults"), run("damon", kill_pager=True)]
json.dump(res, open("/tmp/vmwork/check.json", "w"), indent=1)
