"""Finds the photos and videos under the inputs and maps each to its output path.

Only cheap checks happen here (existence, size, extension, header sniffing without decoding
pixels); a file that passes them can still fail to decode later, and the caller reports that.
The output folder must not overlap an input folder: outputs never land inside the photo tree
and a rerun never picks up its own outputs as inputs.
"""
from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.atomic import fit_name
from pipeline.errors import InputError
from pipeline.media.frames import VIDEO_EXTENSIONS, VideoInfo
from pipeline.media.images import FORMAT_SUFFIX, IMAGE_EXTENSIONS, RAW_EXTENSIONS, output_format, probe_image

log = logging.getLogger(__name__)

VIDEO_SUFFIX = ".mp4"  # the default codec's container (H.264 MP4); video_suffix follows video.codec
DEFAULT_MAX_PIXELS = 200_000_000


@dataclass(frozen=True)
class Item:
    id: str  # path relative to its input root, prefixed with the root's name, posix separators
    kind: str  # "image" | "video"
    source: Path
    output: Path


@dataclass(frozen=True)
class Refusal:
    source: Path
    reason: str


@dataclass
class Plan:
    items: list[Item] = field(default_factory=list)
    refused: list[Refusal] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)  # sidecar and system files met in folders
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # photo id -> (width, height) from its header
    reals: dict[str, str] = field(default_factory=dict)  # item id -> the source's real path, links resolved
    raw_twins: list[Path] = field(default_factory=list)  # RAW files met in folders beside a picture of the same name
    live_clips: list[Path] = field(default_factory=list)  # Live Photo clips met in folders beside their picture
    hidden_folders: list[Path] = field(default_factory=list)  # hidden, thumbnail and trash folders not walked
    other_kind: list[Item] = field(default_factory=list)  # met in folders, of a kind the command does not paint


# Files that cameras, phones, photo tools and operating systems leave beside the media: met while
# walking a folder they are passed over quietly (counted), not refused one error line each. Given
# by name they are still refused, with the reason.
SIDECAR_SUFFIXES = frozenset({
    ".aae",  # iPhone edits
    ".xmp", ".json",  # Lightroom / darktable metadata, Google Takeout's per-photo JSON
    ".thm", ".lrv", ".lrf",  # camera thumbnails, GoPro and DJI low-resolution previews
    ".cpi", ".mpl", ".bdmv", ".bdm", ".ctg", ".ind",  # AVCHD and camera card index files
})
SYSTEM_NAMES = frozenset({".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini", ".picasa.ini", "picasa.ini",
                          "zbthumbnail.info", ".directory"})


# Folders that NAS boxes, desktops and operating systems keep inside photo folders: thumbnails of
# every photo (Synology's @eaDir holds several per picture, QNAP's .@__thumb, the desktop's
# .thumbnails), deleted files (#recycle, @Recycle, .Trash-1000, $RECYCLE.BIN) and index data.
# Walked, they would paint each photo several times over, and deleted ones. Hidden folders
# (".name") are left alone as well. A folder named on the command line is always walked.
SYSTEM_FOLDERS = frozenset({"@eadir", "#recycle", "#snapshot", "@recycle", "@recently-snapshot", "$recycle.bin",
                            "system volume information", "lost+found", "@tmp", "@sharebin"})


def hidden_folder(name: str) -> bool:
    """A folder of thumbnails, deleted files or system data, or a hidden one: not walked."""
    return name.startswith(".") or name.lower() in SYSTEM_FOLDERS


def ignorable(name: str) -> bool:
    """A sidecar or system file: not a picture anyone asked to have painted."""
    lower = name.lower()
    # "._IMG.JPG": macOS's AppleDouble resource forks on external drives, not the JPEG.
    return lower in SYSTEM_NAMES or lower.startswith("._") or Path(lower).suffix in SIDECAR_SUFFIXES


_PICTURE_EXTENSIONS = IMAGE_EXTENSIONS - RAW_EXTENSIONS  # developed pictures


