"""Shared pieces of the analyses: loading a probe store, the :class:`Result` every analysis returns,
tidy-table helpers and human labels.

Conventions used by every analysis (see docs/STORE.md for the store itself):

* Tables are *tidy* (long) pandas DataFrames: one row per (noise_level, block, metric, value), so that
  ``table.pivot(index="block", columns="noise_level", values="value")`` is directly a heatmap.
* **Block numbers in tables, findings and figures are 1-based** ("block 1 .. K"): ``block = store index + 1``.
  ``block2`` (the second axis of the block x block matrix) likewise. Sublayer, router and source columns keep
  the store's 0-based index and come with a 1-based human name (``b3.attn``, ``head``, ``embed``).
* ``noise_level`` is the canonical noise level s in [0, 1], **0 = data, 1 = pure noise**.
* "Early" blocks are the first ``n_early(K) = max(1, round(K / 5))`` blocks; "deep" blocks are the rest.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Union

import numpy as np
import pandas as pd
import xarray as xr

StoreLike = Union[str, Path, xr.Dataset]

# The paper's reference point: SiT t = 1.0 is noise level 0 (DAR-METHOD.md section 6).
DEFAULT_NOISE_LEVEL = 0.0


class StoreContentError(ValueError):
    """A store lacks something an analysis needs (one line, says what and why)."""


@dataclass
class Result:
    """What every analysis returns.

    ``tables``: tidy DataFrames by name; ``verdict``: short numeric/boolean summary (flat dict of
    float | str | bool); ``findings``: sentences stating each symptom with its number.
    """

    name: str
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    verdict: dict[str, Any] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)

    def verdict_frame(self) -> pd.DataFrame:
        """The verdict as a two-column table (key, value)."""
        return pd.DataFrame({"key": list(self.verdict), "value": [self.verdict[k] for k in self.verdict]})


# ----------------------------------------------------------------------------------------------- loading


def load(store: StoreLike, allow_partial: bool = False) -> xr.Dataset:
    """A probe store as an in-memory xarray Dataset.

    ``store`` is a path to a zarr v3 probe store or an already-open ``xr.Dataset`` (returned as is).
    A store whose ``status`` attribute is ``"in_progress"`` is refused unless ``allow_partial``.
    """
    if isinstance(store, xr.Dataset):
        ds = store
    else:
        ds = _open_path(Path(store), allow_partial)
    _check_status(ds, allow_partial)
    if ds.attrs.get("status") not in (None, "complete"):
        ds = fill_partial_means(ds)
    return _decode_attrs(ds)


def fill_partial_means(ds: xr.Dataset) -> xr.Dataset:
    """In an unfinished store the sample means are NaN until the probe closes: recompute every all-NaN mean
    that has a ``{name}_per_sample`` array as the NaN-mean over the samples written so far."""
    for name in list(ds.data_vars):
        per = f"{name}_per_sample"
        if per in ds.variables and not has_values(ds, name) and has_values(ds, per):
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices of unwritten units
                ds[name] = ds[per].mean("sample", skipna=True).transpose(*ds[name].dims).astype(ds[name].dtype)
    return ds


def _open_path(path: Path, allow_partial: bool) -> xr.Dataset:
    """Open a store folder with :func:`dartool.store.open_store` (schema and completeness checks), load it."""
    if not path.exists():
        raise FileNotFoundError(f"probe store {path} does not exist")
    try:
        from dartool.store import open_store, read_attrs
    except ImportError:  # pragma: no cover - the store module ships with dartool
        open_store = None
    if open_store is not None:
        try:
            status = read_attrs(path).get("status")
        except Exception:  # noqa: BLE001 - open_store gives the one-line message for unreadable stores
            status = None
        if status == "in_progress" and not allow_partial:
            raise StoreContentError(f"{path} is an unfinished probe: finish it with `dartool probe ... --resume`, "
                                    "or pass --partial to report what it holds so far")
        ds = open_store(path, allow_partial=allow_partial)
    else:  # pragma: no cover
        try:
            ds = xr.open_zarr(path, consolidated=None, zarr_format=3)
        except Exception as e:  # noqa: BLE001 - any failure to open is one user-facing line
            raise StoreContentError(f"{path} is not a readable zarr v3 probe store ({type(e).__name__}: {e})") from e
    ds = ds.load()
    ds.attrs.setdefault("store_path", str(path))
    return ds


def _check_status(ds: xr.Dataset, allow_partial: bool) -> None:
    version = ds.attrs.get("schema_version")
    if version is not None and int(version) > 1:
        raise StoreContentError(
            f"store {store_name(ds)} has schema_version {version}; this dartool reads version 1 (upgrade dartool)")
    if ds.attrs.get("status") == "in_progress" and not allow_partial:
        raise StoreContentError(
            f"store {store_name(ds)} is still in progress (status 'in_progress'); finish or resume the probe, "
            "or pass --partial to read what is there")


def _decode_attrs(ds: xr.Dataset) -> xr.Dataset:
    """Attributes that were stored as JSON strings (e.g. ``config``) become dicts."""
    for key in ("config",):
        val = ds.attrs.get(key)
        if isinstance(val, str) and val.startswith("{"):
            try:
                ds.attrs[key] = json.loads(val)
            except json.JSONDecodeError:
                pass
    return ds


def store_name(ds: xr.Dataset) -> str:
    """A short name for messages: the store path or the model label."""
    return str(ds.attrs.get("store_path") or ds.attrs.get("model") or "<dataset>")


def require(ds: xr.Dataset, names: Iterable[str], analysis: str) -> None:
    """Raise :class:`StoreContentError` naming the first missing variable."""
    for name in names:
        if name not in ds.variables:
            raise StoreContentError(
                f"{analysis}: store {store_name(ds)} has no variable {name!r} (the store may be from an older "
                "probe; re-run `dartool probe`)")


def has_values(ds: xr.Dataset, name: str) -> bool:
    """True when variable ``name`` exists and is not all-NaN."""
    return name in ds.variables and bool(np.isfinite(np.asarray(ds[name].values, dtype=float)).any())


# ----------------------------------------------------------------------------------------------- axes


def depth(ds: xr.Dataset) -> int:
    """K, the number of blocks."""
    if "block" in ds.sizes:
        return int(ds.sizes["block"])
    if "sublayer" in ds.sizes:
        return int(ds.sizes["sublayer"]) // 2
    raise StoreContentError(f"store {store_name(ds)} has no 'block' dimension")


def n_early(num_blocks: int) -> int:
    """The number of "early" blocks: max(1, round(K / 5)) (K = 28 -> 6, K = 12 -> 2)."""
    return max(1, int(round(num_blocks / 5)))


def noise_levels(ds: xr.Dataset) -> np.ndarray:
    return np.asarray(ds["noise_level"].values, dtype=float)


def nearest_noise_level(ds: xr.Dataset, s: float | None) -> float:
    """The store's noise level nearest to ``s`` (default: :data:`DEFAULT_NOISE_LEVEL`)."""
    grid = noise_levels(ds)
    if grid.size == 0:
        raise StoreContentError(f"store {store_name(ds)} has no noise levels")
    s = DEFAULT_NOISE_LEVEL if s is None else float(s)
    return float(grid[int(np.argmin(np.abs(grid - s)))])


