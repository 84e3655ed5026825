"""Every container handled faithfully: frame timing, audio and subtitle tracks, codecs, damaged files.

Tiny clips (testsrc at 64x48, a few frames) are generated here with the bundled ffmpeg.
"""
from __future__ import annotations

import re
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.media.frames import (
    CODEC_SUFFIX,
    Bars,
    FramesLost,
    VideoEncodeError,
    VideoIndexMissing,
    VideoOpenFailure,
    bars_of,
    encode_video,
    ffmpeg_exe,
    frame_layout,
    frame_times,
    frame_timing,
    frames_lost,
    lit_bars,
    output_suffix,
    picture_bars,
    picture_format,
    probe,
    read_frames,
    source_timecode,
)

NTSC = Fraction(30000, 1001)
H264 = ["-c:v", "libx264", "-pix_fmt", "yuv420p"]


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-y", "-loglevel", "error", *args], check=True)


def listing(path: Path) -> str:
    return subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True,
                          check=False).stderr


def stream_lines(path: Path, kind: str) -> list[str]:
    return [line for line in listing(path).splitlines() if re.search(rf"Stream #0:\d+.*: {kind}: ", line)]


def packet_hashes(path: Path, stream: str) -> list[str]:
    """MD5 of each packet of one stream, copied: equal lists mean the stream was not re-encoded."""
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", stream,
                          "-c", "copy", "-f", "framemd5", "-"], capture_output=True, text=True, check=True).stdout
    # stream, dts, pts, duration, size, hash[, side data]: the payload's hash only (a container keeps
    # the AAC priming as side data of its own kind)
    return [line.split(",")[5].strip() for line in out.splitlines() if line and not line.startswith("#")]


def vfr_clip(path: Path) -> Path:
    """10 frames, the first five at 30 fps, then gaps of 0.3, 0.17, 0.17, 0.2 and 0.23 s."""
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=30", "-frames:v", "10",
           "-vf", r"setpts='(N*3+if(gte(N\,5)\,N*N\,0))/90/TB'", "-fps_mode", "passthrough",
           "-enc_time_base", "1/90000", *H264, str(path))
    return path


def test_variable_frame_rate_keeps_every_frame_time_through_decode_and_encode(tmp_path):
    src = vfr_clip(tmp_path / "vfr.mp4")
    timing = frame_timing(src)
    assert timing.decoded == timing.expected == 10 and timing.lost == 0
    times = timing.seconds()
    assert times[5] - times[4] > Fraction(1, 4)  # really variable
    info = probe(src)
    assert not timing.on_grid(info.fps)
    frames = list(read_frames(src, 64))
    out = encode_video(frames, tmp_path / "out" / "vfr.stylized.mp4", info.fps, None, source=src)
    again = frame_timing(out)
    assert again.decoded == 10 and again.seconds() == times  # exact: same time base, same ticks
    assert again.time_base == timing.time_base
    # Matroska (FFV1) keeps times to the millisecond, its clock in ffmpeg.
    mkv = encode_video(frames, tmp_path / "out" / "vfr.mkv", info.fps, None, source=src, codec="ffv1")
    assert all(abs(a - b) <= Fraction(1, 1000) for a, b in zip(frame_timing(mkv).seconds(), times, strict=True))


