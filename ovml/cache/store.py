"""Two storage backends behind one small interface: a Zarr v3 group or an HDF5 file.

The backend is chosen by the path's suffix (`.h5`/`.hdf5`: HDF5, anything else: Zarr, which also
takes fsspec URLs such as `s3://bucket/x.zarr` or `memory://x.zarr`). Both hold the same tree;
attributes that are not scalars are stored as JSON strings in HDF5, natively in Zarr.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from typing import Any

import numpy as np

from ..errors import os_reason, system_errno
from .schema import CacheError

ZSTD_LEVEL = 3
HDF5_HEADROOM = 1 << 20   # bytes an HDF5 unit write may need beyond its data (metadata, chunk index)


def is_hdf5(path: str) -> bool:
    """True when `path` names an HDF5 cache."""
    return str(path).rstrip("/").endswith((".h5", ".hdf5"))


def is_url(path: str) -> bool:
    """True for fsspec URLs (`s3://`, `memory://`, ...); `file://` URLs are plain local paths."""
    return "://" in str(path) and not str(path).startswith("file://")


def local_path(path: str) -> str:
    """`file:///x/y.zarr` -> `/x/y.zarr`; anything else unchanged."""
    return str(path)[len("file://"):] if str(path).startswith("file://") else str(path)


def exists(path: str) -> bool:
    """True when a cache (file, folder or URL) is already at `path`."""
    if is_url(path):
        import fsspec
        fs, inner = fsspec.core.url_to_fs(path)
        return fs.exists(inner.rstrip("/") + "/zarr.json")
    return os.path.exists(local_path(path))


def remove(path: str) -> None:
    """Delete the cache at `path`, if any (for `--overwrite`, and a cache being replaced or left half-built)."""
    if is_url(path):
        import fsspec
        fs, inner = fsspec.core.url_to_fs(path)
        fs.rm(inner, recursive=True)
    elif os.path.isdir(local_path(path)):
        import shutil
        shutil.rmtree(local_path(path))
    elif os.path.exists(local_path(path)):
        os.remove(local_path(path))


def open_store(path: str, mode: str = "r") -> "Store":
    """Open the cache at `path`; mode 'r' (read), 'a' (read/write) or 'w' (create, replacing)."""
    if is_hdf5(path):
        if is_url(path):
            raise CacheError(f"{path}: HDF5 caches must be local files; use a .zarr store for URLs")
        return HDF5Store(local_path(path), mode)
    return ZarrStore(local_path(path), mode)


class Store:
    """What the cache code needs from a backend: attributes, arrays, groups. Both backends keep
    their root group in `self.root`, which indexes nodes by path."""

    path: str
    root: object

    def _node(self, key: str):
        return self.root[key] if key else self.root

    def get_attr(self, key: str, default: Any = None, node: str = "") -> Any:
        raise NotImplementedError

    def set_attr(self, key: str, value: Any, node: str = "") -> None:
        raise NotImplementedError

    def has(self, key: str) -> bool:
        raise NotImplementedError

    def children(self, key: str) -> list[str]:
        raise NotImplementedError

    def array(self, key: str):
        """The array at `key`: supports numpy slicing for reads and writes, `.shape`, `.dtype`."""
        return self.root[key]

    def create(self, key: str, shape: tuple, dtype: Any, chunks: tuple, data: np.ndarray | None = None):
        raise NotImplementedError

    def resize(self, key: str, shape: tuple) -> None:
        self.root[key].resize(shape)

    def read_strings(self, key: str, rows: slice = slice(None)) -> list[str]:
        values = np.asarray(self.root[key][rows]).tolist()
        return [v.decode() if isinstance(v, bytes) else str(v) for v in values]

    def flush(self) -> None:
        """Make everything written so far durable."""

    def reserve(self, nbytes: int) -> None:
        """Refuse, before anything is written, a write of `nbytes` the disk has no room for, where
        the backend cannot recover from a write that fails half-way (HDF5)."""

    def close(self) -> None:
        """Release the backend's handles."""

    def bytes_on_disk(self) -> int:
        raise NotImplementedError


