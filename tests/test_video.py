"""`nst video` end to end with real OpenCV and ffmpeg on tiny clips generated here."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import write_png
from PIL import Image
from typer.testing import CliRunner

from pipeline import config as config_mod
from pipeline.batch.segments import frames_dir
from pipeline.cli.main import app
from pipeline.core.chain import stylize_sequence
from pipeline.core.stylizer import Stylizer
from pipeline.errors import NstError, VideoError
from pipeline.media.frames import decoded_seconds, encode_video, ffmpeg_exe, picture_bars, probe, read_frames

runner = CliRunner()
NTSC = Fraction(30000, 1001)


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error", *args], check=True)


def moving_clip(path: Path, frames: int, size: str, rate: str, audio: bool, codec: list[str]) -> Path:
    """testsrc (moving pattern and counter) with an optional 440 Hz sine of the same length."""
    args = ["-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}"]
    if audio:
        seconds = frames * float(Fraction(rate))
        args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", f"{seconds:.4f}",
                 "-c:a", "aac"]
    ffmpeg(*args, "-frames:v", str(frames), *codec, str(path))
    return path


H264 = ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-movflags", "+faststart"]


@pytest.fixture(scope="module")
def style_png(tmp_path_factory, painting) -> Path:
    return write_png(tmp_path_factory.mktemp("style") / "painting.png", painting)


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def frame_count(path: Path) -> int:
    return sum(1 for _ in read_frames(path, 64))


def test_round_trip_keeps_frame_count_exact_rate_and_audio(tmp_path, style_png):
    clip = moving_clip(tmp_path / "clip.mp4", 12, "96x64", "30000/1001", audio=True, codec=H264)
    source = probe(clip)
    assert source.fps == NTSC and source.has_audio and source.frame_count == 12
    out = tmp_path / "out"
    result = run("video", clip, "--style", style_png, "-o", out, "--size", 48, "-n", 3,
                 "--later-iterations", 2, "--save-frames", "-q")
    assert result.exit_code == 0, result.output
    stylized = out / "clip.mp4"  # named as by `nst image` and `nst run`: the input's name, mirrored
    info = probe(stylized)
    assert info.fps == NTSC  # not 2997/100, not 30
    assert info.frame_count == 12 and frame_count(stylized) == 12
    assert (info.width, info.height) == (48, 32)
    assert info.has_audio
    assert decoded_seconds(stylized, "a") == pytest.approx(decoded_seconds(clip, "a"), abs=0.03)
    assert decoded_seconds(stylized, "v") == pytest.approx(12 * 1001 / 30000, abs=0.01)
    kept = sorted(frames_dir(out, "clip.mp4").rglob("*.png"))  # --save-frames keeps the PNG frames
    assert len(kept) == 12
    assert [p.name for p in out.iterdir() if p.name.startswith(".") and p.name != ".nst"] == []  # no temp files
    # It is H.264 4:2:0 in MP4, what ordinary players open.
    listing = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(stylized)], capture_output=True,
                             text=True, check=False).stderr
    assert re.search(r"Video: h264 .*yuv420p", listing), listing
    # The same command again finds the video done (ledger) and leaves it alone.
    before = stylized.stat().st_mtime_ns
    again = run("video", clip, "--style", style_png, "-o", out, "--size", 48, "-n", 3,
                "--later-iterations", 2, "--save-frames")
    assert again.exit_code == 0 and "1 skipped" in again.output, again.output
    assert stylized.stat().st_mtime_ns == before
    # A file of the same name that nst did not make is not overwritten without --overwrite.
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "clip.mp4").write_bytes(b"mine")
    third = run("video", clip, "--style", style_png, "-o", foreign, "--size", 48, "-n", 2)
    assert third.exit_code == 3 and "--overwrite" in third.output, third.output  # not painted: not all done
    assert (foreign / "clip.mp4").read_bytes() == b"mine"


def test_video_without_audio_stays_without_and_odd_sizes_become_even(tmp_path, style_png):
    clip = moving_clip(tmp_path / "odd.mkv", 6, "97x65", "25", audio=False, codec=["-c:v", "ffv1"])
    assert probe(clip).has_audio is False
    result = run("video", clip, "--style", style_png, "-o", tmp_path / "out", "--size", 67, "-n", 2,
                 "--later-iterations", 2, "--temporal", "prev", "-q")
    assert result.exit_code == 0, result.output
    info = probe(tmp_path / "out" / "odd.mp4")
    assert info.has_audio is False
    assert info.frame_count == 6 and info.fps == 25
    assert info.width % 2 == 0 and info.height % 2 == 0 and max(info.width, info.height) in (66, 68)


def test_truncated_video_warns_how_many_frames_were_lost_and_keeps_the_rest(tmp_path, style_png):
    full = moving_clip(tmp_path / "full.mp4", 24, "96x64", "25", audio=False, codec=[*H264, "-g", "6"])
    truncated = tmp_path / "cut.mp4"
    data = full.read_bytes()
    truncated.write_bytes(data[: len(data) * 55 // 100])
    decodable = frame_count(truncated)
    assert 0 < decodable < 24
    result = run("video", truncated, "--style", style_png, "-o", tmp_path / "out", "--size", 48, "-n", 2,
                 "--temporal", "off", "-q")
    # Done, with a warning the exit code reflects (3), in the console, summary.json and `nst status`.
    assert result.exit_code == 3, result.output
    warning = f"{decodable} of 24 frames decoded, {24 - decodable} lost"
    assert warning in result.output, result.output
    stylized = tmp_path / "out" / "cut.mp4"
    assert frame_count(stylized) == decodable
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert any(warning in (r.get("warning") or "") for r in summary["records"]), summary["records"]
    assert warning in (tmp_path / "out" / "report.html").read_text()
    status = run("status", tmp_path / "out")
    assert warning in status.output, status.output


def test_a_clip_trimmed_without_re_encoding_finishes_cleanly_with_the_frames_it_shows(tmp_path, style_png):
    full = moving_clip(tmp_path / "full.mp4", 40, "64x48", "25", audio=False, codec=[*H264, "-g", "25"])
    trimmed = tmp_path / "trimmed.mp4"
    ffmpeg("-ss", "0.4", "-i", str(full), "-c", "copy", str(trimmed))  # an edit list hides 10 of 40 frames
    assert probe(trimmed).frame_count == 40 and frame_count(trimmed) == 30
    result = run("video", trimmed, "--style", style_png, "-o", tmp_path / "out", "--size", 48, "-n", 2,
                 "--temporal", "off", "-q")
    assert result.exit_code == 0, result.output  # not "30 of 40 frames decoded, 10 lost" and exit code 3
    assert "lost" not in result.output
    assert frame_count(tmp_path / "out" / "trimmed.mp4") == 30


def test_bad_inputs_give_one_line_errors_naming_the_file(tmp_path, style_png):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 20)
    missing = tmp_path / "nowhere.mp4"
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    out = tmp_path / "out"
    for path, reason in ((text, "not a video"), (missing, "file not found"), (empty, "empty file")):
        result = runner.invoke(app, ["video", str(path), "--style", str(style_png), "-o", str(out), "--size", "48",
                                     "-q"], standalone_mode=False)
        assert isinstance(result.exception, VideoError), result.output
        assert result.exception.path == path and reason in str(result.exception)
    # The installed command prints exactly one line and exits 1.
    nst = Path(sys.executable).with_name("nst")
    proc = subprocess.run([str(nst), "video", str(text), "--style", str(style_png), "-o", str(out)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert len(lines) == 1 and str(text) in lines[0] and "not a video" in lines[0], lines
    assert not out.exists() or not any(out.iterdir())


def test_encode_video_pads_odd_frames_keeps_the_rate_and_leaves_no_temp_files(tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.uniform(0, 255, (21, 33, 3)).astype(np.float32) for _ in range(5)]
    out = encode_video(iter(frames), tmp_path / "odd.mp4", Fraction(24000, 1001), None)
    info = probe(out)
    assert (info.width, info.height) == (34, 22)
    assert info.frame_count == 5 and info.fps == Fraction(24000, 1001) and not info.has_audio
    assert [p.name for p in tmp_path.iterdir()] == ["odd.mp4"]


def test_eval_temporal_static_clip_is_steady_and_flicker_is_not(tmp_path):
    rng = np.random.default_rng(1)
    base = np.clip(rng.normal(128, 40, (48, 64, 3)), 0, 255).astype(np.float32)
    base = np.asarray(np.repeat(np.repeat(base[::4, ::4], 4, 0), 4, 1), np.float32)  # blocky: codec-friendly
    static = encode_video([base] * 8, tmp_path / "static.mp4", Fraction(25), None)
    flicker = encode_video([np.clip(base + (30 if i % 2 else -30), 0, 255) for i in range(8)],
                           tmp_path / "flicker.mp4", Fraction(25), None)

    def errors(stylized: Path) -> tuple[float, float]:
        result = run("eval", "temporal", static, stylized, "--size", 64)
        assert result.exit_code == 0, result.output
        match = re.search(r"stylized ([\d.]+)\s+source ([\d.]+)", result.output)
        return float(match.group(1)), float(match.group(2))

    steady, source = errors(static)
    assert steady < 1e-5 and source < 1e-5
    flickering, _ = errors(flicker)
    assert flickering > 0.005 and flickering > 100 * max(steady, 1e-7)


def test_stylize_sequence_continues_from_a_previous_frame(extractor, photo, painting):
    config = config_mod.load(overrides={"image.scales": [1.0], "optim.tolerance": 0.0,
                                        "video.first_frame_iterations": 25, "video.later_frame_iterations": 3})
    stylizer = Stylizer(config, extractor=extractor)
    frames = [photo, np.roll(photo, 1, axis=1), np.roll(photo, 2, axis=1)]
    calls: list[tuple[int, int]] = []
    fresh = stylize_sequence(stylizer, frames, [painting], [1.0], config, "flow",
                             callback=lambda i, r: calls.append((i, r.evaluations)))
    assert len(fresh) == 3 and all(f.shape == photo.shape for f in fresh)
    # frame 0: the fresh optimisation, then settling it (one later-frame optimisation there, one back)
    assert [i for i, _ in calls] == [0, 0, 0, 1, 2]
    assert calls[0][1] >= 25 and max(e for _, e in calls[1:]) < 25
    continued_evals: list[int] = []
    continued = stylize_sequence(stylizer, frames[1:], [painting], [1.0], config, "flow",
                                 previous_stylized=fresh[0], previous_content=frames[0],
                                 callback=lambda i, r: continued_evals.append(r.evaluations))
    assert len(continued) == 2 and max(continued_evals) < 25
    # Warm-started from the same state, the continuation reproduces the chain.
    np.testing.assert_allclose(continued[0], fresh[1], atol=0.5)
    with pytest.raises(NstError, match="--temporal"):
        stylize_sequence(stylizer, frames[:1], [painting], [1.0], config, "sideways")


def test_a_key_frame_is_the_same_computation_for_the_chains_on_both_sides(extractor, photo, painting):
    """Two workers starting chains in opposite directions from one key frame must agree on it."""
    from pipeline.core.chain import key_frame
    from pipeline.core.temporal import KeyStep

    config = config_mod.load(overrides={"image.scales": [1.0], "optim.tolerance": 0.0, "video.settle_frames": 2,
                                        "video.first_frame_iterations": 12, "video.later_frame_iterations": 3})
    stylizer = Stylizer(config, extractor=extractor)
    frames = [np.roll(photo, 2 * t, axis=1) for t in range(5)]  # key frame 2
    forward = stylize_sequence(stylizer, frames[2:], [painting], [1.0], config, "flow")
    key = key_frame(stylizer, [KeyStep(frames[2], frames[3:])], [painting], [1.0], config)
    np.testing.assert_array_equal(forward[0], key)
    backward = stylize_sequence(stylizer, frames[:3][::-1], [painting], [1.0], config, "flow", first_stylized=key)
    np.testing.assert_array_equal(backward[0], key)
    # settled through the frames before it instead, the key frame comes out different
    other_side = key_frame(stylizer, [KeyStep(frames[2], frames[:2][::-1])], [painting], [1.0], config)
    assert float(np.abs(other_side - key).mean()) > 0.5
    # and settling changed the key frame (it is not the fresh solution)
    fresh = key_frame(stylizer, [KeyStep(frames[2], [])], [painting], [1.0], config)
    assert float(np.abs(fresh - key).mean()) > 0.5


def test_a_later_key_frame_carries_the_texture_of_the_previous_one(extractor, photo, painting):
    from pipeline.core.chain import key_frame
    from pipeline.core.temporal import KeyStep, composite_flow, warp

    # 30 evaluations: the first few steps of any optimiser move away from the carried start
    # before the temporal term pulls the reliable pixels back (0.62 of the fresh distance at 15,
    # 0.32 at 30, 0.22 at 60 here).
    config = config_mod.load(overrides={"image.scales": [1.0], "optim.tolerance": 0.0, "video.settle_frames": 0,
                                        "video.first_frame_iterations": 30})
    stylizer = Stylizer(config, extractor=extractor)
    frames = [np.roll(photo, 2 * t, axis=1) for t in range(7)]
    flow, mask = composite_flow(frames)
    assert 0.3 < mask.mean() < 1.0
    first = key_frame(stylizer, [KeyStep(frames[0], [])], [painting], [1.0], config)
    carried = key_frame(stylizer, [KeyStep(frames[0], []), KeyStep(frames[6], [], flow, mask)], [painting], [1.0],
                        config)
    fresh = key_frame(stylizer, [KeyStep(frames[6], [])], [painting], [1.0], config)
    target = warp(first, flow)
    reliable = mask > 0.5

    def distance(image: np.ndarray) -> float:
        return float(np.abs(image - target)[reliable].mean())

    # the fresh key frame has its own texture; the carried one keeps the previous key frame's
    assert distance(carried) < 0.5 * distance(fresh)


def test_frame_cursor_serves_consecutive_chunks_from_one_decoder(tmp_path):
    from pipeline.media.frames import FrameCursor

    clip = moving_clip(tmp_path / "clip.mp4", 20, "96x64", "24", audio=False, codec=H264)
    reference = list(read_frames(clip, 64))
    cursor = FrameCursor(clip, 64)
    # a forward chain's chunks: each starts with the last frame of the one before
    chunks = [cursor.read(0, 5), cursor.read(4, 10), cursor.read(9, 16), cursor.read(18, 20)]
    expected = [reference[0:5], reference[4:10], reference[9:16], reference[18:20]]
    for got, want in zip(chunks, expected, strict=True):
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)
    assert cursor.opens == 1  # never decoded from the start again
    np.testing.assert_array_equal(cursor.read(2, 4)[0], reference[2])  # going back reopens
    assert cursor.opens == 2
    assert len(cursor.read(18, 30)) == 2 and cursor.read(5, 5) == []  # the file ends; an empty range
    cursor.close()


def test_codec_choice_picks_the_container_and_keeps_the_frames(tmp_path, style_png):
    clip = moving_clip(tmp_path / "clip.mp4", 6, "96x64", "25", audio=False, codec=H264)
    result = run("video", clip, "--style", style_png, "-o", tmp_path / "out", "--size", 48, "-n", 2,
                 "--later-iterations", 2, "--codec", "ffv1", "-q")
    assert result.exit_code == 0, result.output
    made = tmp_path / "out" / "clip.mkv"  # FFV1 lives in Matroska
    listing = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(made)], capture_output=True, text=True,
                             check=False).stderr
    assert "Video: ffv1" in listing, listing
    assert frame_count(made) == 6


def test_frames_too_small_for_vgg_fail_once_with_a_clear_message(tmp_path, style_png):
    clip = moving_clip(tmp_path / "strip.mp4", 4, "256x32", "25", audio=False, codec=H264)  # 48x6 at --size 48
    out = tmp_path / "out"
    result = run("video", clip, "--style", style_png, "-o", out, "--size", 48, "-n", 2)
    assert result.exit_code == 1, result.output
    assert "too small" in result.output and "32 px" in result.output, result.output
    summary = json.loads((out / "summary.json").read_text())
    (record,) = summary["records"]
    assert record["state"] == "failed" and "too small" in record["reason"]
    assert "retrying" not in result.output  # a property of the input: no second attempt


def test_keep_resolution_delivers_the_video_at_the_source_size_upscaled_from_its_frames(tmp_path, style_png):
    clip = moving_clip(tmp_path / "odd.mkv", 4, "97x65", "25", audio=False, codec=["-c:v", "ffv1"])
    common = ("--style", style_png, "--size", 48, "-n", 2, "--later-iterations", 2, "--save-frames", "-q")
    lossless = run("video", clip, "-o", tmp_path / "ffv1", "--keep-resolution", "--codec", "ffv1", *common)
    assert lossless.exit_code == 0, lossless.output
    made = tmp_path / "ffv1" / "odd.mkv"
    info = probe(made)
    assert (info.width, info.height, info.frame_count) == (96, 64, 4)  # the source's size, sides made even
    saved = sorted((frames_dir(tmp_path / "ffv1", "odd.mkv")).rglob("*.png"))
    assert saved, "the working-size frames were not kept"
    small = np.asarray(Image.open(saved[0]).convert("RGB"), np.float32)
    assert small.shape[:2] == (32, 48)
    first = next(read_frames(made, 96))
    upscaled = np.clip(cv2.resize(small, (96, 64), interpolation=cv2.INTER_LANCZOS4), 0, 255)
    assert np.abs(first - upscaled).mean() < 1.0  # the painted frame enlarged, not painted again at this size
    nearest = cv2.resize(small, (96, 64), interpolation=cv2.INTER_NEAREST)
    assert np.abs(first - nearest).mean() > 2.0

    plain = run("video", clip, "-o", tmp_path / "plain", *common)
    assert plain.exit_code == 0, plain.output
    working = probe(tmp_path / "plain" / "odd.mp4")
    assert (working.width, working.height) == (48, 32)  # without the option: the working size


def test_an_interlaced_clip_with_wide_pixels_is_painted_whole_and_delivered_as_shown(tmp_path, style_png):
    # A DV-like camcorder clip: interlaced, each stored pixel twice as wide as tall (SAR 2:1).
    moving = tmp_path / "moving.mkv"
    ffmpeg("-f", "lavfi", "-i", "color=c=black:s=64x48:r=50[bg];color=c=white:s=12x32:r=50[bar];"
           "[bg][bar]overlay=x='4+3*n':y=8", "-frames:v", "12", "-c:v", "ffv1", str(moving))
    clip = tmp_path / "camcorder.mp4"
    ffmpeg("-i", str(moving), "-vf", "interlace=scan=tff,setsar=2", "-flags", "+ildct+ilme", *H264, str(clip))
    result = run("video", clip, "-o", tmp_path / "out", "--style", style_png, "--size", 96, "-n", 2,
                 "--later-iterations", 2, "--keep-resolution", "--save-frames", "-q")
    assert result.exit_code == 0, result.output
    made = tmp_path / "out" / "camcorder.mp4"
    info = probe(made)
    assert (info.width, info.height, info.frame_count) == (128, 48, 6)  # as a player shows the source
    saved = sorted(frames_dir(tmp_path / "out", "camcorder.mp4").rglob("*.png"))
    working = np.asarray(Image.open(saved[0]).convert("RGB"), np.float32)
    assert working.shape[:2] == (36, 96)  # painted at the shown shape, not squeezed into 96x72
    # Painted from the picture, not from the black or stale frames the OpenCV wheel gives for
    # interlaced ones: the bar's side of the frame is brighter than the rest.
    assert working[:, :48].mean() > working[:, 60:].mean() + 10


def test_a_preview_stylizes_only_the_part_asked_for_and_leaves_the_full_run_alone(tmp_path, style_png):
    clip = tmp_path / "walk.mp4"  # a bar moving 2 px a frame (even: 4:2:0), with a tone: 2 s at 25 fps
    ffmpeg("-f", "lavfi", "-i", "color=c=navy:s=64x48:r=25[bg];color=c=white:s=8x32:r=25[bar];"
           "[bg][bar]overlay=x='4+2*n':y=8", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
           "-frames:v", "50", "-t", "2", *H264, "-g", "12", "-c:a", "aac", str(clip))
    common = ("--style", style_png, "-o", tmp_path / "out", "--size", 48, "-n", 2, "--temporal", "off", "-q")
    full = run("video", clip, *common)
    assert full.exit_code == 0, full.output
    whole = (tmp_path / "out" / "walk.mp4").read_bytes()
    preview = run("video", clip, *common, "--start", "0:00.4", "--duration", "0.4")
    assert preview.exit_code == 0, preview.output
    made = tmp_path / "out" / "walk.0.4s-0.8s.mp4"
    info = probe(made)
    assert info.frame_count == 10 and info.fps == 25  # frames 10-19: those shown from 0.4 s to before 0.8 s
    assert abs(decoded_seconds(made) - 0.4) < 0.03  # the audio of the same part
    assert (tmp_path / "out" / "walk.mp4").read_bytes() == whole  # the full run's file untouched
    assert not list((tmp_path / "out").rglob("*.mkv"))  # the excerpt went once the preview was done
    painted_at = made.stat().st_mtime_ns
    again = run("video", clip, *common, "--start", "0:00.4", "--duration", "0.4")  # the part is cut again
    assert again.exit_code == 0, again.output
    assert made.stat().st_mtime_ns == painted_at  # and known for done: not painted twice
    assert [r["state"] for r in json.loads((tmp_path / "out" / "summary.json").read_text())["records"]] == ["skipped"]
    # The preview's first frame is painted from the source's frame 10.
    from pipeline.media.frames import cut_excerpt

    excerpt = next(read_frames(cut_excerpt(clip, tmp_path / "part.mkv", 0.4, 0.4), 64))
    source = list(read_frames(clip, 64))
    distances = [float(np.abs(excerpt - source[k]).mean()) for k in (9, 10, 11)]
    assert distances[1] < 0.25 * min(distances[0], distances[2])
    # from between two frames, the part starts with the frame on screen then (frame 10 until 0.44 s)
    between = next(read_frames(cut_excerpt(clip, tmp_path / "between.mkv", 0.43, 0.4), 64))
    distances = [float(np.abs(between - source[k]).mean()) for k in (9, 10, 11)]
    assert distances[1] < 0.25 * min(distances[0], distances[2])
    tail = run("video", clip, *common, "--start", "1.8", "--duration", "5")  # runs to the end: named so
    assert tail.exit_code == 0, tail.output
    assert probe(tmp_path / "out" / "walk.1.8s-end.mp4").frame_count == 5
    late = run("video", clip, *common, "--start", "3")
    assert late.exit_code == 1 and "after the clip's end (2.00 s)" in late.output
    bad = run("video", clip, *common, "--duration", "1:xx")
    assert bad.exit_code == 2 and "--duration '1:xx'" in bad.output


def test_a_fade_to_black_in_the_clip_is_a_fade_to_black_in_the_delivered_video(tmp_path, style_png):
    """Gatys's loss paints a black frame in the style's full light; the delivered file must follow the
    content's fade instead, and leave the frames before it as painted."""
    clip = tmp_path / "fade.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=96x64:rate=25", "-vf", "fade=t=out:start_frame=8:nb_frames=5",
           "-frames:v", "16", *H264, str(clip))
    out = tmp_path / "out"
    result = run("video", clip, "--style", style_png, "-o", out, "--size", 48, "-n", 20, "--later-iterations", 12,
                 "--save-frames", "-q")
    assert result.exit_code == 0, result.output
    source = [f.mean() for f in read_frames(clip, 48)]
    painted = [cv2.imread(str(p)).mean() for p in sorted(frames_dir(out, "fade.mp4").rglob("*.png"))]
    delivered = [f.mean() for f in read_frames(out / "fade.mp4", 48)]
    assert len(source) == len(painted) == len(delivered) == 16
    assert max(source[13:]) < 1.0 and min(painted[13:]) > 40.0  # black frames, painted bright
    assert max(delivered[13:]) < 3.0, [round(v) for v in delivered]
    assert np.allclose(delivered[:8], painted[:8], atol=2.0), ([round(v) for v in delivered], [round(v) for v in painted])
    assert np.all(np.diff(delivered[7:14]) <= 1.0)  # darkening through the fade


