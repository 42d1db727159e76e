"""The probe store: a zarr v3 group with named dimensions and coordinates (the schema is docs/STORE.md).

Writing (used by :mod:`dartool.probe`):

* :func:`prepare_store` creates a store, or reopens an unfinished one for ``resume``, or replaces one for
  ``overwrite``, and refuses everything else with one line that names the flag to pass.
* :meth:`ProbeStore.write_batch` writes every array chunk of one batch of samples at a set of noise levels:
  the per-sample values, the batch's sums of every sample-mean variable (in ``progress/``), then the ``done``
  flags. Chunks are aligned to batches, so each (noise_level, batch) chunk has exactly one writer and a
  write interrupted before its ``done`` flag is simply redone on resume.
* :meth:`ProbeStore.finalize` reduces the sums to means, consolidates the metadata once, and only then sets
  ``status`` to ``"complete"``.

Reading: :func:`open_store` returns an :class:`xarray.Dataset` after checking the schema version and that the
store is complete (``allow_partial=True`` reads an unfinished one; its sample means are then NaN).
"""
from __future__ import annotations

import json
import math
import shutil
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from . import __version__

SCHEMA_VERSION = 1
# Chunk files named c.0.1 inside each array's folder (not nested folders c/0/1): far fewer directories.
FLAT_CHUNKS = {"name": "default", "separator": "."}
PROGRESS = "progress"  # subgroup with bookkeeping: done flags and per-batch sums (xarray does not read it)

# Sample-mean variables: name -> dims after ``noise_level``. The probe hands over per-sample values under
# these names; the store sums them per batch and divides by N at the end.
MEAN_VARS: dict[str, tuple[str, ...]] = {
    "loss": (),
    "z_rms": ("block",),
    "h_rms": ("sublayer",),
    "v_rms": ("sublayer",),
    "update_ratio": ("sublayer",),
    "z_grad_rms": ("block",),
    "h_grad_rms": ("sublayer",),
    "adjacent_cos": ("block",),
    "block_cos": ("block", "block2"),
    "time_cos": ("block",),
    "alpha": ("router", "source"),
    "alpha_entropy": ("router",),
    "importance": ("router", "source"),
}
# Of those, the ones also stored per sample as ``{name}_per_sample`` [noise_level, sample, ...].
PER_SAMPLE_VARS: tuple[str, ...] = (
    "loss", "z_rms", "z_grad_rms", "adjacent_cos", "time_cos", "h_rms", "v_rms", "h_grad_rms",
)
# Pooled decodability features (float16): name -> dims after (noise_level, sample-or-pooled_sample).
POOLED_VARS: dict[str, tuple[str, ...]] = {"pooled_h": ("router", "feature"), "pooled_x": ("feature",)}


class StoreError(ValueError):
    """A store that cannot be used as asked; the message is one line that says what to do."""