class ZarrStore(Store):
    """A Zarr v3 group; row arrays compressed with zstd; safe for concurrent chunk writers."""

    def __init__(self, path: str, mode: str):
        import zarr
        self._zarr = zarr
        self.path = str(path)
        try:
            self.root = zarr.open_group(self.path, mode=mode, zarr_format=3 if mode == "w" else None)
        except FileNotFoundError as err:
            raise CacheError(f"{path}: no cache here") from err
        except OSError as err:
            raise CacheError(f"{path}: cannot open ({os_reason(err)})") from err

    def get_attr(self, key, default=None, node=""):
        return self._node(node).attrs.get(key, default)

    def set_attr(self, key, value, node=""):
        self._node(node).attrs[key] = value

    def has(self, key):
        try:
            self.root[key]
        except KeyError:
            return False
        return True

    def children(self, key):
        return sorted(self.root[key].keys()) if self.has(key) else []

    def create(self, key, shape, dtype, chunks, data=None):
        string = dtype is str
        compressors = None if string else self._zarr.codecs.ZstdCodec(level=ZSTD_LEVEL)
        arr = self.root.create_array(key, shape=shape, chunks=chunks, dtype=dtype,
                                     compressors=compressors, fill_value="" if string else 0,
                                     overwrite=True)
        if data is not None:
            arr[...] = data
        return arr

    def bytes_on_disk(self):
        if is_url(self.path):
            import fsspec
            fs, inner = fsspec.core.url_to_fs(self.path)
            return int(fs.du(inner))
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(self.path) for f in files)


class HDF5Store(Store):
    """An HDF5 file, chunked and gzip-compressed (readable by any h5py, no plugin); one writer at a time."""

    def __init__(self, path: str, mode: str):
        import h5py
        self._h5py = h5py
        self.path = str(path)
        try:
            self.root = h5py.File(self.path, mode)
        except FileNotFoundError as err:
            raise CacheError(f"{path}: no cache here") from err
        except OSError as err:
            raise CacheError(f"{path}: cannot open as HDF5 ({os_reason(err)})") from err

    def get_attr(self, key, default=None, node=""):
        attrs = self._node(node).attrs
        if key not in attrs:
            return default
        value = attrs[key]
        if isinstance(value, bytes):
            value = value.decode()
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value.item() if isinstance(value, np.generic) else value

    def set_attr(self, key, value, node=""):
        attrs = self._node(node).attrs
        if isinstance(value, (bool, int, float)):
            attrs[key] = value
        else:
            attrs[key] = json.dumps(value)

    def has(self, key):
        return key in self.root

    def children(self, key):
        return sorted(self.root[key].keys()) if key in self.root else []

    def create(self, key, shape, dtype, chunks, data=None):
        if key in self.root:
            del self.root[key]
        h5_dtype = self._h5py.string_dtype() if dtype is str else dtype
        maxshape = (None,) * len(shape)
        compression = None if dtype is str else "gzip"
        arr = self.root.create_dataset(key, shape=shape, dtype=h5_dtype, chunks=chunks,
                                       maxshape=maxshape, compression=compression,
                                       compression_opts=4 if compression else None)
        if data is not None:
            arr[...] = data
        return arr

    def reserve(self, nbytes: int) -> None:
        """HDF5 cannot take back a write that failed on a full disk (its file keeps dirty metadata
        that every later flush and every freed object fails on), so a unit is refused before it
        is written unless the disk has room for it uncompressed, plus HDF5_HEADROOM."""
        free = shutil.disk_usage(os.path.dirname(os.path.abspath(self.path))).free
        if free < nbytes + HDF5_HEADROOM:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path)

    def flush(self):
        try:
            self.root.flush()
        except (RuntimeError, OSError) as err:
            raise self._failure(err) from err

    def close(self):
        if self.root.id.valid:
            try:
                self.root.close()
            except (RuntimeError, OSError) as err:
                raise self._failure(err) from err

    def _failure(self, err: Exception) -> Exception:
        """h5py's failed write (a RuntimeError whose message names the errno, a full disk's 28) as
        an OSError on the file, or a one-line CacheError where it names none."""
        code = system_errno(err)
        if code:
            return OSError(code, os.strerror(code), self.path)
        return CacheError(f"{self.path}: HDF5 write failed ({str(err).splitlines()[0]})")

    def bytes_on_disk(self):
        return os.path.getsize(self.path)
