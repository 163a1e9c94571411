"""A local Ray started as seqflow starts it (``init_ray`` with no cluster address) listens on
loopback only: every TCP listener of the driver and of every process Ray spawned (GCS, raylet,
agents, an actor's worker) is bound to 127.0.0.1, checked with psutil and with ``ss -ltnp``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from ipaddress import ip_address

SCRIPT = r"""
import json, re, shutil, subprocess
import psutil, ray
from omegaconf import OmegaConf
from seqflow.train.launcher import init_ray

cfg = OmegaConf.create({"ray": {"address": None, "num_cpus": 1, "num_workers": 1, "cpus_per_worker": 1,
                                "use_gpu": False}})
assert init_ray(cfg)

@ray.remote(num_cpus=0)
class Probe:
    def ip(self):
        return ray.util.get_node_ip_address()

probe = Probe.remote()
actor_ip = ray.get(probe.ip.remote())
me = psutil.Process()
pids = {me.pid} | {p.pid for p in me.children(recursive=True)}
names = {}
for pid in pids:
    try:
        names[pid] = psutil.Process(pid).name()
    except psutil.NoSuchProcess:
        pass
listeners = [[c.laddr.ip, c.laddr.port, names.get(c.pid, "?")] for c in psutil.net_connections("inet")
             if c.status == psutil.CONN_LISTEN and c.pid in pids]
ss = []
if shutil.which("ss"):
    for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines():
        found = [int(p) for p in re.findall(r"pid=(\d+)", line)]
        if any(p in pids for p in found):
            ss.append(line.split()[3])
print("RESULT " + json.dumps({"actor_ip": actor_ip, "gcs": ray.get_runtime_context().gcs_address,
                              "listeners": listeners, "ss": ss}))
ray.shutdown()
"""


def _is_loopback(host: str) -> bool:
    addr = ip_address(host.strip("[]").split("%")[0])
    mapped = getattr(addr, "ipv4_mapped", None)
    return (mapped or addr).is_loopback


def test_local_ray_listens_on_loopback_only(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    names = {name for _, _, name in result["listeners"]}
    assert {"gcs_server", "raylet"} <= names, result["listeners"]   # the servers really were seen
    exposed = [x for x in result["listeners"] if not _is_loopback(x[0])]
    assert not exposed, f"Ray listeners on non-loopback addresses: {exposed}"
    assert result["gcs"].startswith("127.0.0.1:") and result["actor_ip"] == "127.0.0.1", result
    # the same sockets as the ss tool reports them (host:port, IPv6 in brackets)
    assert all(_is_loopback(a.rpartition(":")[0]) for a in result["ss"]), result["ss"]