def test_a_constant_rate_source_keeps_its_exact_rational_rate_and_frame_count(tmp_path):
    src = tmp_path / "ntsc.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=30000/1001", "-frames:v", "9", *H264, str(src))
    timing = frame_timing(src)
    assert timing.on_grid(NTSC)
    out = encode_video(read_frames(src, 64), tmp_path / "ntsc.out.mp4", NTSC, None, source=src)
    info = probe(out)
    assert info.fps == NTSC and info.frame_count == 9
    assert frame_timing(out).seconds() == [Fraction(i * 1001, 30000) for i in range(9)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ntsc.mp4", "ntsc.out.mp4"]  # no temp files left


def test_pcm_becomes_aac_mp4_audio_is_copied_and_every_audio_and_subtitle_track_survives(tmp_path):
    (tmp_path / "subs.srt").write_text("1\n00:00:00,000 --> 00:00:00,400\nBonjour\n\n"
                                       "2\n00:00:00,400 --> 00:00:00,800\nau revoir\n")
    src = tmp_path / "tracks.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
           "-f", "lavfi", "-i", "sine=frequency=880:sample_rate=48000", "-i", str(tmp_path / "subs.srt"),
           "-map", "0:v", "-map", "1:a", "-map", "2:a", "-map", "3:s", "-t", "0.8", *H264,
           "-c:a:0", "pcm_s16le", "-c:a:1", "aac", "-c:s", "srt",
           "-metadata:s:a:1", "language=deu", "-metadata:s:s:0", "language=fra", str(src))
    info = probe(src)
    assert [s.codec for s in info.audio_streams] == ["pcm_s16le", "aac"]
    assert [(s.codec, s.language) for s in info.subtitle_streams] == [("subrip", "fra")]
    frames = list(read_frames(src, 64))
    out = encode_video(frames, tmp_path / "tracks.mp4", info.fps, src)
    audio = stream_lines(out, "Audio")
    assert len(audio) == 2 and all(": Audio: aac" in line for line in audio), audio
    assert "(deu)" in audio[1]
    assert packet_hashes(out, "0:a:1") == packet_hashes(src, "0:a:1")  # AAC copied, not re-encoded
    subtitles = stream_lines(out, "Subtitle")
    assert len(subtitles) == 1 and "mov_text" in subtitles[0] and "(fra)" in subtitles[0], subtitles
    text = subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(out), "-map", "0:s:0",
                           "-f", "srt", "-"], capture_output=True, text=True, check=True).stdout
    assert "Bonjour" in text and "au revoir" in text
    # The same tracks in MOV keep PCM as it is (editors want it) and in Matroska everything is copied.
    mov = encode_video(frames, tmp_path / "tracks.mov", info.fps, None, source=src, codec="prores")
    assert ": Audio: pcm_s16le" in stream_lines(mov, "Audio")[0]
    mkv = encode_video(frames, tmp_path / "tracks.ffv1.mkv", info.fps, None, source=src, codec="ffv1")
    assert packet_hashes(mkv, "0:a:0") == packet_hashes(src, "0:a:0")
    assert "subrip" in stream_lines(mkv, "Subtitle")[0]


def test_a_cameras_start_timecode_is_kept_in_every_container(tmp_path):
    """Editors conform and relink by the timecode track a camera writes; it was dropped."""
    src = tmp_path / "camera.mov"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=30000/1001", "-frames:v", "6", *H264,
           "-timecode", "14:03:27;12", str(src))
    frames = list(read_frames(src, 64))
    for codec, name in (("h264", "camera.mp4"), ("prores", "camera.mov")):
        out = encode_video(frames, tmp_path / name, NTSC, None, source=src, codec=codec)
        assert len(stream_lines(out, "Data")) == 1, listing(out)  # the tmcd track
        assert source_timecode(out) == "14:03:27;12", listing(out)
    assert source_timecode(encode_video(frames, tmp_path / "camera.mkv", NTSC, None, source=src,
                                        codec="ffv1")) == "14:03:27;12"  # a Matroska tag
    plain = encode_video(frames, tmp_path / "plain.mp4", NTSC, None, source=vfr_clip(tmp_path / "vfr.mp4"))
    assert source_timecode(plain) is None and not stream_lines(plain, "Data")


def test_codec_choices_give_the_expected_codec_container_and_pixels(tmp_path):
    rng = np.random.default_rng(0)
    frames = [np.repeat(np.repeat(rng.uniform(0, 255, (12, 16, 3)), 4, 0), 4, 1).astype(np.float32)
              for _ in range(4)]
    expected = {"h264": (r"Input #0, mov,mp4", r"Video: h264 \(High\) \(avc1.*yuv420p\(tv, bt709"),
                "hevc": (r"Input #0, mov,mp4", r"Video: hevc .*\(hvc1.*yuv420p"),
                "prores": (r"Input #0, mov,mp4", r"Video: prores \(HQ\).*yuv422p10le"),
                "ffv1": (r"Input #0, matroska", r"Video: ffv1.*bgr0")}
    for codec, (container, video) in expected.items():
        out = encode_video(frames, tmp_path / f"clip.{codec}{output_suffix(codec)}", Fraction(24), None, codec=codec)
        text = listing(out)
        assert re.search(container, text) and re.search(video, text), (codec, text)
        info = probe(out)
        assert info.frame_count == 4 and info.fps == 24 and (info.width, info.height) == (64, 48)
    lossless = list(read_frames(tmp_path / "clip.ffv1.mkv", 64))
    assert all(np.array_equal(a, b) for a, b in zip(lossless, np.rint(frames), strict=True))
    assert CODEC_SUFFIX == {"h264": ".mp4", "hevc": ".mp4", "prores": ".mov", "ffv1": ".mkv"}
    with pytest.raises(VideoEncodeError, match=r"prores cannot be written to a \.mp4 file; use \.mov"):
        encode_video(frames, tmp_path / "wrong.mp4", Fraction(24), None, codec="prores")
    with pytest.raises(VideoEncodeError, match="unknown codec"):
        encode_video(frames, tmp_path / "wrong.mp4", Fraction(24), None, codec="vp9")
    assert not list(tmp_path.glob(".*"))  # no temp files left by any of them


