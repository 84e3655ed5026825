"""Real Ray: two nodes on this machine (ray.cluster_utils), two declared GPUs, workers killed mid-task."""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import write_png

from pipeline import config as config_mod
from pipeline.batch.driver import RunOptions, run
from pipeline.batch.ledger import DONE, Ledger
from pipeline.media.frames import probe

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    """Head node: 2 CPUs, 2 (declared) GPUs, resource node_a; second node: 2 CPUs, resource node_b."""
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 2, "resources": {"node_a": 4},
                                                      "include_dashboard": False})
    c.add_node(num_cpus=2, resources={"node_b": 4})
    ray.init(address=c.address, log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


def tiny_config(**overrides: object):
    base = {"image.size": 48, "optim.iterations": 2, "image.scales": [1.0], "optim.coarse_iterations": 0}
    return config_mod.load(overrides={**base, **overrides})


@pytest.fixture(scope="module")
def batch(tmp_path_factory, photo, painting) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("batch")
    for i in range(4):  # four different photos (rolled copies), so nothing is de-duplicated
        write_png(root / "photos" / f"p{i}.png", np.roll(photo, 7 * i, axis=1))
    style = write_png(root / "style.png", painting)
    return root / "photos", style


def test_gpu_workers_see_their_own_device_and_share_the_work_and_a_corrupt_file_fails(cluster, batch, tmp_path):
    photos, style = batch
    good = (photos / "p0.png").read_bytes()
    bad_dir = tmp_path / "more"
    bad_dir.mkdir()
    (bad_dir / "broken.png").write_bytes(good[: len(good) // 2])  # valid header, truncated pixels
    out = tmp_path / "out"
    result = run(RunOptions([photos, bad_dir], [style], out, tiny_config(), gpus_per_worker=1.0, quiet=True))
    assert sorted(w["cuda_visible_devices"] for w in result.workers) == ["0", "1"]
    assert sorted(g for w in result.workers for g in w["gpu_ids"]) == ["0", "1"]
    by_state = {}
    for record in result.records:
        by_state.setdefault(record["state"], []).append(record)
    assert len(by_state["done"]) == 4
    assert {r["worker"] for r in by_state["done"]} == {"worker-0", "worker-1"}
    assert [r["id"] for r in by_state["failed"]] == ["more/broken.png"]
    assert "truncated" in by_state["failed"][0]["reason"]
    assert result.exit_code == 1
    for record in by_state["done"]:
        assert Path(record["output"]).is_file()
    with Ledger(out, readonly=True) as ledger:
        assert ledger.item("more/broken.png")["attempts"] == 1  # an input error is not retried


def test_two_nodes_both_receive_work(cluster, batch, tmp_path):
    photos, style = batch
    options = [{"resources": {"node_a": 1}}, {"resources": {"node_b": 1}}]
    result = run(RunOptions([photos], [style], tmp_path / "out", tiny_config(), workers=2, gpus_per_worker=0,
                            worker_options=options, quiet=True))
    assert result.exit_code == 0
    nodes = {r["node"] for r in result.records if r["state"] == "done"}
    assert len({w["node_id"] for w in result.workers}) == 2
    assert len(nodes) == 2


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """16 frames of a real photo panning sideways, encoded with ffmpeg (H.264)."""
    from fractions import Fraction

    import skimage.data

    from pipeline.core.arrays import resize
    from pipeline.media.frames import encode_video

    image = resize(skimage.data.astronaut().astype(np.float32), (64, 64))
    frames = [np.roll(image, 2 * t, axis=1)[8:56] for t in range(16)]
    return encode_video(frames, tmp_path_factory.mktemp("clip") / "pan.mp4", Fraction(24), None)


def ledger_specs(out: Path) -> list:
    with Ledger(out, readonly=True) as ledger:
        return ledger.segment_specs("pan.mp4")


def test_killed_worker_mid_segment_is_replaced_and_every_frame_lands_once(cluster, batch, clip, tmp_path):
    from pipeline.batch.segments import read_segment_frame, segment_dir
    from pipeline.media.frames import probe

    _, style = batch
    cfg = tiny_config(**{"image.size": 64, "video.first_frame_iterations": 8, "video.later_frame_iterations": 4,
                         "video.segment_frames": 8, "video.segment_overlap": 2, "video.save_frames": True,
                         "video.cut_threshold": 0.9})  # one shot: this test is about segments
    killed: list[dict] = []

    def on_event(kind: str, data: dict) -> None:
        # The first segment sent to worker-0: kill its process while it is working on it.
        if kind == "submit" and not killed and data["worker"] == "worker-0":
            killed.append(data)
            threading.Timer(1.5, os.kill, (data["pid"], signal.SIGKILL)).start()

    out = tmp_path / "out"
    result = run(RunOptions([clip], [style], out, cfg, workers=2, gpus_per_worker=0, quiet=True, on_event=on_event))
    assert killed
    assert result.exit_code == 0, result.records
    assert result.replaced_workers == 1
    with Ledger(out, readonly=True) as ledger:
        segments = ledger.segments("pan.mp4")
        assert ledger.item("pan.mp4")["state"] == DONE
    # backward over frames 8..0 and forward over 8..15: both chains start from key frame 8
    assert [(s["start"], s["stop"], s["reverse"]) for s in segments] == [(0, 9, 1), (8, 16, 0)]
    assert all(s["state"] == DONE for s in segments)
    killed_idx = killed[0]["key"][2]
    assert segments[killed_idx]["attempts"] == 2  # lost with the worker, redone once on its replacement
    assert segments[killed_idx]["worker"] != killed[0]["worker"]  # retried on another (or a new) worker
    for s in segments:  # each frame of each segment exactly once, nothing half-written
        files = sorted(p.name for p in segment_dir(out, "pan.mp4", s["idx"]).iterdir())
        assert files == [f"{i:06d}.png" for i in range(s["start"], s["stop"])]
    # The key frame is the same computation on both workers (one of them a replacement), so the two
    # chains meet without a seam; independent solutions differ by tens of grey levels.
    key = [read_segment_frame(out, "pan.mp4", spec, 8) for spec in ledger_specs(out)]
    assert float(np.abs(key[0] - key[1]).mean()) < 0.05
    source, stylized = probe(clip), probe(out / "pan.mp4")
    assert stylized.frame_count == source.frame_count == 16
    assert stylized.fps == source.fps
    assert not list(out.rglob("*.part*"))


def test_three_segments_share_key_frames_and_the_later_key_is_carried_from_the_first(cluster, batch, clip, tmp_path):
    from pipeline.batch.segments import read_segment_frame

    _, style = batch
    cfg = tiny_config(**{"image.size": 64, "video.first_frame_iterations": 8, "video.later_frame_iterations": 3,
                         "video.segment_frames": 5, "video.segment_overlap": 2, "video.save_frames": True,
                         "video.cut_threshold": 0.9})
    out = tmp_path / "out"
    result = run(RunOptions([clip], [style], out, cfg, workers=2, gpus_per_worker=0, quiet=True))
    assert result.exit_code == 0, result.records
    specs = ledger_specs(out)
    # forward from frame 0, then a pair around key frame 11, whose key is carried from frame 0's
    assert [(s.start, s.stop, s.reverse) for s in specs] == [(0, 7, False), (5, 12, True), (11, 16, False)]
    key = [read_segment_frame(out, "pan.mp4", spec, 11) for spec in specs[1:]]
    assert float(np.abs(key[0] - key[1]).mean()) < 0.05
    assert probe(out / "pan.mp4").frame_count == 16
    # what the driver sent for the later segments: key frame 0, then 11 with the flow from 0
    from pipeline.batch.discover import Item
    from pipeline.batch.driver import VideoState, key_steps

    state = VideoState(Item("pan.mp4", "video", clip, out / "pan.mp4"), specs, None, False)
    steps = key_steps(state, specs[2], cfg)
    assert len(steps) == 2 and steps[0].flow is None and steps[1].flow.shape == (48, 64, 2)
    assert 0.3 < float(steps[1].mask.mean()) < 1.0  # the pan brought in new pixels on one side
    assert [len(s.ahead) for s in steps] == [1, 1] and list(state.flows) == [(0, 11)]
    assert len(key_steps(state, specs[0], cfg)) == 1


def test_segments_go_in_chunks_that_continue_the_chain_and_an_interrupted_run_resumes_mid_segment(
        cluster, batch, clip, tmp_path):
    from pipeline.batch.segments import chunk_range, read_segment_frame, segment_dir

    _, style = batch
    base = {"image.size": 64, "video.first_frame_iterations": 6, "video.later_frame_iterations": 3,
            "video.segment_frames": 8, "video.save_frames": True, "video.cut_threshold": 0.9}
    whole = tmp_path / "whole"
    assert run(RunOptions([clip], [style], whole, tiny_config(**base), workers=2, gpus_per_worker=0,
                          quiet=True)).exit_code == 0

    cfg = tiny_config(**base, **{"video.chunk_frames": 3})
    out = tmp_path / "out"
    results: list[tuple] = []

    def interrupt_at_the_fifth_result(kind: str, data: dict) -> None:
        if kind == "result":
            results.append(data["key"])
            if len(results) == 5:
                raise KeyboardInterrupt  # like Ctrl-C: this chunk's frames are lost, earlier ones kept

    with pytest.raises(KeyboardInterrupt):
        run(RunOptions([clip], [style], out, cfg, workers=2, gpus_per_worker=0, quiet=True,
                       on_event=interrupt_at_the_fifth_result))
    with Ledger(out, readonly=True) as ledger:
        progress = {r["idx"]: r["done_frames"] for r in ledger.segments("pan.mp4")}
    specs = ledger_specs(out)
    chunks = {}  # (segment, first frame) -> frames, in each chain's order
    for spec in specs:
        done = 0
        while done < spec.stop - spec.start:
            lo, hi = chunk_range(spec, done, 3)
            chunks[spec.idx, lo] = hi - lo
            done += hi - lo
    # the four chunks that came back before the interruption are on disk, the fifth is lost
    finished = sum(chunks[key[2], key[3]] for key in results[:4])
    assert sum(progress.values()) == finished
    kept = {p: p.stat().st_mtime_ns for idx in progress for p in segment_dir(out, "pan.mp4", idx).iterdir()}
    assert len(kept) == finished

    submitted: list[tuple] = []
    result = run(RunOptions([clip], [style], out, cfg, workers=2, gpus_per_worker=0, quiet=True,
                            on_event=lambda kind, data: submitted.append(data["key"]) if kind == "submit" else None))
    assert result.exit_code == 0, result.records
    # each unfinished segment picked up at its first chunk not on disk (a backward chain counts from its end)
    for spec in specs:
        if progress[spec.idx] < spec.stop - spec.start:
            first = next(k for k in submitted if k[2] == spec.idx)[3]
            assert first == chunk_range(spec, progress[spec.idx], 3)[0]
            assert first == (spec.stop - progress[spec.idx] - 3 if spec.reverse else spec.start + progress[spec.idx])
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())  # finished chunks were not redone
    assert probe(out / "pan.mp4").frame_count == 16
    # the chain continued across chunks: the same frames as one call per segment, up to the rounding
    # of the frame each chunk continues from
    for spec in specs:
        for index in range(spec.start, spec.stop):
            a = read_segment_frame(out, "pan.mp4", spec, index)
            b = read_segment_frame(whole, "pan.mp4", spec, index)
            assert float(np.abs(a - b).mean()) < 2.0, (spec, index)


def test_cluster_launcher_config_has_the_launcher_schema_and_starts_ray_correctly():
    yaml = pytest.importorskip("yaml")
    data = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "cluster.yaml").read_text())
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type", "setup_commands",
                "head_start_ray_commands", "worker_start_ray_commands", "file_mounts"):
        assert key in data, key
    assert data["provider"]["type"]
    types = data["available_node_types"]
    assert data["head_node_type"] in types
    for name, node in types.items():
        assert {"resources", "node_config", "max_workers"} <= set(node), name
    assert any(node["resources"].get("GPU", 0) >= 1 for name, node in types.items() if name != data["head_node_type"])
    assert any("pip install" in c and ".[gpu]" in c for c in data["setup_commands"])
    head = " ".join(data["head_start_ray_commands"])
    worker = " ".join(data["worker_start_ray_commands"])
    assert "ray start --head" in head and "--port=6379" in head and "--dashboard-host=127.0.0.1" in head
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert "ray start --address=$RAY_HEAD_IP:6379" in worker and "--head" not in worker
    assert all("ray stop" in cmds[0] for cmds in (data["head_start_ray_commands"], data["worker_start_ray_commands"]))