def _photo_stems(files: list[tuple[Path, str, str]]) -> set[str]:
    """The paths, less their extension and casefolded, of the developed pictures among ``files``."""
    return {base.casefold() for base, ext in (os.path.splitext(entry[0]) for entry in files)
            if ext.lower() in _PICTURE_EXTENSIONS}


# A Live Photo (Apple) or motion photo exported as a picture and a clip of the same name: the clip
# is about 3 s around the shot. Painting it would cost some 25 s of work a frame on a CPU for what
# is the photo's own moment, so in a walked folder a clip this short beside its picture is passed over.
LIVE_CLIP_SECONDS = 4.5


def _kind(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    return None


def _stat_problem(path: Path | str) -> str | None:
    """Why a path cannot be read as a file, or None (one stat and one access call when all is well)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
        if path.is_symlink():
            return f"broken symbolic link (points to {os.readlink(path)})"
        if exc.errno in (errno.EACCES, errno.EPERM):
            return "permission denied"
        return f"cannot be read ({exc.strerror or exc})"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_size == 0:
        return "empty file (0 bytes)"
    if not os.access(path, os.R_OK):
        return "permission denied"
    return None


def sniff_video(path: Path) -> tuple[str | None, VideoInfo | None]:
    """Why a video cannot be used, from its headers (one short ffmpeg call), or None; and what they say."""
    from pipeline.errors import VideoError
    from pipeline.media.frames import probe

    try:
        return None, probe(path)
    except VideoError as exc:
        return exc.reason, None


def sniff_image(path: Path, max_pixels: int) -> str | None:
    """Reads only the header: why the file is not a usable image, or None."""
    reason, _ = _sniff_image_size(path, max_pixels)
    return reason


def _sniff_image_size(path: Path, max_pixels: int) -> tuple[str | None, tuple[int, int] | None]:
    size = _plain_header_size(path)
    if size is not None and 0 < size[0] * size[1] <= max_pixels:
        return None, size
    try:  # anything unusual, and every refusal, goes through Pillow and its exact reasons
        return None, probe_image(path, max_pixels)
    except InputError as exc:
        return exc.reason, None


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _plain_header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of a plain JPEG or PNG from its first bytes, or None to ask Pillow.

    Pillow's header parse costs about 0.2 ms a file, most of planning an archive of 100,000 photos;
    this reads the frame header (JPEG SOFn, PNG IHDR) and nothing else. A file it accepts can still
    fail to decode later, like one Pillow accepts: the worker reports that with the file's name."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(65536)
    except OSError:
        return None
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if length < 2:
            return None
        if marker in _SOF:
            height, width = int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
            return (width, height) if width and height else None
        i += 2 + length
    return None


def _root_name(root: Path) -> str:
    return _printable(Path(os.path.abspath(root)).name or "root")


def _printable(name: str) -> str:
    """A name whose bytes are not UTF-8 (an old Latin-1 archive) as valid text for ids, outputs and
    reports: undecodable bytes become U+FFFD. The source path itself keeps the real bytes."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "replace")
    return name


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_no_overlap(inputs: Sequence[Path], out_dir: Path) -> None:
    """Refuses an output folder inside an input folder (or the reverse): outputs would mix with photos."""
    out_real = Path(os.path.realpath(out_dir))
    for root in inputs:
        if not Path(root).is_dir():
            continue
        in_real = Path(os.path.realpath(root))
        if _inside(out_real, in_real):
            raise InputError(out_dir, f"the output folder is inside the input folder {root}; choose an "
                                      f"output folder outside the inputs so the photo tree is never written to")
        if _inside(in_real, out_real):
            raise InputError(root, f"the input folder is inside the output folder {out_dir}; choose an "
                                   f"output folder outside the inputs")


def _walk(root: Path, out_real: Path, refused: list[Refusal],
          hidden: list[Path]) -> list[tuple[Path, str, str]]:
    """(file, relative posix path, real path) under root, sorted, following directory links once each;
    ``hidden_folder`` folders are added to ``hidden`` and not entered.

    A folder's real path is resolved once and a file's is that plus its name unless the file is a
    link itself: resolving every file (a system call per path component) was most of the walk."""
    found: list[tuple[Path, str, str]] = []
    root_real = os.path.realpath(root)
    visited = {root_real}
    root_text = os.fspath(root)
    aliases = 0

    def on_error(exc: OSError) -> None:
        refused.append(Refusal(Path(exc.filename or root), f"folder cannot be read ({exc.strerror or exc})"))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=True):
        real_dir = os.path.realpath(dirpath)
        kept = []
        for name in sorted(dirnames):
            full = Path(dirpath) / name
            if hidden_folder(name):
                hidden.append(full)
                continue
            real = os.path.realpath(full)
            if os.path.islink(full) and _inside(Path(real), Path(root_real)):
                if not _inside(Path(real_dir), Path(real)):
                    # An alias of a folder of this tree (a "Favourites" link): the folder is walked
                    # under its own name, wherever the link sorts.
                    aliases += 1
                    continue
                refused.append(Refusal(full, "symbolic link loop: links back to a folder it is in"))
                continue
            if real in visited:
                refused.append(Refusal(full, "symbolic link loop: this folder was already walked"))
                continue
            if _inside(Path(real), out_real):
                refused.append(Refusal(full, "is (or links to) the output folder; not walked"))
                continue
            visited.add(real)
            kept.append(name)
        dirnames[:] = kept
        rel_dir = os.path.relpath(dirpath, root_text).replace(os.sep, "/")
        prefix = "" if rel_dir == "." else rel_dir + "/"
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            real = os.path.realpath(full) if os.path.islink(full) else os.path.join(real_dir, name)
            found.append((Path(full), prefix + name, real))
    if aliases:
        log.info("%s: %d folder link(s) to folders inside it passed over (walked under their own names)",
                 root, aliases)
    return found