def test_an_mp4_without_its_index_gets_its_own_one_line_message(tmp_path):
    full = tmp_path / "recording.mp4"
    # no +faststart: the index (moov) goes last, as a camera writes it when recording stops
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-frames:v", "24", *H264, "-g", "4", str(full))
    data = full.read_bytes()
    assert data.find(b"moov") > data.find(b"mdat")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoIndexMissing) as caught:
        probe(cut)
    message = str(caught.value)
    assert message.startswith(f"{cut}: MP4 index (moov atom) missing: the file was cut short while recording")
    assert "\n" not in message and "not a video" not in message
    # cut inside the index itself
    inside = tmp_path / "inside.mp4"
    inside.write_bytes(data[: data.find(b"moov") + 40])
    with pytest.raises(VideoIndexMissing, match="moov atom"):
        probe(inside)
    # anything else is still "not a video"
    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n" * 20)
    with pytest.raises(VideoOpenFailure, match="not a video") as other:
        probe(text)
    assert not isinstance(other.value, VideoIndexMissing)


def test_a_picture_or_an_audio_file_with_a_cover_named_as_a_video_is_called_what_it_is(tmp_path):
    picture = tmp_path / "holiday.mp4"
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(picture, format="JPEG")
    with pytest.raises(VideoOpenFailure, match=r"holiday.mp4: a single picture \(JPEG\) with a video's extension"):
        probe(picture)
    cover = tmp_path / "cover.jpg"
    Image.fromarray(np.full((48, 64, 3), 90, np.uint8)).save(cover)
    song = tmp_path / "song.mp4"  # as music tools write it: AAC and the album's cover as an attached picture
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-i", str(cover), "-map", "0", "-map", "1", "-c:a", "aac",
           "-c:v", "mjpeg", "-disposition:v", "attached_pic", str(song))
    with pytest.raises(VideoOpenFailure, match="song.mp4: an audio file with a cover picture, not a video"):
        probe(song)


def test_a_truncated_clip_reports_how_many_frames_were_lost(tmp_path):
    full = tmp_path / "full.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=96x64:rate=25", "-frames:v", "24", *H264, "-g", "6",
           "-movflags", "+faststart", str(full))
    cut = tmp_path / "cut.mp4"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) * 55 // 100])
    info = probe(cut)
    assert info.frame_count == 24  # what the intact index announces
    timing = frame_timing(cut)
    assert 0 < timing.decoded < 24 and timing.lost == 24 - timing.decoded
    lost = timing.lost_frames(cut)
    assert isinstance(lost, FramesLost) and lost.path == cut
    assert str(lost) == (f"{cut}: decoded {timing.decoded} of 24 frames ({timing.lost} lost; "
                         "the file is damaged or was cut short)")
    # decoding may stop at a damaged packet or conceal it and go on: count what you decoded
    decoded = sum(1 for _ in read_frames(cut, 48))
    assert 0 < decoded <= timing.decoded
    assert frames_lost(cut, decoded, info.frame_count).decoded == decoded
    assert frames_lost(full, 24, 24) is None and frame_timing(full).lost_frames(full) is None
    # the frames that do decode encode at their own times
    out = encode_video(read_frames(cut, 48), tmp_path / "cut.out.mp4", info.fps, None, source=cut)
    assert probe(out).frame_count == decoded


def test_a_container_that_states_only_a_duration_raises_no_false_alarm_of_lost_frames(tmp_path):
    ts = tmp_path / "camcorder.ts"  # MPEG-TS (AVCHD's .mts too): a duration, no frame count
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=30000/1001", "-f", "lavfi", "-i", "sine=f=440:d=3.6",
           "-map", "0:v", "-map", "1:a", "-frames:v", "90", *H264, "-c:a", "aac", "-f", "mpegts", str(ts))
    info = probe(ts)
    decoded = sum(1 for _ in read_frames(ts, 64))
    assert decoded == 90 and not info.frame_count_exact
    assert info.frame_count != decoded  # duration x rate is off by a frame here
    assert info.frames_missing(decoded) == 0  # so no "1 lost" warning and exit code 3 for an intact file
    assert info.frames_missing(decoded - 40) > 0  # more than a second missing is still reported
    mp4 = tmp_path / "same.mp4"  # the same frames in MP4, which lists each one: exact
    ffmpeg("-i", str(ts), "-c", "copy", str(mp4))
    listed = probe(mp4)
    assert listed.frame_count_exact and listed.frame_count == 90 and listed.frames_missing(89) == 1
    fragmented = tmp_path / "fragments.mp4"  # written as it records: no frame list
    ffmpeg("-i", str(ts), "-an", "-c", "copy", "-movflags", "frag_keyframe+empty_moov", str(fragmented))
    assert not probe(fragmented).frame_count_exact