def test_a_letterboxed_clip_is_painted_inside_its_bars_and_delivered_with_them_black(tmp_path, style_png):
    clip = tmp_path / "film.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=192x80:rate=25", "-vf", "pad=192:108:0:14", "-frames:v", "8",
           *H264, str(clip))
    out = tmp_path / "out"
    result = run("video", clip, "--style", style_png, "-o", out, "--size", 96, "-n", 3, "--later-iterations", 2,
                 "--save-frames", "-q")
    assert result.exit_code == 0, result.output
    painted = sorted(frames_dir(out, "film.mp4").rglob("*.png"))
    width, height = Image.open(painted[0]).size
    assert len(painted) == 8 and width == 96 and 39 <= height <= 41  # the picture alone was painted
    info = probe(out / "film.mp4")
    assert (info.width, info.height, info.frame_count) == (96, 54, 8)  # delivered whole, bars and all
    for frame in read_frames(out / "film.mp4", 96):
        assert frame[:6].max() < 12 and frame[-6:].max() < 12  # the bars came back black
        assert frame[9:45].mean() > 40  # and the picture between them painted
    # Asked to, the whole frame is painted, bars and all.
    settings = tmp_path / "paint-bars.toml"
    settings.write_text('[video]\nbars = "paint"\n')
    whole = tmp_path / "whole"
    result = run("video", clip, "--style", style_png, "-o", whole, "--size", 96, "-n", 20, "--later-iterations", 2,
                 "--config", settings, "--save-frames", "-q")
    assert result.exit_code == 0, result.output
    assert Image.open(next(frames_dir(whole, "film.mp4").rglob("*.png"))).size == (96, 54)
    bars = [float(frame[:6].mean()) for frame in read_frames(whole / "film.mp4", 96)]
    assert min(bars) > 20, bars  # painted over