def _output_suffix(source: Path, kind: str, fmt: str, video_suffix: str = VIDEO_SUFFIX) -> str:
    if kind == "video":
        return video_suffix
    return FORMAT_SUFFIX[output_format(source, fmt)]


def _name_rank(source: Path, output: Path) -> int:
    """0 when the input is already named exactly like its output, 1 up to case, else 2."""
    if source.suffix == output.suffix:
        return 0
    return 1 if source.suffix.lower() == output.suffix else 2


def _with_suffix(item_id: str, suffix: str) -> str:
    """PurePosixPath(item_id).with_suffix(suffix) on the string: three Path objects per photo were a
    tenth of planning an archive."""
    head, _, name = item_id.rpartition("/")
    dot = name.rfind(".")
    name = fit_name(name[:dot] + suffix if 0 < dot < len(name) - 1 else name + suffix)
    return f"{head}/{name}" if head else name


def _assign_outputs(candidates: list[tuple[str, str, Path]], out_dir: Path, fmt: str,
                    video_suffix: str = VIDEO_SUFFIX) -> list[Item]:
    """Distinct outputs for inputs that would share a name (photo.JPG + photo.jpeg, or a.jpg + a.png
    with a fixed format): the input already named like its output, else the first in
    sorted order, keeps the plain name, the others get their own
    extension in the stem (photo-jpeg.jpg), then a number if that is taken too. Names are compared
    case-insensitively so the output tree survives a copy to a case-insensitive file system."""
    planned: list[tuple[str, str, Path, Path]] = []
    out_text = os.fspath(out_dir)
    for item_id, kind, source in candidates:
        suffix = _output_suffix(source, kind, fmt, video_suffix)
        planned.append((item_id, kind, source, Path(out_text, _with_suffix(item_id, suffix))))
    planned.sort(key=lambda p: p[0])
    taken: dict[str, str] = {}
    winners: dict[str, Path] = {}
    # An input whose own name already ends like its output (photo.jpg -> photo.jpg) keeps it first.
    for item_id, _kind_, _source, output in sorted(planned, key=lambda p: (_name_rank(p[2], p[3]), p[0])):
        key = str(output).casefold()
        if key not in taken:
            taken[key] = item_id
            winners[item_id] = output
    items = []
    for item_id, kind, source, output in planned:
        if item_id not in winners:
            ext = source.suffix.lstrip(".") or "file"
            candidate = output.with_name(fit_name(f"{output.stem}-{ext}{output.suffix}"))
            n = 2
            while str(candidate).casefold() in taken:
                candidate = output.with_name(fit_name(f"{output.stem}-{ext}-{n}{output.suffix}"))
                n += 1
            taken[str(candidate).casefold()] = item_id
            output = candidate
        items.append(Item(item_id, kind, source, output))
    return items