def trimmed_by_stream_copy(tmp_path: Path) -> tuple[Path, int]:
    """An intact MP4 whose index lists more frames than it shows: cut between key frames without
    re-encoding (ffmpeg -c copy, a phone's trim), an edit list hides the frames before the cut."""
    full = tmp_path / "full.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-frames:v", "40", *H264, "-g", "25", "-movflags",
           "+faststart", str(full))
    trimmed = tmp_path / "trimmed.mp4"
    ffmpeg("-ss", "0.4", "-i", str(full), "-c", "copy", str(trimmed))
    return trimmed, 30


def test_only_a_damaged_file_has_its_missing_frames_called_lost(tmp_path):
    trimmed, shown = trimmed_by_stream_copy(tmp_path)
    problems: list[str] = []
    decoded = sum(1 for _ in read_frames(trimmed, 64, problems=problems))
    assert decoded == shown < probe(trimmed).frame_count == 40  # the index lists the hidden frames too
    assert problems == []  # decoded silently: nothing is damaged, nothing lost
    cut = tmp_path / "cut.mp4"
    data = (tmp_path / "full.mp4").read_bytes()
    cut.write_bytes(data[: len(data) * 55 // 100])
    decoded = sum(1 for _ in read_frames(cut, 64, problems=problems))
    assert 0 < decoded < 40 and problems  # the decoder's complaints: these frames are lost


def test_camcorder_disc_and_broadcast_files_in_a_folder_are_found_as_videos(tmp_path):
    from pipeline.batch.discover import discover

    folder = tmp_path / "tapes"
    folder.mkdir()
    source = ["-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-frames:v", "3"]
    ffmpeg(*source, "-c:v", "mpeg2video", "-f", "vob", str(folder / "VTS_01_1.VOB"))  # a DVD
    ffmpeg(*source, "-c:v", "mpeg2video", "-f", "mxf", str(folder / "clip.mxf"))  # broadcast cameras
    ffmpeg(*source, "-vf", "scale=720:480,setsar=8/9", "-r", "30000/1001", "-c:v", "dvvideo", "-pix_fmt", "yuv411p",
           "-f", "dv", str(folder / "tape.dv"))  # MiniDV
    plan = discover([folder], tmp_path / "out")
    assert not plan.refused
    assert sorted((item.source.name, item.kind) for item in plan.items) == [
        ("VTS_01_1.VOB", "video"), ("clip.mxf", "video"), ("tape.dv", "video")]
    for item in plan.items:
        assert sum(1 for _ in read_frames(item.source, 64)) == 3
    dv = probe(folder / "tape.dv")  # a raw DV file prints its time base as its rate ("60k fps")
    assert dv.fps == NTSC and dv.frame_count == 3 and (dv.width, dv.height) == (640, 480)


@pytest.mark.parametrize("kind", ["ts", "vfr", "interlaced"])
def test_a_range_far_into_a_video_is_reached_by_seeking_to_exactly_the_same_frames(tmp_path, kind, monkeypatch):
    clip = tmp_path / {"ts": "broadcast.ts", "vfr": "phone.mp4", "interlaced": "camcorder.mp4"}[kind]
    pattern = ["-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25"]
    if kind == "ts":  # B-frames, long GOPs, and a stream that starts after the file does
        ffmpeg(*pattern, "-f", "lavfi", "-i", "sine=f=440", "-map", "0:v", "-map", "1:a", "-frames:v", "240",
               *H264, "-g", "48", "-bf", "3", "-c:a", "aac", "-f", "mpegts", str(clip))
    elif kind == "vfr":  # frame gaps that grow after frame 100
        ffmpeg(*pattern, "-frames:v", "240", "-vf", r"setpts='(N*3+if(gte(N\,100)\,N*N/50\,0))/75/TB'",
               "-fps_mode", "passthrough", "-enc_time_base", "1/90000", *H264, "-g", "40", str(clip))
    else:  # bwdif needs each frame's neighbours: a seek must give it the same ones
        ffmpeg(*pattern, "-frames:v", "240", "-vf", "interlace=scan=tff", "-flags", "+ildct+ilme", *H264,
               "-g", "30", str(clip))
    times = frame_times(clip)
    assert times is not None
    through = list(read_frames(clip, 64))
    assert len(through) == len(times.pts) >= 120
    import pipeline.media.frames as frames_module

    def no_decoding_through(path, pictures, skip, problems=None):
        raise AssertionError(f"decoded through to frame {skip} instead of seeking")

    monkeypatch.setattr(frames_module, "_pictures_through", no_decoding_through)
    for start in (96, 111, len(through) - 4):
        sought = list(read_frames(clip, 64, start, start + 6, times=times))
        assert len(sought) == len(through[start:start + 6])
        assert all(np.array_equal(a, b) for a, b in zip(sought, through[start:start + 6], strict=True)), start


def mark_every_frame_a_key_frame(avi: Path) -> None:
    """Sets the key-frame flag on every video entry of an AVI's idx1 index, as some muxers do."""
    import struct

    data = bytearray(avi.read_bytes())

    def walk(offset: int, end: int) -> None:
        while offset + 8 <= end:
            fourcc, size = bytes(data[offset:offset + 4]), struct.unpack("<I", data[offset + 4:offset + 8])[0]
            if fourcc in (b"RIFF", b"LIST"):
                walk(offset + 12, offset + 8 + size)
            elif fourcc == b"idx1":
                for entry in range(offset + 8, offset + 8 + size, 16):
                    if data[entry:entry + 2] == b"00":
                        flags = struct.unpack("<I", data[entry + 4:entry + 8])[0]
                        struct.pack_into("<I", data, entry + 4, flags | 0x10)
            offset += 8 + size + (size & 1)

    walk(0, len(data))
    avi.write_bytes(bytes(data))


def test_a_seek_onto_a_frame_falsely_indexed_as_key_decodes_through_instead(tmp_path):
    clip = tmp_path / "divx.avi"  # MPEG-4 Part 2, a key frame every 60, the index calling all of them key
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25", "-frames:v", "300", "-c:v", "mpeg4", "-g", "60",
           "-q:v", "4", str(clip))
    mark_every_frame_a_key_frame(clip)
    times = frame_times(clip)
    through = list(read_frames(clip, 64))
    for start in (150, 293):  # a seek lands on a P-frame, which the decoder would paint on grey
        sought = list(read_frames(clip, 64, start, start + 4, times=times))
        assert all(np.array_equal(a, b) for a, b in zip(sought, through[start:start + 4], strict=True)), start


def test_a_damaged_file_is_not_sought(tmp_path):
    clip = tmp_path / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25", "-frames:v", "200", *H264, "-movflags", "+faststart",
           str(clip))
    assert frame_times(clip) is not None
    damaged = tmp_path / "damaged.mp4"  # decoding through conceals the damage from earlier frames; a seek cannot
    data = bytearray(clip.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 2000, 7):
        data[i] ^= 0xFF
    damaged.write_bytes(bytes(data))
    assert frame_times(damaged) is None


