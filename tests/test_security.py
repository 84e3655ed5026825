"""The embedded Ray runtime opens ports on the loopback interface only."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

LISTEN = "0A"
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


def listening_sockets() -> set[tuple[str, str]]:
    """(address hex, port hex) of every listening TCP socket, IPv4 and IPv6, from /proc."""
    sockets = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == LISTEN:
                address, port = fields[1].split(":")
                sockets.add((address, port))
    return sockets


def test_embedded_runtime_listens_on_loopback_only(tmp_path):
    before = listening_sockets()
    script = textwrap.dedent("""
        import sys, ray
        sys.path.insert(0, "tests")
        from test_security import listening_sockets
        from pipeline.batch.runtime import start_ray, stop_ray
        started = start_ray(num_cpus=1)
        ray.get(ray.remote(lambda: 1).remote())  # a worker process opens its own port too
        print(sorted(listening_sockets()))
        stop_ray(started)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240,
                         cwd=Path(__file__).resolve().parents[1], check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    during = eval(out.stdout.strip().splitlines()[-1])
    opened = {tuple(s) for s in during} - before
    assert len(opened) >= 3, opened  # GCS, raylet, worker at least: the check saw Ray's ports
    exposed = [s for s in opened if s[0] not in LOOPBACK]
    assert not exposed, f"ports open beyond loopback: {exposed}"
