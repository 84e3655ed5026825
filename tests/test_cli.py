"""The CLI through typer.testing.CliRunner: success paths and one-line errors."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pipeline.cli.main import app
from tests.conftest import write_png

runner = CliRunner()
FAST = ["--size", "48", "--iterations", "2", "--scales", "1", "--quiet"]


@pytest.fixture()
def files(tmp_path, photo, painting):
    return {"photo": write_png(tmp_path / "in" / "photo.png", photo),
            "style": write_png(tmp_path / "style.png", painting),
            "style2": write_png(tmp_path / "style2.png", painting[::-1]),
            "out": tmp_path / "out"}


def error_lines(result) -> list[str]:
    return [line for line in result.output.splitlines() if "rror" in line]


def test_image_writes_one_output_per_input(files):
    result = runner.invoke(app, ["image", str(files["photo"]), "-s", str(files["style"]),
                                 "-o", str(files["out"]), *FAST])
    assert result.exit_code == 0, result.output
    out = files["out"] / "photo.png"
    with Image.open(out) as image:
        assert max(image.size) == 48 and image.mode == "RGB"


def test_two_styles_with_blend_weights_and_jpeg_output(files):
    result = runner.invoke(app, ["image", str(files["photo"]), "-s", str(files["style"]), "-s",
                                 str(files["style2"]), "--style-weight", "0.7", "--style-weight", "0.3",
                                 "--format", "jpeg", "-o", str(files["out"]), *FAST])
    assert result.exit_code == 0, result.output
    with Image.open(files["out"] / "photo.jpg") as image:
        assert image.format == "JPEG"


def test_missing_file_is_reported_and_the_batch_goes_on(files):
    missing = files["photo"].parent / "nope.jpg"
    result = runner.invoke(app, ["image", str(missing), str(files["photo"]), "-s", str(files["style"]),
                                 "-o", str(files["out"]), *FAST])
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 1 and "nope.jpg" in lines[0] and "not found" in lines[0]
    assert (files["out"] / "photo.png").is_file()


def test_a_text_file_is_not_an_image(files):
    fake = files["photo"].parent / "notes.jpg"
    fake.write_text("shopping list\n")
    result = runner.invoke(app, ["image", str(fake), str(files["photo"]), "-s", str(files["style"]),
                                 "-o", str(files["out"]), *FAST])
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 1 and "notes.jpg" in lines[0] and "not an image" in lines[0]
    assert (files["out"] / "photo.png").is_file()


def test_unknown_config_key_names_the_key(files, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim]\nitertions = 5\n")
    result = runner.invoke(app, ["image", str(files["photo"]), "-s", str(files["style"]),
                                 "--config", str(bad), *FAST])
    assert result.exit_code != 0
    assert "optim.itertions" in result.output and len(error_lines(result)) == 1


def test_out_of_range_value_names_the_key(files):
    result = runner.invoke(app, ["image", str(files["photo"]), "-s", str(files["style"]),
                                 "--tv-weight", "-1", *FAST])
    assert result.exit_code != 0 and "loss.tv_weight" in result.output


def test_bad_style_weight_count(files):
    result = runner.invoke(app, ["image", str(files["photo"]), "-s", str(files["style"]),
                                 "--style-weight", "0.5", "--style-weight", "0.5", *FAST])
    assert result.exit_code != 0
    assert "2 --style-weight values for 1 --style" in result.output


def test_bad_layer_weight_list_length_in_config(files, tmp_path):
    bad = tmp_path / "layers.toml"
    bad.write_text('[model]\nstyle_layer_weights = [0.5, 0.5]\n')
    result = runner.invoke(app, ["image", str(files["photo"]), "-s", str(files["style"]),
                                 "--config", str(bad), *FAST])
    assert result.exit_code != 0 and "model.style_layer_weights" in result.output


def test_unreadable_style_is_an_error(files, tmp_path):
    result = runner.invoke(app, ["image", str(files["photo"]), "-s", str(tmp_path / "missing.png"), *FAST])
    assert result.exit_code != 0 and "missing.png" in result.output


def test_existing_output_is_kept_without_overwrite(files):
    files["out"].mkdir(parents=True)
    existing = files["out"] / "photo.png"
    existing.write_bytes(b"precious")
    result = runner.invoke(app, ["image", str(files["photo"]), "-s", str(files["style"]),
                                 "-o", str(files["out"]), *FAST])
    assert result.exit_code == 3 and existing.read_bytes() == b"precious"  # not painted: a warning
    summary = json.loads((files["out"] / "summary.json").read_text())
    assert [(r["state"], "--overwrite" in r["warning"]) for r in summary["records"]] == [("skipped", True)]
    result = runner.invoke(app, ["image", str(files["photo"]), "-s", str(files["style"]),
                                 "-o", str(files["out"]), "--overwrite", *FAST])
    assert result.exit_code == 0 and existing.read_bytes() != b"precious"


def test_rgba_input_keeps_its_alpha(files, tmp_path, photo):
    rgba = np.dstack([photo, np.linspace(0, 255, photo.shape[1])[None].repeat(photo.shape[0], 0)])
    path = tmp_path / "in" / "logo.png"
    Image.fromarray(rgba.astype(np.uint8), "RGBA").save(path)
    result = runner.invoke(app, ["image", str(path), "-s", str(files["style"]), "-o", str(files["out"]), *FAST])
    assert result.exit_code == 0, result.output
    with Image.open(files["out"] / "logo.png") as out:
        assert out.mode == "RGBA"
        alpha = np.asarray(out.getchannel("A"), np.float32)
        assert alpha[:, 0].mean() < 20 and alpha[:, -1].mean() > 235


def test_weights_command_verifies_the_weights():
    result = runner.invoke(app, ["weights"])
    assert result.exit_code == 0, result.output
    assert "verified: 16 conv layers" in result.output


def test_presets_command_lists_presets():
    result = runner.invoke(app, ["presets"])
    assert result.exit_code == 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) >= 2 and all(len(line.split(None, 1)) == 2 for line in lines)


def test_each_command_paints_its_own_kind_of_file(files, tmp_path):
    """nst image paints photos and nst video one video: a video named to nst image, a photo or a
    folder named to nst video, is refused in one line; a video met in a folder nst image walks is
    passed over and counted. nst run paints both."""
    import json

    from test_video import moving_clip

    clip = moving_clip(files["photo"].parent / "clip.mp4", 3, "48x32", "10", audio=False,
                       codec=["-c:v", "libx264", "-pix_fmt", "yuv420p"])
    walked = runner.invoke(app, ["image", str(files["photo"].parent), "-s", str(files["style"]),
                                 "-o", str(files["out"]), *FAST])
    assert walked.exit_code == 0, walked.output
    assert (files["out"] / "in" / "photo.png").is_file() and not list(files["out"].rglob("clip*"))
    summary = json.loads((files["out"] / "summary.json").read_text())
    assert summary["passed_over"]["other_kind"] == 1
    for command, target, words in (("image", clip, "a video: nst image paints photos"),
                                   ("video", files["photo"], "a photo: nst video paints videos"),
                                   ("video", files["photo"].parent, "a folder: nst video paints one video")):
        result = runner.invoke(app, [command, str(target), "-s", str(files["style"]),
                                     "-o", str(tmp_path / f"out-{command}"), *FAST])
        assert result.exit_code == 1, result.output
        lines = error_lines(result)
        assert len(lines) == 1 and str(target) in lines[0] and words in lines[0], result.output
    assert not (tmp_path / "out-image").exists() and not (tmp_path / "out-video").exists()


@pytest.mark.parametrize("suffix", [".gif", ".webp", ".png"])
def test_an_animation_is_a_photo_to_nst_image_and_a_video_to_nst_video(files, tmp_path, suffix):
    from pipeline.media.frames import frame_timing, read_frames

    frames = [Image.fromarray(np.roll(np.asarray(Image.open(files["photo"]).convert("RGB")), 12 * i, axis=1))
              for i in range(5)]
    gif = tmp_path / f"anim{suffix}"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=[100, 100, 300, 100, 200], loop=0)
    as_photo = runner.invoke(app, ["image", str(gif), "-s", str(files["style"]), "-o", str(tmp_path / "photo"),
                                   *FAST])
    assert as_photo.exit_code == 3, as_photo.output  # done, with a warning the user must see
    assert "warning" in as_photo.output and "only the first frame is painted" in as_photo.output
    assert len(list((tmp_path / "photo").glob("anim.*"))) == 1
    as_video = runner.invoke(app, ["video", str(gif), "-s", str(files["style"]), "-o", str(tmp_path / "video"),
                                   "--later-iterations", "1", *FAST])
    assert as_video.exit_code == 0, as_video.output
    timing = frame_timing(tmp_path / "video" / "anim.mp4")
    assert [float(t) for t in timing.seconds()] == pytest.approx([0, 0.1, 0.2, 0.5, 0.6], abs=0.002)
    assert float(timing.last_duration * timing.time_base) == pytest.approx(0.2, abs=0.002)  # the end held too
    # the picture moves as the animation does: not its first frame shown five times
    painted = [f.astype(np.float32) for f in read_frames(tmp_path / "video" / "anim.mp4", 48)]
    assert all(np.abs(b - a).mean() > 8 for a, b in itertools.pairwise(painted))