def test_a_seek_that_misses_its_frame_falls_back_to_decoding_through(tmp_path):
    clip = tmp_path / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=25", "-frames:v", "160", *H264, str(clip))
    times = frame_times(clip)
    wrong = type(times)(times.time_base, tuple(p + 7 for p in times.pts), times.start)  # no frame has these
    through = list(read_frames(clip, 64))
    got = list(read_frames(clip, 64, 130, 134, times=wrong))
    assert all(np.array_equal(a, b) for a, b in zip(got, through[130:134], strict=True))


def test_frames_read_at_a_glance_are_reduced_by_ffmpeg_and_find_the_same_cut(tmp_path):
    from pipeline.media.cuts import detect_cuts

    clip = tmp_path / "two_shots.mp4"  # 12 frames of one pattern, then 12 of another: one cut at 12
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:d=0.48", "-f", "lavfi", "-i",
           "mandelbrot=size=640x360:rate=25", "-filter_complex", "[1:v]trim=end_frame=12,setpts=PTS-STARTPTS[b];"
           "[0:v][b]concat=n=2:v=1[v]", "-map", "[v]", *H264, str(clip))
    exact = list(read_frames(clip, 160))
    glance = list(read_frames(clip, 160, glance=True))
    assert len(glance) == len(exact) == 24 and glance[0].shape == exact[0].shape == (90, 160, 3)
    assert np.mean([np.abs(a - b).mean() for a, b in zip(glance, exact, strict=True)]) < 4  # the same pictures
    assert detect_cuts(glance, 0.15, 1) == detect_cuts(exact, 0.15, 1) == [0, 12]


def test_rotation_is_applied_once_and_not_written_again(tmp_path):
    plain = tmp_path / "plain.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-frames:v", "3", *H264, str(plain))
    rotated = tmp_path / "rotated.mp4"
    ffmpeg("-display_rotation", "90", "-i", str(plain), "-c", "copy", str(rotated))
    assert "Display Matrix: rotation of 90" in listing(rotated)
    info = probe(rotated)
    assert (info.width, info.height) == (48, 64)  # as displayed
    frames = list(read_frames(rotated, 64))
    assert frames[0].shape == (64, 48, 3)
    upright = np.rot90(next(read_frames(plain, 64)), 1)  # 90 degrees counter-clockwise, as displayed
    assert np.abs(frames[0] - upright).mean() < 3
    out = encode_video(frames, tmp_path / "out.mp4", info.fps, None, source=rotated)
    assert "Display Matrix" not in listing(out)  # the pixels are upright already
    again = probe(out)
    assert (again.width, again.height) == (48, 64)
    decoded = next(read_frames(out, 64))
    # the same picture after a lossy encode, not turned or mirrored
    assert np.abs(decoded - frames[0]).mean() < 8 < np.abs(decoded - frames[0][::-1, ::-1]).mean()