def test_frames_kept_from_a_run_that_judged_the_bars_otherwise_are_painted_again(tmp_path, style_png):
    """A resumed video whose kept frames have another shape than this run paints (its bars judged
    otherwise then) is painted again rather than assembled from frames that no longer fit."""
    from unittest import mock

    from pipeline.batch.ledger import Ledger
    from pipeline.media import frames as media

    clip = tmp_path / "film.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=192x80:rate=25", "-vf", "pad=192:108:0:14", "-frames:v", "4",
           *H264, str(clip))
    out = tmp_path / "out"
    args = ("video", clip, "--style", style_png, "-o", out, "--size", 96, "-n", 2, "--later-iterations", 1,
            "--save-frames", "-q")
    with mock.patch.object(media, "picture_bars", lambda path: None):  # bars not seen: the whole frame painted
        assert run(*args).exit_code == 0
    kept = sorted(frames_dir(out, "film.mp4").rglob("*.png"))
    assert Image.open(kept[0]).size == (96, 54)
    ledger = Ledger(out)
    ledger.mark_pending("film.mp4")  # as if the run had stopped before its encode
    ledger.close()
    result = run(*args)
    assert result.exit_code == 0, result.output
    kept = sorted(frames_dir(out, "film.mp4").rglob("*.png"))
    assert len(kept) == 4 and Image.open(kept[0]).size[1] < 54  # painted again, inside the bars
    assert all(frame[:6].max() < 12 for frame in read_frames(out / "film.mp4", 96))