def test_worker_plan_uses_cores_without_oversubscribing_and_one_worker_per_gpu():
    from pipeline.batch.ray_executor import plan_workers
    from pipeline.errors import NstError

    gb = 1e9
    two = plan_workers({"CPU": 2, "memory": 16 * gb})
    assert (two.count, two.threads, two.num_gpus) == (2, 1, 0.0)
    eight = plan_workers({"CPU": 8, "memory": 32 * gb})
    assert eight.count * eight.threads == 8 and eight.threads == 2
    small_memory = plan_workers({"CPU": 8, "memory": 3.2 * gb})
    assert small_memory.count == 2 and small_memory.count * small_memory.threads == 8
    gpus = plan_workers({"CPU": 8, "GPU": 2, "memory": 32 * gb})
    assert (gpus.count, gpus.num_gpus) == (2, 1.0)
    half = plan_workers({"CPU": 8, "GPU": 2, "memory": 32 * gb}, gpus_per_worker=0.5)
    assert (half.count, half.num_gpus) == (4, 0.5)
    assert plan_workers({"CPU": 8, "GPU": 2}, gpus_per_worker=0).num_gpus == 0.0
    with pytest.raises(NstError, match="GPUs"):
        plan_workers({"CPU": 8, "GPU": 2}, workers=3, gpus_per_worker=1.0)