def combing(frame: np.ndarray) -> float:
    """Mean distance of each row from the average of its neighbours: large where two fields taken
    at different instants are woven together."""
    grey = frame.astype(np.float32).mean(axis=2)
    return float(np.abs(grey[1:-1] - (grey[:-2] + grey[2:]) / 2).mean())


def test_pixels_that_are_not_square_are_shown_square(tmp_path):
    square = tmp_path / "square.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=192x64:rate=25", "-frames:v", "3", "-c:v", "ffv1", str(square))
    wide = tmp_path / "anamorphic.mkv"  # stored 96 px wide, each pixel twice as wide as tall (SAR 2:1)
    ffmpeg("-i", str(square), "-vf", "scale=96:64,setsar=2", "-c:v", "ffv1", str(wide))
    assert "SAR 2:1" in listing(wide)
    assert picture_format(wide).sample_aspect == 2
    info = probe(wide)
    assert (info.width, info.height) == (192, 64)  # as a player shows it
    frames = list(read_frames(wide, 96))
    assert len(frames) == 3 and frames[0].shape == (32, 96, 3)  # not 64 rows: the picture keeps its shape
    reference = next(read_frames(square, 96))
    assert np.abs(frames[0] - reference).mean() < 6  # the same picture, not squeezed or cropped
    out = encode_video(frames, tmp_path / "out.mp4", info.fps, None, source=wide)
    again = probe(out)
    assert (again.width, again.height) == (96, 32) and picture_format(out).sample_aspect == 1


def test_interlaced_frames_are_deinterlaced_one_frame_per_frame(tmp_path):
    moving = tmp_path / "progressive.mkv"  # a white bar moving 6 px a picture: two fields differ
    ffmpeg("-f", "lavfi", "-i", "color=c=black:s=128x96:r=50[bg];color=c=white:s=24x64:r=50[bar];"
           "[bg][bar]overlay=x='8+6*n':y=16", "-frames:v", "16", "-c:v", "ffv1", str(moving))
    woven = tmp_path / "interlaced.mp4"
    # 50 pictures a second woven into 25 interlaced frames, top field first, as a camcorder records
    # them (the OpenCV wheel decodes such frames as black or a stale picture).
    ffmpeg("-i", str(moving), "-vf", "interlace=scan=tff", "-flags", "+ildct+ilme", *H264, "-crf", "4", str(woven))
    assert "top first" in listing(woven)
    assert picture_format(woven).interlaced and not picture_format(moving).interlaced
    frames = list(read_frames(woven, 128))
    assert len(frames) == frame_timing(woven).decoded == 8  # one frame out per frame in: the source's times
    weave = subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-i", str(woven), "-f", "rawvideo", "-pix_fmt",
                            "rgb24", "-"], capture_output=True, check=True).stdout
    woven_frames = np.frombuffer(weave, np.uint8).reshape(8, 96, 128, 3).astype(np.float32)
    instants = list(read_frames(moving, 128))[::2]  # the moments the top fields were taken
    for ours, woven_frame, instant in zip(frames, woven_frames, instants, strict=True):
        assert combing(woven_frame) > 10  # the fields woven: combed stripes along the bar's edges
        assert combing(ours) < 2
        assert np.abs(ours - instant).mean() < 0.25 * np.abs(woven_frame - instant).mean()  # not black either