def test_a_subtitle_in_the_bars_that_the_samples_missed_keeps_the_whole_frame_painted(tmp_path, style_png):
    clip = tmp_path / "subtitled.mp4"  # 48 frames; a caption in the bottom bar over frames 0-1 only
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=192x80:rate=25", "-vf",
           "pad=192:108:0:14,drawbox=x=60:y=98:w=72:h=6:color=white:t=fill:enable='lt(n,2)'", "-frames:v", "48",
           *H264, str(clip))
    assert picture_bars(clip) is not None  # the frames sampled over the clip show no caption
    out = tmp_path / "out"
    result = run("video", clip, "--style", style_png, "-o", out, "--size", 96, "-n", 1, "--later-iterations", 1,
                 "--save-frames", "-q")
    assert result.exit_code == 0, result.output
    kept = sorted(frames_dir(out, "subtitled.mp4").rglob("*.png"))
    assert len(kept) == 48 and Image.open(kept[0]).size == (96, 54)  # painted whole, the caption with it


def test_a_clip_on_twos_is_delivered_with_each_drawing_held_still(tmp_path, style_png):
    """Each picture of a 12 fps source shown twice at 24 fps (animation on twos, a frame rate
    conversion): the repeat is delivered as its first showing's painting, not painted again."""
    clip = tmp_path / "twos.mp4"
    # Lossless: on a 96x64 test pattern H.264's noise is not averaged away at 48 px as on real sizes
    # (tests/test_flicker.py holds repeats through a lossy encode).
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=96x64:rate=12", "-vf", "fps=24", "-frames:v", "12", *H264,
           "-qp", "0", str(clip))
    out = tmp_path / "out"
    # Two frames a worker call: each call after the first starts just after a held repeat, so the
    # chain goes on from the frame painted before it, read back from the source.
    settings = tmp_path / "chunks.toml"
    settings.write_text("[video]\nchunk_frames = 2\n")
    result = run("video", clip, "--style", style_png, "-o", out, "--size", 48, "-n", 3, "--later-iterations", 3,
                 "--config", settings, "--save-frames")
    assert result.exit_code == 0, result.output
    assert "6 repeated frame(s) held" in result.output
    painted = [cv2.imread(str(p)).astype(np.float32) for p in sorted(frames_dir(out, "twos.mp4").rglob("*.png"))]
    delivered = list(read_frames(out / "twos.mp4", 48))
    assert len(painted) == len(delivered) == 12
    for first, second in zip(painted[0::2], painted[1::2], strict=True):
        np.testing.assert_array_equal(second, first)

    def step(frames: list[np.ndarray], i: int) -> float:
        return float(np.abs(frames[i] - frames[i - 1]).mean())

    # In the delivered file a repeat is a still (the encoder may still touch one up), a new picture is not.
    stills = [step(delivered, i) for i in range(1, 12, 2)]
    changes = [step(delivered, i) for i in range(2, 12, 2)]
    assert sum(s < 0.05 for s in stills) >= 4 and max(stills) < min(changes), (stills, changes)