# --------------------------------------------------------------------------------------------------
# layout
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreLayout:
    """The shape of a probe store: everything that fixes the array shapes and chunks."""

    noise_levels: tuple[float, ...]   # ascending, in [0, 1], 1 = pure noise
    depth: int                        # K blocks; L = 2K sublayers; L + 1 routers and sources
    num_samples: int                  # N
    batch_size: int                   # samples per chunk (and per written batch)
    pooled_samples: int = 0           # M <= N: samples with pooled features (0 = none)
    projection_dim: int = 64          # P

    def __post_init__(self) -> None:
        s = np.asarray(self.noise_levels, dtype=np.float64)
        if s.ndim != 1 or len(s) == 0 or np.any(np.diff(s) <= 0) or s[0] < 0 or s[-1] > 1:
            raise ValueError("noise levels must be a non-empty, strictly ascending list in [0, 1]")
        if self.depth < 1 or self.num_samples < 1 or self.batch_size < 1 or self.projection_dim < 1:
            raise ValueError("depth, num_samples, batch_size and projection_dim must be >= 1")
        if not 0 <= self.pooled_samples <= self.num_samples:
            raise ValueError(f"pooled_samples must be in 0..{self.num_samples}, got {self.pooled_samples}")

    @property
    def num_levels(self) -> int:
        return len(self.noise_levels)

    @property
    def num_sublayers(self) -> int:
        return 2 * self.depth

    @property
    def num_batches(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    def batch_range(self, b: int) -> tuple[int, int]:
        """Sample indices [start, stop) of batch b."""
        start = b * self.batch_size
        return start, min(start + self.batch_size, self.num_samples)

    @property
    def pooled_dim(self) -> str:
        return "sample" if self.pooled_samples == self.num_samples else "pooled_sample"

    def dim_sizes(self) -> dict[str, int]:
        L = self.num_sublayers
        sizes = {
            "noise_level": self.num_levels, "block": self.depth, "block2": self.depth, "sublayer": L,
            "router": L + 1, "source": L + 1, "sample": self.num_samples,
        }
        if self.pooled_samples:
            sizes["feature"] = self.projection_dim
            if self.pooled_dim == "pooled_sample":
                sizes["pooled_sample"] = self.pooled_samples
        return sizes

    def data_vars(self) -> dict[str, tuple[tuple[str, ...], str]]:
        """name -> (dims, dtype) of every data variable of the root group."""
        out: dict[str, tuple[tuple[str, ...], str]] = {}
        for name, dims in MEAN_VARS.items():
            out[name] = (("noise_level", *dims), "float32")
        for name in PER_SAMPLE_VARS:
            out[f"{name}_per_sample"] = (("noise_level", "sample", *MEAN_VARS[name]), "float32")
        if self.pooled_samples:
            for name, dims in POOLED_VARS.items():
                out[name] = (("noise_level", self.pooled_dim, *dims), "float16")
        return out


def sublayer_labels(depth: int) -> tuple[list[str], list[int], list[str]]:
    """(sublayer_kind, sublayer_block, router_name) for a model of ``depth`` blocks."""
    kinds = ["attn", "mlp"] * depth
    blocks = [k for k in range(depth) for _ in range(2)]
    routers = [f"block{k}.{s}" for k in range(depth) for s in ("attn", "mlp")] + ["head"]
    return kinds, blocks, routers


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _jsonable(x: Any) -> Any:
    """Attributes as they will read back from JSON (tuples -> lists, numpy scalars -> Python)."""
    return json.loads(json.dumps(x, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _zarr():
    import zarr

    return zarr


def _open_group(path: Path, mode: str = "r"):
    """The zarr group at ``path``, or a StoreError saying why it is not one."""
    zarr = _zarr()
    if not path.exists():
        raise StoreError(f"no probe store at {path}: check the path (or run `dartool probe ... --out {path}`)")
    try:
        return zarr.open_group(str(path), mode=mode, zarr_format=3, use_consolidated=False)
    except Exception as e:  # noqa: BLE001 - turned into one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise StoreError(f"{path} is not a zarr v3 probe store ({first})") from None


def read_attrs(path: str | Path) -> dict[str, Any]:
    """The root attributes of a probe store (StoreError if ``path`` is not one)."""
    path = Path(path)
    attrs = dict(_open_group(path).attrs)
    if "schema_version" not in attrs:
        raise StoreError(f"{path} is a zarr group but not a dartool probe store (no schema_version attribute)")
    return attrs


def is_probe_store(path: str | Path) -> bool:
    try:
        read_attrs(path)
        return True
    except StoreError:
        return False


def _count_done(group) -> tuple[int, int]:
    try:
        done = np.asarray(group[f"{PROGRESS}/done"][:])
    except Exception:  # noqa: BLE001 - a store interrupted while being created
        return 0, 0
    return int(done.sum()), int(done.size)


def _quiet_consolidate(path: Path) -> None:
    zarr = _zarr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "consolidated metadata is not part of the v3 spec"
        zarr.consolidate_metadata(str(path))


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------


class ProbeStore:
    """An open, writable probe store (see the module docstring for the write protocol)."""

    def __init__(self, path: Path, layout: StoreLayout) -> None:
        self.path = path
        self.layout = layout
        self.group = _open_group(path, mode="r+")
        self._arrays: dict[str, Any] = {}

    # ------------------------------------------------------------------ state
    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self.group.attrs)

    @property
    def complete(self) -> bool:
        return self.group.attrs.get("status") == "complete"

    def _array(self, name: str):
        if name not in self._arrays:
            self._arrays[name] = self.group[name]
        return self._arrays[name]

    def done(self) -> np.ndarray:
        """bool [noise_level, batch]: which units are written."""
        return np.asarray(self._array(f"{PROGRESS}/done")[:]).astype(bool)

    def note_resume(self, info: Mapping[str, Any]) -> None:
        """Append ``{"time": now, **info}`` to the ``resumed`` attribute (a resumed run may use another device)."""
        self.group.attrs["resumed"] = [*self.group.attrs.get("resumed", []), {"time": _now(), **_jsonable(dict(info))}]

    # ------------------------------------------------------------------ writes
    def write_batch(
        self, b: int, levels: Sequence[int], per_sample: Mapping[str, np.ndarray],
        pooled: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Write batch ``b`` at noise-level indices ``levels`` (ascending).

        ``per_sample[name]`` is [len(levels), n_b, *dims] for every name of :data:`MEAN_VARS`;
        ``pooled[name]`` is [len(levels), m_b, *dims] for the batch's first m_b = its share of the pooled
        samples. The ``done`` flags are written last.
        """
        lay = self.layout
        start, stop = lay.batch_range(b)
        levels = list(levels)
        if levels != sorted(set(levels)) or not levels or levels[0] < 0 or levels[-1] >= lay.num_levels:
            raise ValueError(f"levels must be ascending indices in 0..{lay.num_levels - 1}, got {levels}")
        missing = set(MEAN_VARS) - set(per_sample)
        if missing:
            raise ValueError(f"write_batch: missing per-sample values {sorted(missing)}")
        p_stop = min(stop, lay.pooled_samples)
        for i0, i1, pos in _runs(levels):
            for name in MEAN_VARS:
                v = np.asarray(per_sample[name], dtype=np.float64)[pos]              # [n, n_b, *dims]
                if v.shape[1] != stop - start:
                    raise ValueError(f"{name}: {v.shape[1]} samples for batch {b}, expected {stop - start}")
                if name in PER_SAMPLE_VARS:
                    self._array(f"{name}_per_sample")[i0:i1, start:stop] = v.astype(np.float32)
                self._array(f"{PROGRESS}/sum_{name}")[i0:i1, b] = v.sum(1)
            if p_stop > start:
                for name in POOLED_VARS:
                    v = np.asarray((pooled or {})[name])[pos]
                    if v.shape[1] != p_stop - start:
                        raise ValueError(f"{name}: {v.shape[1]} pooled samples for batch {b}, expected {p_stop - start}")
                    self._array(name)[i0:i1, start:p_stop] = np.clip(v, -65504, 65504).astype(np.float16)
        for i0, i1, _ in _runs(levels):
            self._array(f"{PROGRESS}/done")[i0:i1, b] = 1

    def finalize(self) -> None:
        """Reduce the per-batch sums to sample means, consolidate, then mark the store complete."""
        done = self.done()
        if not done.all():
            raise StoreError(f"{self.path}: {int((~done).sum())} (noise level, batch) units are not written yet")
        n = self.layout.num_samples
        for name in MEAN_VARS:
            sums = np.asarray(self._array(f"{PROGRESS}/sum_{name}")[:], dtype=np.float64)  # [S, nb, ...]
            self._array(name)[...] = (sums.sum(axis=1) / n).astype(np.float32)
        _quiet_consolidate(self.path)
        # reopened *with* the consolidated metadata, so that rewriting the root attributes keeps it
        self.group = _zarr().open_group(str(self.path), mode="r+", zarr_format=3)
        self.group.attrs.update({"status": "complete", "completed": _now()})
        self._arrays.clear()


def _runs(levels: Sequence[int]) -> Iterable[tuple[int, int, slice]]:
    """Contiguous runs of ascending indices: (first, stop, positions in ``levels``)."""
    start = 0
    for j in range(1, len(levels) + 1):
        if j == len(levels) or levels[j] != levels[j - 1] + 1:
            yield levels[start], levels[j - 1] + 1, slice(start, j)
            start = j


def _create(path: Path, layout: StoreLayout, attrs: Mapping[str, Any], arrays: Mapping[str, tuple[str, Any]]) -> ProbeStore:
    """A fresh store. Marked ``status="creating"`` until every array exists."""
    zarr = _zarr()
    root = zarr.open_group(str(path), mode="w-", zarr_format=3)
    root.attrs.update({"schema_version": SCHEMA_VERSION, "status": "creating"})
    sizes = layout.dim_sizes()
    B, S = layout.batch_size, layout.num_levels

    def coord(name: str, dim: str, values: Any, dtype: Any = None) -> None:
        values = np.asarray(values, dtype=dtype)
        if values.shape != (sizes[dim],):
            raise ValueError(f"{name}: {values.shape[0]} values for dimension {dim} of length {sizes[dim]}")
        a = root.create_array(name, shape=values.shape, dtype=values.dtype if values.dtype.kind != "U" else str,
                              chunks=values.shape, dimension_names=[dim], chunk_key_encoding=FLAT_CHUNKS)
        a[:] = values

    # dimension coordinates
    coord("noise_level", "noise_level", layout.noise_levels, np.float64)
    for dim in ("block", "block2", "sublayer", "router", "source", "sample", "feature", "pooled_sample"):
        if dim in sizes:
            coord(dim, dim, np.arange(sizes[dim]), np.int64)
    # labels of the sublayer / router axes
    kinds, blocks, routers = sublayer_labels(layout.depth)
    coord("sublayer_kind", "sublayer", kinds)
    coord("sublayer_block", "sublayer", blocks, np.int64)
    coord("router_name", "router", routers)
    for name, (dim, values) in arrays.items():  # model_t, label, data_index, ...
        coord(name, dim, values)

    # data variables: per-sample arrays are chunked by batch, sample means are one chunk (written at close)
    for name, (dims, dtype) in layout.data_vars().items():
        shape = tuple(sizes[d] for d in dims)
        chunks = tuple(1 if d == "noise_level" else min(B, sizes[d]) if d in ("sample", "pooled_sample") else sizes[d]
                       for d in dims)
        if name in MEAN_VARS:
            chunks = shape
        root.create_array(name, shape=shape, dtype=dtype, chunks=chunks, fill_value=np.nan, dimension_names=list(dims),
                          chunk_key_encoding=FLAT_CHUNKS)

    # bookkeeping: one done flag and one chunk of sums per (noise level, batch)
    prog = root.create_group(PROGRESS)
    nb = layout.num_batches
    prog.create_array("done", shape=(S, nb), dtype="uint8", chunks=(1, 1), fill_value=0,
                      dimension_names=["noise_level", "batch"], chunk_key_encoding=FLAT_CHUNKS)
    for name, dims in MEAN_VARS.items():
        shape = (S, nb, *(sizes[d] for d in dims))
        prog.create_array(f"sum_{name}", shape=shape, dtype="float64", chunks=(1, 1, *shape[2:]),
                          fill_value=np.nan, dimension_names=["noise_level", "batch", *dims],
                          chunk_key_encoding=FLAT_CHUNKS)
    prog.attrs.update({"num_batches": nb, "batch_size": B})

    root.attrs.update({
        **_jsonable(dict(attrs)),
        "schema_version": SCHEMA_VERSION, "dartool_version": __version__, "created": _now(),
        "status": "in_progress", "num_samples": layout.num_samples, "batch_size": B,
        "pooled_samples": layout.pooled_samples, "projection_dim": layout.projection_dim,
        "noise_levels": [float(s) for s in layout.noise_levels],
    })
    return ProbeStore(path, layout)


def _remove_store(path: Path) -> None:
    """Delete ``path`` if it is a probe store (or an empty folder); refuse anything else."""
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()
        return
    if not is_probe_store(path):
        raise StoreError(f"{path} exists and is not a dartool probe store; refusing to overwrite it: choose another --out")
    shutil.rmtree(path)


def prepare_store(
    path: str | Path, layout: StoreLayout, attrs: Mapping[str, Any], arrays: Mapping[str, tuple[str, Any]] | None = None,
    *, overwrite: bool = False, resume: bool = False, match_keys: Sequence[str] = (),
) -> ProbeStore:
    """A store ready to write at ``path``.

    * nothing there (or an empty folder): a new store;
    * ``overwrite``: an existing probe store is deleted first (anything else at ``path`` is refused);
    * ``resume``: an unfinished store is reopened if its attributes ``match_keys`` equal ``attrs``; a complete
      one is returned as is (nothing left to do);
    * otherwise an existing store is refused with a one-line message naming the flag to pass.
    """
    path = Path(path)
    arrays = dict(arrays or {})
    if overwrite and resume:
        raise StoreError("pass either --overwrite (start over) or --resume (continue), not both")
    if path.exists() and not (path.is_dir() and not any(path.iterdir())):
        if overwrite:
            _remove_store(path)
        else:
            if not is_probe_store(path):
                raise StoreError(f"{path} exists and is not a dartool probe store; choose another --out")
            old = read_attrs(path)
            status = old.get("status")
            if not resume:
                if status == "complete":
                    raise StoreError(f"{path} already holds a complete probe; pass --overwrite to replace it")
                done, total = _count_done(_open_group(path))
                raise StoreError(f"{path} holds an unfinished probe ({done} of {total} units written); "
                                 f"pass --resume to continue it or --overwrite to start over")
            if status == "creating":
                raise StoreError(f"{path} was interrupted while being created; pass --overwrite to start over")
            _check_match(path, old, attrs, layout, match_keys)
            return ProbeStore(path, layout)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.rmdir()  # an empty folder
    return _create(path, layout, attrs, arrays)


def _check_match(path: Path, old: Mapping[str, Any], attrs: Mapping[str, Any], layout: StoreLayout,
                 keys: Sequence[str]) -> None:
    """Refuse to resume a store that was started with other settings."""
    if old.get("schema_version") != SCHEMA_VERSION:
        raise StoreError(f"{path} has schema version {old.get('schema_version')}; this dartool writes "
                         f"{SCHEMA_VERSION}: pass --overwrite to start over")
    new = _jsonable({**dict(attrs), "num_samples": layout.num_samples, "batch_size": layout.batch_size,
                     "pooled_samples": layout.pooled_samples, "projection_dim": layout.projection_dim,
                     "noise_levels": [float(s) for s in layout.noise_levels]})
    for k in [*keys, "num_samples", "batch_size", "pooled_samples", "projection_dim", "noise_levels"]:
        if old.get(k) != new.get(k):
            a, b = json.dumps(new.get(k))[:60], json.dumps(old.get(k))[:60]
            raise StoreError(f"{path} was started with other settings ({k}: {a} now vs {b} in the store); "
                             f"repeat the original settings to --resume, or pass --overwrite to start over")


# --------------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------------


def store_status(path: str | Path) -> dict[str, Any]:
    """{"status", "done", "total"} of a probe store."""
    path = Path(path)
    attrs = read_attrs(path)
    done, total = _count_done(_open_group(path))
    return {"status": attrs.get("status"), "done": done, "total": total}


def open_store(path: str | Path, allow_partial: bool = False):
    """The store as a labelled :class:`xarray.Dataset`, after checking schema version and completeness.

    Raises :class:`StoreError` (one line) for a missing path, a folder that is not a probe store, a store of
    another schema version, an unfinished store (unless ``allow_partial``), or a corrupt one. The small
    sample-mean arrays are loaded eagerly (so corruption shows here); per-sample arrays stay lazy.
    """
    import xarray as xr

    path = Path(path)
    attrs = read_attrs(path)
    version = attrs.get("schema_version")
    if version != SCHEMA_VERSION:
        raise StoreError(f"{path} has store schema version {version}; this dartool reads version {SCHEMA_VERSION}")
    status = attrs.get("status")
    if status != "complete" and not allow_partial:
        if status == "creating":
            raise StoreError(f"{path} was interrupted while being created and holds no results; rerun the probe with --overwrite")
        done, total = _count_done(_open_group(path))
        raise StoreError(f"{path} is an unfinished probe ({done} of {total} units written): finish it with "
                         f"`dartool probe ... --resume`, or read it with open_store(path, allow_partial=True)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # fallback to non-consolidated metadata
            ds = xr.open_zarr(str(path), consolidated=True if status == "complete" else False, zarr_format=3)
    except Exception as e:  # noqa: BLE001
        if status == "complete":
            try:  # complete but without consolidated metadata: read the plain metadata
                ds = xr.open_zarr(str(path), consolidated=False, zarr_format=3)
            except Exception as e2:  # noqa: BLE001
                raise StoreError(f"{path} is corrupt ({_first_line(e2)}); rerun the probe with --overwrite") from None
        else:
            raise StoreError(f"{path} is corrupt ({_first_line(e)}); rerun the probe with --overwrite") from None
    missing = [n for n in (*MEAN_VARS, "noise_level", "model_t")
               if n not in ds.variables or not (path / n / "zarr.json").exists()]
    if missing:
        raise StoreError(f"{path} is corrupt: missing arrays {missing}; rerun the probe with --overwrite")
    try:
        for name in MEAN_VARS:
            ds[name].load()
    except Exception as e:  # noqa: BLE001
        raise StoreError(f"{path} is corrupt: {name} cannot be read ({_first_line(e)}); rerun the probe with --overwrite") from None
    return ds


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


__all__ = [
    "SCHEMA_VERSION", "MEAN_VARS", "PER_SAMPLE_VARS", "POOLED_VARS", "StoreError", "StoreLayout", "ProbeStore",
    "prepare_store", "open_store", "read_attrs", "store_status", "is_probe_store", "sublayer_labels",
]