@pytest.mark.parametrize("transfer", ["arib-std-b67", "smpte2084"])  # HLG (phones), PQ (HDR10)
def test_hdr_video_is_brought_to_sdr_colours_instead_of_washed_out(tmp_path, transfer):
    sdr = tmp_path / "sdr.mkv"
    # smooth colours: sharp chroma edges would measure chroma resampling rather than colour
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=128x96:rate=25", "-frames:v", "2", "-vf", "gblur=sigma=4", "-c:v", "ffv1",
           str(sdr))
    hdr = tmp_path / "hdr.mp4"
    # SDR pictures graded into 10-bit BT.2020 HDR with SDR white at HDR's reference white (BT.2408),
    # tagged as a phone tags its HDR clips.
    ffmpeg("-i", str(sdr), "-vf", f"zscale=tin=bt709:pin=bt709:min=bt709:rin=tv:t={transfer}:p=bt2020:m=bt2020nc"
           ":r=tv:npl=203,format=yuv420p10le", "-c:v", "libx265", "-x265-params", "log-level=error:lossless=1",
           "-color_trc", transfer, "-color_primaries", "bt2020", "-colorspace", "bt2020nc", str(hdr))
    assert picture_format(hdr).wide_colour and not picture_format(sdr).wide_colour
    reference = next(read_frames(sdr, 128))
    ours = next(read_frames(hdr, 128))
    untransformed = subprocess.run([ffmpeg_exe(), "-loglevel", "error", "-i", str(hdr), "-frames:v", "1", "-f",
                                    "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    washed = np.frombuffer(untransformed, np.uint8).reshape(96, 128, 3).astype(np.float32)

    def saturation(rgb: np.ndarray) -> float:
        return float((rgb.max(axis=2) - rgb.min(axis=2)).mean())

    assert saturation(washed) < 0.6 * saturation(reference)  # what RGB without the transform shows
    assert saturation(ours) > 0.9 * saturation(reference)
    assert np.abs(ours - reference).mean() < 0.3 * np.abs(washed - reference).mean()
    assert abs(ours.mean() - reference.mean()) < 8  # diffuse white back at SDR white: not darker or brighter


def test_a_video_that_starts_after_its_audio_keeps_its_offset(tmp_path):
    src = tmp_path / "late.mkv"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-itsoffset", "0.2", "-f", "lavfi",
           "-i", "testsrc=size=64x48:rate=25", "-map", "1:v", "-map", "0:a", "-frames:v", "10", "-t", "0.6",
           *H264, "-c:a", "aac", str(src))
    timing = frame_timing(src)
    assert abs(timing.start - Fraction(1, 5)) <= Fraction(1, 1000)
    info = probe(src)
    out = encode_video(read_frames(src, 64), tmp_path / "late.mp4", info.fps, None, source=src)
    assert abs(frame_timing(out).start - timing.start) <= Fraction(1, 1000)


def test_a_frame_source_that_fails_part_way_leaves_no_output_and_no_temp_files(tmp_path):
    src = vfr_clip(tmp_path / "vfr.mp4")  # the variable-rate path (Matroska through the pipe)
    frame = np.full((48, 64, 3), 128, np.float32)

    def failing():
        yield frame
        yield frame
        raise RuntimeError("decoder died")

    out_dir = tmp_path / "out"
    with pytest.raises(RuntimeError, match="decoder died"):
        encode_video(failing(), out_dir / "x.mp4", Fraction(25), None, source=src)
    with pytest.raises(VideoEncodeError, match="frame 2 is 32x48, the first was 64x48"):
        encode_video([frame, frame[:, :32]], out_dir / "y.mp4", Fraction(25), None)
    assert list(out_dir.iterdir()) == []


def test_black_bars_are_found_where_every_sampled_frame_has_them_in_pairs(tmp_path):
    """Letterbox and pillarbox are found; a dark edge on one side only (a night sky, a dark floor), a
    clip without bars, or bars around too small a picture are not."""
    letterbox = tmp_path / "letterbox.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x134:rate=25", "-frames:v", "50",
           "-vf", "pad=320:180:0:23", *H264, str(letterbox))
    pillarbox = tmp_path / "pillarbox.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=240x180:rate=25", "-frames:v", "50",  # testsrc's left edge is dark
           "-vf", "pad=320:180:40:0", *H264, str(pillarbox))
    one_side = tmp_path / "dark_top.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x140:rate=25", "-frames:v", "50",
           "-vf", "pad=320:180:0:40", *H264, str(one_side))
    bare = tmp_path / "bare.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x180:rate=25", "-frames:v", "50", *H264, str(bare))
    found = picture_bars(letterbox)
    assert found is not None and (found.left, found.right) == (0, 0) and abs(found.top - 23) <= 1
    assert abs(found.bottom - 23) <= 1
    layout = frame_layout(letterbox, 160)  # the whole frame at the working size, the picture inside
    assert layout is not None and layout.size == (160, 90) and layout.box[2] == 160 and 65 <= layout.box[3] <= 68
    picture = next(read_frames(letterbox, 160, picture_only=True))
    assert picture.shape == (layout.box[3], 160, 3) and picture[:2].mean() > 30  # no black rows painted
    whole = next(read_frames(letterbox, 160))
    assert whole.shape == (90, 160, 3)  # reads for judging keep the whole frame
    x, y, w, h = layout.box  # the picture is the whole frame's, in place (not shifted by a line)
    assert np.abs(picture - whole[y:y + h, x:x + w]).mean() < 6.0
    assert np.abs(picture[1:] - whole[y:y + h - 1, x:x + w]).mean() > np.abs(picture - whole[y:y + h, x:x + w]).mean()
    assert frame_layout(letterbox, 64) is None  # a 64x26 picture is too small to paint: the whole 64x36 frame is painted
    found = picture_bars(pillarbox)
    assert found is not None and (found.top, found.bottom) == (0, 0) and 38 <= found.left <= 41
    # a saturated edge bleeds a dark colour into the bars of a reduced frame: not something in them
    sky = tmp_path / "sky.mp4"
    ffmpeg("-f", "lavfi", "-i", "color=c=0x2050D0:s=720x540:rate=25", "-frames:v", "10",
           "-vf", "drawbox=x=200:y=200:w=300:h=200:color=white:t=fill,pad=960:540:128:0", *H264, str(sky))
    glance = frame_layout(sky, 160, least_side=1)
    assert glance is not None and not any(lit_bars(frame, glance) for frame in read_frames(sky, 160, glance=True))
    assert picture_bars(one_side) is None and picture_bars(bare) is None
    assert frame_layout(bare, 160) is None and next(read_frames(bare, 160, picture_only=True)).shape == (90, 160, 3)
    # in the samples: a subtitle in one bar unpairs them; bars around a tenth of the frame are a dark
    # scene; a subject on a black ground (its edge lines mostly dark in every sample) is not framed
    def framed(top: int, bottom: int, width: int = 320, filled: int = 320) -> np.ndarray:
        content = np.zeros((180, 320), bool)
        content[top:180 - bottom, (320 - width) // 2:(320 + width) // 2] = True
        content[top, filled:] = content[179 - bottom, filled:] = False
        return content

    assert bars_of([framed(40, 40), framed(40, 12)]) is None
    assert bars_of([framed(80, 82)]) is None
    # (one line more to each bar: the picture's outermost line is blended with it)
    assert bars_of([framed(40, 42), framed(45, 44)]) == Bars(0, 41, 0, 43)
    assert bars_of([framed(40, 42, width=100), framed(45, 44, width=100)]) is None
    assert bars_of([framed(40, 42, filled=250), framed(45, 44, width=100)]) == Bars(0, 41, 0, 43)


def test_a_part_of_a_stream_whose_seek_finds_no_key_frame_is_cut_by_decoding_through(tmp_path):
    """An MPEG-TS is not indexed: a seek lands on a byte position, and with its only key frame at
    the start (a 4 s clip, key frames every 10 s) nothing after it decodes; the part was refused as
    'no frame is shown' although the file plays."""
    from pipeline.media.frames import cut_excerpt

    clip = tmp_path / "broadcast.ts"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-f", "lavfi", "-i", "sine", "-t", "4",
           "-c:v", "libx264", "-g", "250", "-c:a", "aac", "-output_ts_offset", "11.4", str(clip))
    part = cut_excerpt(clip, tmp_path / "part.mkv", 1.03, 0.2)  # frames 25-29: 1.00 s (on screen at 1.03) on
    frames, source = list(read_frames(part, 64)), list(read_frames(clip, 64))
    assert len(frames) == 5
    for offset, frame in enumerate(frames):
        distances = [float(np.abs(frame.astype(np.float32) - source[k]).mean()) for k in range(20, 35)]
        assert int(np.argmin(distances)) + 20 == 25 + offset