def test_after_a_dissolve_the_next_shot_is_painted_as_it_is_alone(tmp_path, style_png):
    """Carried through a dissolve, the first shot's strokes stay in the next shot (70-80 grey levels
    from that shot painted alone, here, with ``dissolves = false``); found, the next shot starts
    fresh at the dissolve's end and is faded in over it."""
    clip = tmp_path / "dissolve.mp4"
    # 8 frames of cross-fade from frame 12: the first shot shows until frame 19, the next alone from 20
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=96x64:rate=25:duration=0.8", "-f", "lavfi", "-i",
           "testsrc2=size=96x64:rate=25:duration=1", "-filter_complex",
           "[0:v][1:v]xfade=transition=fade:duration=0.32:offset=0.48,format=yuv420p[v]", "-map", "[v]",
           "-frames:v", "32", *H264, "-qp", "0", str(clip))
    after = tmp_path / "after.mp4"  # the same pixels from frame 20 (lossless, the same 4:2:0 planes)
    ffmpeg("-i", str(clip), "-vf", "trim=start_frame=20,setpts=PTS-STARTPTS", *H264, "-qp", "0", str(after))
    delivered, said = {}, {}
    for source in (clip, after):
        out = tmp_path / source.stem
        result = run("video", source, "--style", style_png, "-o", out, "--size", 48, "-n", 3,
                     "--later-iterations", 3)
        assert result.exit_code == 0, result.output
        delivered[source.stem] = list(read_frames(out / source.name, 48))
        said[source.stem] = " ".join(result.output.split())
    assert "1 dissolve(s) painted as such" in said["dissolve"] and "dissolve(s)" not in said["after"]
    assert len(delivered["dissolve"]) == 32 and len(delivered["after"]) == 12
    apart = [float(np.abs(a - b).mean()) for a, b in zip(delivered["dissolve"][20:], delivered["after"], strict=True)]
    assert max(apart) < 8.0, apart


