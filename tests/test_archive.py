"""A messy photo archive, as people really have them, through discover() and stylize_file()."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_images import exif_bytes, left_red_right_blue, swapped_rgb_profile, write_bomb_png, write_dng, write_png16
from test_video import moving_clip

from pipeline import config as config_mod
from pipeline.atomic import NAME_MAX, fit_name
from pipeline.batch.discover import Item, discover
from pipeline.batch.driver import decide
from pipeline.batch.imagejob import ImageJob, stylize_file
from pipeline.core.stylizer import Stylizer
from pipeline.errors import InputError, NstError

ODD_DIR = "Ünïcödé 写真/it's a \"quoted\" dir"
LONG = "写" * 83  # 249 bytes: with ".JPG" a name the file system takes, beyond it once marked as a temp file

# id -> (output name relative to out/, output size, output mode); every good file of the archive.
GOOD = {
    "Photos/2019 Summer/IMG_0001 rotated.jpg": ("Photos/2019 Summer/IMG_0001 rotated.jpg", (36, 48), "RGB"),
    "Photos/2019 Summer/cmyk.jpg": ("Photos/2019 Summer/cmyk.jpg", (48, 36), "RGB"),
    "Photos/scans/grey16.png": ("Photos/scans/grey16.png", (48, 36), "RGB"),
    "Photos/scans/rgb16.png": ("Photos/scans/rgb16.png", (48, 36), "RGB"),
    "Photos/scans/grey.jpg": ("Photos/scans/grey.jpg", (48, 36), "RGB"),
    "Photos/web/logo.png": ("Photos/web/logo.png", (48, 36), "RGBA"),
    "Photos/web/anim.gif": ("Photos/web/anim.png", (48, 36), "RGB"),
    "Photos/web/pic.webp": ("Photos/web/pic.webp", (48, 36), "RGB"),
    f"Photos/{ODD_DIR}/photo's \"best\" one.tif": (f"Photos/{ODD_DIR}/photo's \"best\" one.tif", (48, 36), "RGB"),
    "Photos/misc/old scan.bmp": ("Photos/misc/old scan.png", (48, 36), "RGB"),
    "Photos/misc/swapped profile.png": ("Photos/misc/swapped profile.png", (48, 36), "RGB"),
    "Photos/phone/IMG_1234.heic": ("Photos/phone/IMG_1234.jpg", (36, 48), "RGB"),
    "Photos/raw/img_0102.HEIC": ("Photos/raw/img_0102.jpg", (48, 36), "RGB"),
    "Photos/dups/photo.JPG": ("Photos/dups/photo.jpg", (48, 36), "RGB"),
    "Photos/dups/photo.jpeg": ("Photos/dups/photo-jpeg.jpg", (48, 36), "RGB"),
    f"Photos/dups/{LONG}.JPG": (f"Photos/dups/{LONG}.jpg", (48, 36), "RGB"),
    f"Photos/dups/{LONG}.jpeg": (f"Photos/dups/{fit_name(LONG + '-jpeg.jpg')}", (48, 36), "RGB"),
    "Photos/bad/truncated.jpg": ("Photos/bad/truncated.jpg", None, None),  # passes discover, fails to decode
    "Photos/raw/IMG_0100.JPG": ("Photos/raw/IMG_0100.jpg", (48, 36), "RGB"),  # its RAW twin is passed over
    "Photos/raw/IMG_0101.DNG": ("Photos/raw/IMG_0101.jpg", (32, 48), "RGB"),  # a lone RAW, turned upright
    "Photos/raw/IMG_0103.DNG": ("Photos/raw/IMG_0103.jpg", (48, 32), "RGB"),  # its JPEG is empty: the RAW is painted
}
RAW_TWINS = ("Photos/raw/IMG_0100.CR2", "Photos/raw/img_0102.nef")  # beside IMG_0100.JPG and img_0102.HEIC
LIVE_CLIPS = ("Photos/phone/IMG_1234.MOV",)  # a Live Photo's 3 s clip beside its HEIC
IGNORED = ("Photos/bad/.DS_Store", "Photos/2019 Summer/IMG_0001 rotated.AAE", "Photos/2019 Summer/._cmyk.jpg",
           "Photos/phone/IMG_1234.heic.json", "Photos/scans/Thumbs.db", "Photos/misc/GOPR0001.LRV")
# thumbnails a NAS keeps of every photo, a trash, a desktop's thumbnail cache: each holds a picture
HIDDEN_FOLDERS = ("Photos/@eaDir", "Photos/#recycle", "Photos/2019 Summer/.thumbnails", "Photos/web/.Trash-1000")
REFUSED = {  # path relative to the archive's parent -> words the reason must contain
    "Photos/bad/bomb.png": "exceeds the limit",
    "Photos/bad/notes.txt": "not a photo or video",
    "Photos/bad/empty.jpg": "empty file",
    "Photos/raw/IMG_0103.JPG": "empty file",
    "Photos/bad/liar.jpg": "not an image",
    "Photos/bad/broken link.jpg": "broken symbolic link",
    "Photos/bad/self link.jpg": "symbolic link loop",
    "Photos/loop": "symbolic link loop",
}


def gradient(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 / width, y * 255 / height, np.full_like(x, 120.0)], -1).astype(np.uint8)


def make_messy_archive(parent: Path) -> Path:
    root = parent / "Photos"
    for sub in ("2019 Summer", "scans", "web", ODD_DIR, "misc", "phone", "dups", "bad", "raw"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(gradient(64, 48))
    left_red_right_blue(80, 60).save(root / "2019 Summer/IMG_0001 rotated.jpg", exif=exif_bytes(6), quality=95)
    Image.fromarray(gradient(64, 48)).convert("CMYK").save(root / "2019 Summer/cmyk.jpg", quality=95)
    write_png16(root / "scans/grey16.png", (np.mgrid[0:48, 0:64][1] * 1000).astype(np.uint16))
    write_png16(root / "scans/rgb16.png", gradient(64, 48).astype(np.uint16) * 257)
    rgb.convert("L").save(root / "scans/grey.jpg")
    logo = rgb.convert("RGBA")
    alpha = np.zeros((48, 64), np.uint8)
    alpha[8:40, 8:56] = 255
    logo.putalpha(Image.fromarray(alpha))
    logo.save(root / "web/logo.png")
    frames = [rgb.convert("P"), Image.new("RGB", (64, 48), (0, 200, 0)).convert("P")]
    frames[0].save(root / "web/anim.gif", save_all=True, append_images=frames[1:])
    rgb.save(root / "web/pic.webp")
    rgb.save(root / ODD_DIR / "photo's \"best\" one.tif")
    rgb.save(root / "misc/old scan.bmp")
    rgb.save(root / "misc/swapped profile.png", icc_profile=swapped_rgb_profile())
    left_red_right_blue(80, 60).save(root / "phone/IMG_1234.heic", format="HEIF", exif=exif_bytes(6))
    moving_clip(root / "phone/IMG_1234.MOV", 30, "32x24", "10", audio=False, codec=["-c:v", "mjpeg"])
    rgb.save(root / "raw/IMG_0100.JPG", format="JPEG")
    (root / "raw/IMG_0100.CR2").write_bytes(b"II*\0\x10\0\0\0CR\x02\0" + b"\0" * 64)  # never read
    write_dng(root / "raw/IMG_0101.DNG", np.asarray(left_red_right_blue(96, 64)), orientation=8)
    rgb.save(root / "raw/img_0102.HEIC", format="HEIF")
    (root / "raw/img_0102.nef").write_bytes(b"MM\0*" + b"\0" * 64)
    (root / "raw/IMG_0103.JPG").write_bytes(b"")  # a copy that failed: the RAW beside it is the shot
    write_dng(root / "raw/IMG_0103.DNG", gradient(96, 64))
    rgb.save(root / "dups/photo.JPG", format="JPEG")
    rgb.save(root / "dups/photo.jpeg", format="JPEG")
    rgb.save(root / f"dups/{LONG}.JPG", format="JPEG")
    rgb.save(root / f"dups/{LONG}.jpeg", format="JPEG")
    for folder in HIDDEN_FOLDERS:
        (root.parent / folder / "IMG_0001.JPG").mkdir(parents=True)  # as Synology files them
        rgb.save(root.parent / folder / "IMG_0001.JPG" / "SYNOPHOTO_THUMB_XL.jpg", format="JPEG")
    noise = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(root / "bad/truncated.jpg", quality=95)
    whole = (root / "bad/truncated.jpg").read_bytes()
    (root / "bad/truncated.jpg").write_bytes(whole[: len(whole) // 2])  # header intact, scan data cut
    write_bomb_png(root / "bad/bomb.png")
    (root / "bad/notes.txt").write_text("scanned in 2003\n")
    (root / "bad/.DS_Store").write_bytes(b"\0\0\0\1Bud1" + b"\0" * 100)
    for sidecar in IGNORED:  # beside the photos, as phones, cameras and photo tools leave them
        (root.parent / sidecar).write_bytes(b"\0\0\0\1sidecar")
    (root / "bad/empty.jpg").write_bytes(b"")
    (root / "bad/liar.jpg").write_text("I am text, not a JPEG\n")
    os.symlink("no such target.jpg", root / "bad/broken link.jpg")
    os.symlink("self link.jpg", root / "bad/self link.jpg")
    os.symlink(".", root / "loop")  # a folder link back to the archive's root
    return root


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry under root (links not followed): kind, mode and content hash or link target."""
    state: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                state[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                state[rel] = ("dir", st.st_mode)
            else:
                state[rel] = ("file", st.st_mode, st.st_size, hashlib.sha256(path.read_bytes()).hexdigest())
    return state


@pytest.fixture
def archive(tmp_path) -> Path:
    return make_messy_archive(tmp_path / "in")


def test_discover_messy_archive(archive, tmp_path):
    out = tmp_path / "out"
    plan = discover([archive], out)
    assert {item.id: item.output.relative_to(out).as_posix() for item in plan.items} == \
        {key: value[0] for key, value in GOOD.items()}
    assert all(item.kind == "image" and item.source.is_file() for item in plan.items)
    refused = {r.source.relative_to(archive.parent).as_posix(): r.reason for r in plan.refused}
    assert set(refused) == set(REFUSED)
    # Sidecar and system files are passed over, counted, and never an error line each.
    assert sorted(p.relative_to(archive.parent).as_posix() for p in plan.ignored) == sorted(IGNORED)
    # RAW+JPEG pairs from cameras are one shot: the RAW is passed over, counted, not painted twice.
    assert sorted(p.relative_to(archive.parent).as_posix() for p in plan.raw_twins) == sorted(RAW_TWINS)
    assert sorted(p.relative_to(archive.parent).as_posix() for p in plan.live_clips) == sorted(LIVE_CLIPS)
    # Thumbnail, trash and hidden folders are not walked, and counted; named on the command line, they are.
    assert sorted(p.relative_to(archive.parent).as_posix() for p in plan.hidden_folders) == sorted(HIDDEN_FOLDERS)
    named = discover([archive.parent / HIDDEN_FOLDERS[0]], out)
    assert [item.source.name for item in named.items] == ["SYNOPHOTO_THUMB_XL.jpg"] and not named.hidden_folders
    assert all(len(os.fsencode(item.output.name)) <= NAME_MAX for item in plan.items)
    given = discover([archive.parent / IGNORED[1]], out)  # named on the command line: refused, with the reason
    assert not given.items and not given.ignored and "not a photo or video" in given.refused[0].reason
    for rel, words in REFUSED.items():
        assert words in refused[rel], (rel, refused[rel])
    assert not out.exists()  # discovery writes nothing
    again = discover([archive], out)
    assert again.items == plan.items and again.refused == plan.refused


def test_out_dir_inside_an_input_is_refused(archive, tmp_path):
    with pytest.raises(InputError, match="output folder is inside the input folder"):
        discover([archive], archive / "scans" / "styled")
    with pytest.raises(InputError, match="input folder is inside the output folder"):
        discover([archive / "scans"], archive)


def test_link_to_the_output_folder_is_not_walked(tmp_path):
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    (out / "photos").mkdir(parents=True)
    Image.new("RGB", (40, 40)).save(photos / "a.png")
    Image.new("RGB", (40, 40)).save(out / "photos" / "old.png")
    os.symlink(out, photos / "outputs")
    plan = discover([photos], out)
    assert [i.id for i in plan.items] == ["photos/a.png"]
    assert [r.reason for r in plan.refused] == ["is (or links to) the output folder; not walked"]


def test_a_link_to_a_folder_of_the_tree_is_an_alias_walked_under_the_folders_own_name(tmp_path):
    """A "0_Favourites" link to 2019/ sorted first: the photos came out under the link's name and the
    real folder was refused as a symbolic link loop (exit 1)."""
    photos = tmp_path / "Photos"
    (photos / "2019" / "summer").mkdir(parents=True)
    Image.new("RGB", (40, 40)).save(photos / "2019" / "summer" / "x.png")
    os.symlink("2019", photos / "0_Favourites")
    os.symlink("../2019/summer", photos / "2019" / "best")  # deeper, to a folder beside it
    elsewhere = tmp_path / "scans"
    elsewhere.mkdir()
    Image.new("RGB", (40, 40)).save(elsewhere / "s.png")
    os.symlink(elsewhere, photos / "scans")  # outside the tree: walked through the link
    plan = discover([photos], tmp_path / "out")
    assert sorted(i.id for i in plan.items) == ["Photos/2019/summer/x.png", "Photos/scans/s.png"]
    assert plan.refused == []


def test_two_cards_of_one_name_get_the_same_ids_and_outputs_whatever_their_order(tmp_path):
    """A rerun with the cards the other way round refused both files as each other's."""
    cards = [tmp_path / card / "DCIM" for card in ("A", "B")]
    for n, card in enumerate(cards):
        card.mkdir(parents=True)
        Image.new("RGB", (40, 40), (n * 90, 0, 0)).save(card / "IMG_0001.JPG")
    named = [{(i.source, i.id, i.output.name) for i in discover(order, tmp_path / "out").items}
             for order in (cards, cards[::-1])]
    assert named[0] == named[1] and len(named[0]) == 2, named
    assert {(source.parent.parent.name, name) for source, _, name in named[0]} == {
        ("A", "IMG_0001.jpg"), ("B", "IMG_0001-JPG.jpg")}


def test_files_given_directly_videos_and_name_clashes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    Image.new("RGB", (40, 40)).save(a / "x.jpg")
    Image.new("RGB", (40, 40)).save(a / "x.png")
    Image.new("RGB", (40, 40)).save(b / "x.jpg")
    (a / "clip.MOV").write_bytes(b"\0\0\0\x18ftypqt  ")  # a header and nothing else: refused at planning
    moving_clip(a / "real.MOV", 3, "32x32", "25", audio=False, codec=["-c:v", "mjpeg"])
    out = tmp_path / "out"
    plan = discover([a / "x.jpg", b / "x.jpg", a / "clip.MOV", a / "real.MOV", a / "x.jpg", tmp_path / "missing.jpg"],
                    out)
    assert [(i.id, i.kind, i.output.name) for i in plan.items] == [
        ("real.MOV", "video", "real.mp4"), ("x.jpg", "image", "x.jpg"), ("x.jpg#2", "image", "x-jpg.jpg")]
    reasons = {r.source.name: r.reason for r in plan.refused}
    assert reasons.pop("missing.jpg") == "file not found" and reasons.pop("x.jpg") == "same file as x.jpg (listed twice)"
    assert list(reasons) == ["clip.MOV"] and "video" in reasons["clip.MOV"], reasons
    # A fixed output format makes a.jpg and a.png clash; both survive, the same way every time.
    pngs = discover([a], out, fmt="png")
    assert [(i.id, i.output.relative_to(out).as_posix()) for i in pngs.items if i.kind == "image"] == [
        ("a/x.jpg", "a/x-jpg.png"), ("a/x.png", "a/x.png")]


def test_live_photo_clips_are_passed_over_but_longer_clips_and_clips_named_directly_are_not(tmp_path):
    phone = tmp_path / "iPhone"
    phone.mkdir()
    for name in ("IMG_0001.JPG", "IMG_0002.jpg"):
        Image.new("RGB", (40, 30)).save(phone / name)
    live = moving_clip(phone / "IMG_0001.MOV", 30, "32x24", "10", audio=False, codec=["-c:v", "mjpeg"])  # 3 s
    moving_clip(phone / "img_0002.mov", 60, "32x24", "10", audio=False, codec=["-c:v", "mjpeg"])  # 6 s: a clip
    moving_clip(phone / "IMG_0003.MOV", 30, "32x24", "10", audio=False, codec=["-c:v", "mjpeg"])  # no picture
    plan = discover([phone], tmp_path / "out")
    assert [i.source.name for i in plan.items] == ["IMG_0001.JPG", "IMG_0002.jpg", "IMG_0003.MOV", "img_0002.mov"]
    assert plan.live_clips == [live] and not plan.refused
    assert [i.source for i in discover([live], tmp_path / "out").items] == [live]  # asked for by name


def test_output_never_overwrites_an_input_and_folders_count_once(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    Image.new("RGB", (40, 40)).save(out / "a.jpg")
    plan = discover([out / "a.jpg"], out)
    assert plan.items == [] and "would overwrite an input file" in plan.refused[0].reason
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (40, 40)).save(photos / "b.png")
    plan = discover([photos, photos / ".." / "photos"], tmp_path / "elsewhere")
    assert [i.id for i in plan.items] == ["photos/b.png"] and [r.reason for r in plan.refused] == ["folder given twice"]


def test_names_that_are_not_utf8(tmp_path):
    photos = tmp_path / "p"
    photos.mkdir()
    latin1 = os.fsdecode(bytes(photos) + b"/caf\xe9.jpg")
    Image.new("RGB", (40, 40)).save(latin1, format="JPEG")
    plan = discover([photos], tmp_path / "out")
    [item] = plan.items
    assert item.id == "p/caf\ufffd.jpg" and item.id.encode("utf-8")
    assert os.fsencode(item.source) == bytes(photos) + b"/caf\xe9.jpg"  # the real file is still found
    str(item.output).encode("utf-8")  # outputs, ids and reports are valid text


def test_unreadable_file_is_refused(tmp_path):
    photos = tmp_path / "p"
    photos.mkdir()
    Image.new("RGB", (40, 40)).save(photos / "locked.png")
    (photos / "locked.png").chmod(0)
    try:
        if os.access(photos / "locked.png", os.R_OK):
            pytest.skip("running as root: mode 000 does not deny reading, so this case cannot be made here")
        plan = discover([photos], tmp_path / "out")
        assert [r.reason for r in plan.refused] == ["permission denied"]
    finally:
        (photos / "locked.png").chmod(0o644)


def test_dry_run_decisions_skip_foreign_outputs_and_refuse_non_media(tmp_path):
    photos, out = tmp_path / "p", tmp_path / "out"
    photos.mkdir()
    Image.new("RGB", (40, 40)).save(photos / "a.png")
    Image.new("RGB", (40, 40)).save(photos / "b.png")
    (photos / "c.txt").write_text("x")
    (out / "p").mkdir(parents=True)
    (out / "p" / "a.png").write_bytes(b"done before")
    plan = discover([photos], out)
    assert [(d.item.source.name, d.action, d.foreign) for d in decide(plan, None, "x", overwrite=False)] == [
        ("a.png", "skip", True), ("b.png", "do", False)]
    assert [(r.source.name, r.reason) for r in plan.refused] == [("c.txt", "not a photo or video (extension '.txt')")]
    assert [d.action for d in decide(plan, None, "x", overwrite=True)] == ["do", "do"]


def stylize_plan(items: list[Item], extractor, **overrides) -> dict[str, dict]:
    config = config_mod.load(overrides={"image.size": 48, "optim.iterations": 2, "image.scales": [1.0],
                                        "optim.coarse_iterations": 0, **overrides})
    stylizer = Stylizer(config, extractor=extractor)
    style = gradient(64, 64).astype(np.float32)[:, ::-1]
    records = {}
    for item in items:
        try:
            outcome = stylize_file(stylizer, ImageJob(item.source, item.output), [style], [1.0], config)
            records[item.id] = {"state": "done", "reason": outcome.reason, "size": outcome.size}
        except NstError as exc:
            records[item.id] = {"state": "failed", "reason": exc.message}
    return records


def test_messy_archive_end_to_end(archive, tmp_path, extractor):
    before = snapshot(archive.parent)
    out = tmp_path / "out"
    plan = discover([archive], out)
    records = stylize_plan(plan.items, extractor)
    assert snapshot(archive.parent) == before  # the input tree is byte-for-byte unchanged
    for item_id, (rel, size, mode) in GOOD.items():
        if size is None:
            assert records[item_id]["state"] == "failed"
            assert "corrupt or truncated" in records[item_id]["reason"] and item_id.split("/")[-1] in \
                records[item_id]["reason"]
            assert not (out / rel).exists()
            continue
        assert records[item_id]["state"] == "done", records[item_id]
        with Image.open(out / rel) as written:
            assert (written.size, written.mode) == (size, mode), item_id
    assert "first frame" in records["Photos/web/anim.gif"]["reason"]
    with Image.open(out / GOOD["Photos/web/logo.png"][0]) as logo:
        alpha = np.asarray(logo.getchannel("A"))
        assert alpha[0, 0] == 0 and alpha[18, 24] == 255  # transparent border kept, opaque centre
    with Image.open(out / GOOD["Photos/2019 Summer/IMG_0001 rotated.jpg"][0]) as rotated:
        exif = rotated.getexif()
        assert exif[0x0112] == 1 and exif[0x010F] == "Canon"
        assert exif.get_ifd(0x8769)[0x9003] == "2019:07:14 10:20:30"
    with Image.open(out / GOOD["Photos/raw/IMG_0101.DNG"][0]) as developed:  # orientation 8: left ends below
        assert developed.getexif()[0x0132] == "2019:07:14 10:20:30"
        pixels = np.asarray(developed, np.float32)
        assert pixels[40, 16, 0] > 150 > pixels[40, 16, 2] and pixels[6, 16, 2] > 150 > pixels[6, 16, 0]
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == sorted(rel for rel, size, _ in GOOD.values() if size)  # no temp files left


def test_keep_resolution_upscales_to_the_source_size(tmp_path, extractor):
    photos = tmp_path / "p"
    photos.mkdir()
    left_red_right_blue(400, 300).save(photos / "big.jpg", exif=exif_bytes(6), quality=90)
    plan = discover([photos], tmp_path / "out")
    records = stylize_plan(plan.items, extractor, **{"image.keep_resolution": True})
    assert records["p/big.jpg"]["state"] == "done"
    with Image.open(plan.items[0].output) as written:
        assert written.size == (300, 400)


def _session_members(sid: int) -> list[int]:
    """Processes in the session the test started (the driver and whatever it spawned)."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == sid:
                    members.append(int(entry.name))
            except OSError:
                continue
    return members


def _kill_session(sid: int) -> None:
    for pid in _session_members(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _ledger_rows(out: Path) -> dict[str, sqlite3.Row]:
    with sqlite3.connect(f"file:{out / '.nst' / 'ledger.sqlite'}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        return {row["id"]: row for row in db.execute("SELECT id, state, output, error FROM items")}


def _ledger_rows_if_any(out: Path) -> dict[str, sqlite3.Row]:
    try:
        return _ledger_rows(out)
    except sqlite3.OperationalError:  # no ledger or no tables yet
        return {}


@pytest.mark.slow
def test_killed_run_resumes_without_redoing_or_losing_work(archive, tmp_path):
    nst = Path(sys.executable).with_name("nst")
    if not nst.is_file():
        pytest.skip(f"{nst} is not installed (pip install -e .)")
    style = tmp_path / "style.png"
    Image.fromarray(gradient(64, 64)[:, ::-1]).save(style)
    out = tmp_path / "out"
    before = snapshot(archive.parent)
    command = [str(nst), "run", str(archive), "--style", str(style), "--output", str(out), "--size", "64",
               "--iterations", "20", "--scales", "1", "--workers", "1", "--quiet"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    outputs = {item_id: out / rel for item_id, (rel, size, _) in GOOD.items() if size}
    driver = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 400
        # The ledger commits its records about once a second, each after its file is in place: wait for
        # three records, so the kill falls between recorded work and work whose record was not committed.
        while sum(r["state"] == "done" for r in _ledger_rows_if_any(out).values()) < 3:
            assert driver.poll() is None, f"the run ended before it could be killed: {driver.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "no outputs after 400 s"
            time.sleep(0.1)
        _kill_session(driver.pid)
        driver.wait(timeout=30)
    finally:
        _kill_session(driver.pid)
    assert driver.returncode == -signal.SIGKILL
    rows = _ledger_rows(out)
    finished_first = {i: (outputs[i].stat().st_mtime_ns, outputs[i].stat().st_ino) for i, row in rows.items()
                      if row["state"] == "done"}
    assert 3 <= len(finished_first) < len(outputs)  # killed in the middle of the batch
    assert not list(out.rglob(".*.part"))  # no half-written file survives the kill

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, start_new_session=True,
                           check=False)
    assert rerun.returncode == 1, rerun.stderr[-2000:]  # 1: the truncated JPEG failed and files were refused
    rows = _ledger_rows(out)
    assert {i for i, row in rows.items() if row["state"] == "done"} == set(outputs), (  # nothing missing
        {i: (row["state"], row["error"]) for i, row in rows.items()}, rerun.stdout[-3000:], rerun.stderr[-3000:])
    assert rows["Photos/bad/truncated.jpg"]["state"] == "failed"
    for item_id, (mtime, inode) in finished_first.items():  # nothing redone
        assert (outputs[item_id].stat().st_mtime_ns, outputs[item_id].stat().st_ino) == (mtime, inode), item_id
    summary = json.loads((out / "summary.json").read_text())
    states = {r["id"]: r["state"] for r in summary["records"] if r["state"] != "refused"}
    assert {i for i, s in states.items() if s == "skipped"} == set(finished_first)
    assert summary["counts"]["refused"] == len(REFUSED) and summary["counts"]["failed"] == 1
    assert summary["passed_over"] == {"sidecar_or_system": len(IGNORED), "raw_beside_a_picture": len(RAW_TWINS),
                                      "live_photo_clips": len(LIVE_CLIPS),
                                      "hidden_or_system_folders": len(HIDDEN_FOLDERS)}
    assert snapshot(archive.parent) == before


def test_names_near_the_file_systems_limit(tmp_path):
    from pipeline.batch.files import write_atomic
    from pipeline.batch.segments import frames_dir

    assert fit_name("IMG_0001.jpg") == "IMG_0001.jpg"
    first, second = fit_name("é" * 200 + "a.jpg"), fit_name("é" * 200 + "b.jpg")
    assert first != second and first.endswith(".jpg") and first.startswith("é" * 100)
    assert all(len(os.fsencode(name)) <= NAME_MAX for name in (first, second, fit_name("x" * 400)))
    # the driver's own writes: a temp name marked with the process id beside a 254-byte name
    target = tmp_path / ("ü" * 125 + ".jpg")
    write_atomic(target, b"painted")
    assert target.read_bytes() == b"painted" and os.listdir(tmp_path) == [target.name]
    # a video's frames wait in a folder named after its whole path, which a deep archive makes long
    deep = "/".join(["Holiday photos from the summer of 2019"] * 8) + "/clip.mp4"
    folder = frames_dir(tmp_path, deep)
    folder.mkdir(parents=True)
    assert frames_dir(tmp_path, deep) == folder and frames_dir(tmp_path, deep + "x") != folder
    assert frames_dir(tmp_path, "a/b.mp4").name == "a__b.mp4"  # as before: runs under way resume