def test_a_part_keeps_only_the_subtitles_shown_in_it_at_their_times_in_it(tmp_path):
    """With a seek, ffmpeg kept a cue that ended before the part (shown from its start) and
    stretched the next past the part's end."""
    from pipeline.media.frames import cut_excerpt, ffmpeg_exe

    (tmp_path / "subs.srt").write_text("1\n00:00:01,000 --> 00:00:03,000\nHello one\n\n"
                                       "2\n00:00:04,000 --> 00:00:06,000\nHello two\n\n"
                                       "3\n00:00:07,000 --> 00:00:09,000\nHello three\n\n")
    clip = tmp_path / "talk.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x24:rate=10", "-i", str(tmp_path / "subs.srt"), "-t", "10",
           "-map", "0:v", "-map", "1:s", "-c:v", "libx264", "-g", "10", "-c:s", "srt", "-metadata:s:s:0",
           "language=eng", str(clip))

    def cues(path: Path) -> str:
        return subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:s:0", "-f", "srt", "-"],
                              capture_output=True, text=True, check=True).stdout.strip()

    part = cut_excerpt(clip, tmp_path / "part.mkv", 3.5, 2)
    assert cues(part) == "1\n00:00:00,500 --> 00:00:02,000\nHello two"
    assert [(s.codec, s.language) for s in probe(part).subtitle_streams] == [("subrip", "eng")]
    late = cut_excerpt(clip, tmp_path / "late.mkv", 6.5, 3)
    assert cues(late) == "1\n00:00:00,500 --> 00:00:02,500\nHello three"