def fmt_s(s: float) -> str:
    """A noise level for text: 0.0, 0.25, 0.032."""
    return f"{s:.3g}" if s not in (0.0, 1.0) else f"{s:.1f}"


def sublayer_label(sub: int) -> str:
    """Human name of sublayer ``sub`` (0-based): ``b1.attn``, ``b1.mlp``, ``b2.attn`` ..."""
    return f"b{sub // 2 + 1}.{'attn' if sub % 2 == 0 else 'mlp'}"


def router_label(r: int, num_sublayers: int) -> str:
    """Router r reads into sublayer r, or into the head when r = L."""
    return "head" if r >= num_sublayers else sublayer_label(r)


def source_label(i: int) -> str:
    """Source 0 is the embedding h_0; source i >= 1 is the output of sublayer i - 1."""
    return "embed" if i == 0 else sublayer_label(i - 1)


def router_block(r: int, num_sublayers: int) -> int:
    """The 1-based block that router r feeds (the head router counts as block K + 1)."""
    return r // 2 + 1 if r < num_sublayers else num_sublayers // 2 + 1


def block_router(block_1based: int) -> int:
    """The router that builds the input of the *attention* of a 1-based block: 2 (b - 1)."""
    return 2 * (int(block_1based) - 1)


# ----------------------------------------------------------------------------------------------- tables


def tidy(da: xr.DataArray, metric: str) -> pd.DataFrame:
    """A DataArray as a long table with columns (its dims..., metric, value); block dims become 1-based."""
    df = da.drop_vars([c for c in da.coords if c not in da.dims]).to_dataframe(name="value").reset_index()
    for col in ("block", "block2"):
        if col in df:
            df[col] = df[col].astype(int) + 1
    df.insert(len(da.dims), "metric", metric)
    df["value"] = df["value"].astype(float)
    return df


def per_block_values(ds: xr.Dataset, name: str) -> np.ndarray:
    """Variable ``name`` [noise_level, block] as a float64 array."""
    return np.asarray(ds[name].transpose("noise_level", "block").values, dtype=float)


def log_slope(values: np.ndarray) -> float:
    """Least-squares slope of ln(values) against the block index (natural log per block)."""
    y = np.log(np.asarray(values, dtype=float))
    ok = np.isfinite(y)
    if ok.sum() < 2:
        return float("nan")
    x = np.arange(len(y), dtype=float)[ok]
    return float(np.polyfit(x, y[ok], 1)[0])


def times(x: float) -> str:
    """A ratio for text: 97x, 3.2x, 1.05x."""
    if not np.isfinite(x):
        return "n/a"
    if x >= 100:
        return f"{x:,.0f}×"
    if x >= 10:
        return f"{x:.0f}×"
    return f"{x:.2g}×" if x < 0.995 else f"{x:.2f}×"


def sci(x: float) -> str:
    """A magnitude for text: 15.5, 1.58e+03, 5.1e-07."""
    if not np.isfinite(x):
        return "n/a"
    ax = abs(x)
    return f"{x:.3g}" if (ax == 0 or 1e-2 <= ax < 1e4) else f"{x:.2e}"


def clean_float(x: Any) -> Any:
    """numpy scalars -> Python floats/bools (so verdicts compare and serialise simply)."""
    if isinstance(x, (np.bool_, bool)):
        return bool(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return float(x)
    return x


def finite_or_nan(x: float) -> float:
    return float(x) if x is not None and math.isfinite(float(x)) else float("nan")