def _numbered_by_path(found: list[tuple[str, str, Path, str, tuple[int, int] | None]]) -> list[str]:
    """The item id of each input: its name, with "#2", "#3"... for inputs that share it (two
    cards' DCIM/IMG_0001.JPG) in the order of their paths, not of the arguments, so a rerun with
    the folders the other way round finds each file under its id of the first run."""
    groups: dict[str, list[int]] = {}
    for index, (name, *_rest) in enumerate(found):
        groups.setdefault(name, []).append(index)
    ids = [""] * len(found)
    taken = set(groups)  # a file may itself be named like a number given to another ("a.jpg#2")
    for name, members in groups.items():
        members.sort(key=lambda i: os.fspath(found[i][2]))
        ids[members[0]] = name
        n = 2
        for index in members[1:]:
            while f"{name}#{n}" in taken:
                n += 1
            ids[index] = f"{name}#{n}"
            taken.add(ids[index])
    return ids


OTHER_COMMAND = {"image": "a photo: nst video paints videos (nst run paints both)",
                 "video": "a video: nst image paints photos (nst video or nst run paint videos)"}


# The picture files nst video paints frame by frame when they hold more than one frame.
ANIMATION_EXTENSIONS = frozenset({".gif", ".webp", ".png", ".apng"})


def animated(path: Path) -> bool:
    """A picture file with more than one frame."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return getattr(image, "n_frames", 1) > 1
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def keep_kinds(plan: Plan, kinds: frozenset[str], named: Sequence[Path], video_suffix: str = VIDEO_SUFFIX) -> None:
    """Leaves in ``plan`` only the items of ``kinds``: the others are refused when named on the
    command line and passed over (counted) when met in a folder. For a command that paints only
    videos, an animated GIF, WebP or PNG is one: every frame is painted, delivered as a video."""
    given = {os.path.abspath(p) for p in named}
    kept = []
    for item in plan.items:
        if (item.kind == "image" and "image" not in kinds and "video" in kinds
                and item.source.suffix.lower() in ANIMATION_EXTENSIONS and animated(item.source)):
            kept.append(Item(item.id, "video", item.source, item.output.with_suffix(video_suffix)))
        elif item.kind in kinds:
            kept.append(item)
        elif os.path.abspath(item.source) in given:
            plan.refused.append(Refusal(item.source, OTHER_COMMAND[item.kind]))
        else:
            plan.other_kind.append(item)
    plan.items = kept


def discover(inputs: Sequence[Path], out_dir: Path, fmt: str = "auto", *,
             max_pixels: int = DEFAULT_MAX_PIXELS, video_suffix: str = VIDEO_SUFFIX) -> Plan:
    """Every file under the inputs, as an Item to process or a Refusal with its reason."""
    out_dir = Path(out_dir)
    check_no_overlap(inputs, out_dir)
    out_real = Path(os.path.realpath(out_dir))
    plan = Plan()
    found: list[tuple[str, str, Path, str, tuple[int, int] | None]] = []  # (name, kind, path, real path, size)
    seen_sources: dict[str, str] = {}
    walked_roots: set[str] = set()
    for root in inputs:
        root = Path(root)
        if root.is_dir():
            if os.path.realpath(root) in walked_roots:
                plan.refused.append(Refusal(root, "folder given twice"))
                continue
            walked_roots.add(os.path.realpath(root))
            prefix = _root_name(root)
            files = []
            for path, rel, real in _walk(root, out_real, plan.refused, plan.hidden_folders):
                if ignorable(path.name):
                    plan.ignored.append(path)
                else:
                    files.append((path, f"{prefix}/{_printable(rel)}", real))
            photos = _photo_stems(files)
            # A RAW or a short clip beside a picture of the same name is judged after the pictures,
            # by whether that picture was taken (an unreadable JPEG leaves its RAW to be painted).
            files.sort(key=lambda f: os.path.splitext(f[0])[0].casefold() in photos
                       and os.path.splitext(f[0])[1].lower() not in _PICTURE_EXTENSIONS)
        elif root.exists() or root.is_symlink():
            files, photos = [(root, _printable(root.name), os.path.realpath(root))], set()  # named: all painted
        else:
            plan.refused.append(Refusal(root, "file not found"))
            continue
        taken: set[str] = set()  # pictures of this input that became items, by photo stem
        for path, item_id, real in files:
            stem, ext = os.path.splitext(path)
            stem = stem.casefold()
            if stem in taken and ext.lower() in RAW_EXTENSIONS:
                # IMG_0001.CR2 beside IMG_0001.JPG, as cameras write RAW+JPEG (or a HEIC, PNG or TIFF
                # export): one shot, painted once, from that picture
                plan.raw_twins.append(path)
                continue
            reason = _stat_problem(path)
            kind = _kind(path)
            size = None
            if reason is None and kind is None:
                reason = f"not a photo or video (extension {path.suffix or 'none'!r})"
            if reason is None and kind == "image":
                reason, size = _sniff_image_size(path, max_pixels)
            if reason is None and kind == "video":
                reason, info = sniff_video(path)
                if reason is None and stem in taken and info.frame_count <= LIVE_CLIP_SECONDS * info.fps:
                    plan.live_clips.append(path)
                    continue
            if reason is None:
                if real in seen_sources:
                    reason = f"same file as {seen_sources[real]} (listed twice)"
                else:
                    seen_sources[real] = item_id
            if reason is not None:
                plan.refused.append(Refusal(path, reason))
                continue
            found.append((item_id, kind, path, real, size))
            if stem in photos and ext.lower() in _PICTURE_EXTENSIONS:
                taken.add(stem)
    candidates: list[tuple[str, str, Path]] = []
    for item_id, (_name, kind, path, real, size) in zip(_numbered_by_path(found), found):
        candidates.append((item_id, kind, path))
        plan.reals[item_id] = real
        if size is not None:
            plan.sizes[item_id] = size
    items = _assign_outputs(candidates, out_dir, fmt, video_suffix)
    # A file given directly from inside the output folder could map onto itself: never write over an input.
    sources = set(seen_sources)
    real_dirs: dict[Path, str] = {}
    for item in items:
        parent = item.output.parent
        if parent not in real_dirs:
            real_dirs[parent] = os.path.realpath(parent)
        real = os.path.join(real_dirs[parent], item.output.name)
        if os.path.islink(item.output):  # an existing output that is a link: where it really points
            real = os.path.realpath(item.output)
        if real in sources:
            plan.refused.append(Refusal(item.source, f"its output {item.output} would overwrite an input file"))
        else:
            plan.items.append(item)
    log.info("%d items, %d refused, %d sidecar or system files ignored, %d RAW files and %d Live Photo clips "
             "beside a picture passed over, %d hidden or system folders not walked", len(plan.items),
             len(plan.refused), len(plan.ignored), len(plan.raw_twins), len(plan.live_clips), len(plan.hidden_folders))
    return plan