def test_a_second_video_whose_output_has_the_same_name_does_not_take_over_the_first(tmp_path, style_png):
    """clip.mp4 and clip.mov painted into one folder in runs of their own both want clip.mp4: the
    second was skipped as a file 'not from an nst run here', and with --overwrite it replaced the
    first one's painting, which its next run then took for done."""
    (tmp_path / "in").mkdir()
    first = moving_clip(tmp_path / "in" / "clip.mp4", 4, "64x48", "10", audio=False, codec=H264)
    second = tmp_path / "in" / "clip.mov"
    ffmpeg("-f", "lavfi", "-i", "color=c=red:s=64x48:r=10", "-frames:v", "4", *H264, str(second))
    common = ("--style", style_png, "-o", tmp_path / "out", "--size", 48, "-n", 2, "--later-iterations", 1, "-q")
    assert run("video", first, *common).exit_code == 0
    painted = (tmp_path / "out" / "clip.mp4").read_bytes()
    for extra in ((), ("--overwrite",)):
        result = run("video", second, *common, *extra)
        assert result.exit_code == 1, result.output
        assert "holds the painting of" in result.output and str(first) in result.output
        assert (tmp_path / "out" / "clip.mp4").read_bytes() == painted
    short = tmp_path / "short.toml"
    short.write_text("[video]\nfirst_frame_iterations = 2\nlater_frame_iterations = 1\n")
    both = run("run", first.parent, "--style", style_png, "-o", tmp_path / "out", "--size", 48, "--config", short,
               "--workers", "1", "-q")  # in one run they are named apart
    assert both.exit_code == 0, both.output
    assert (tmp_path / "out" / "in" / "clip-mov.mp4").is_file()
