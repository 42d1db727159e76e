"""The probe store: schema (against docs/STORE.md), chunk ownership, means, resume bookkeeping, errors."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr

from dartool.store import (
    MEAN_VARS, POOLED_VARS, ProbeStore, StoreError, StoreLayout, open_store, prepare_store, read_attrs, store_status,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "STORE.md"
ATTRS = {"model": "toy", "seed": 0, "data": "toy"}


def layout(**kw) -> StoreLayout:
    base = dict(noise_levels=(0.0, 0.5, 1.0), depth=2, num_samples=5, batch_size=2, pooled_samples=5, projection_dim=3)
    base.update(kw)
    return StoreLayout(**base)


def arrays(lay: StoreLayout) -> dict:
    return {"model_t": ("noise_level", 1 - np.asarray(lay.noise_levels)),
            "label": ("sample", np.arange(lay.num_samples) % 3), "data_index": ("sample", np.arange(lay.num_samples))}


def values(lay: StoreLayout, b: int, levels, seed: int = 0):
    """Per-sample values that encode (level, sample, ...) so misplaced writes are visible."""
    start, stop = lay.batch_range(b)
    sizes = lay.dim_sizes()
    rng = np.random.default_rng([seed, b])
    per = {}
    for name, dims in MEAN_VARS.items():
        shape = (len(levels), stop - start, *(sizes[d] for d in dims))
        v = rng.normal(size=shape)
        v += np.asarray(levels).reshape(-1, *([1] * (len(shape) - 1))) * 100
        v += np.arange(start, stop).reshape(1, -1, *([1] * (len(shape) - 2)))
        per[name] = v
    m = max(0, min(stop, lay.pooled_samples) - start)
    pooled = {name: rng.normal(size=(len(levels), m, *(sizes[d] for d in dims))) for name, dims in POOLED_VARS.items()}
    return per, pooled


def fill(store: ProbeStore, batches=None, seed: int = 0) -> dict:
    """Write every level of the given batches; returns the values written."""
    lay = store.layout
    written = {}
    for b in range(lay.num_batches) if batches is None else batches:
        per, pooled = values(lay, b, list(range(lay.num_levels)), seed)
        store.write_batch(b, list(range(lay.num_levels)), per, pooled)
        written[b] = (per, pooled)
    return written


def full_store(path: Path, **kw) -> tuple[ProbeStore, dict]:
    lay = layout(**kw)
    store = prepare_store(path, lay, ATTRS, arrays(lay))
    written = fill(store)
    store.finalize()
    return store, written


# --------------------------------------------------------------------------------------------------
# the schema as documented
# --------------------------------------------------------------------------------------------------


def doc_tables() -> tuple[list[str], dict[str, list[str]], list[str]]:
    """(dimension names, data variable -> dims, non-dimension 1-D arrays) as docs/STORE.md lists them."""
    text = DOC.read_text()
    sections = re.split(r"^## ", text, flags=re.M)
    dims_sec = next(s for s in sections if s.startswith("Dimensions and coordinates"))
    vars_sec = next(s for s in sections if s.startswith("Data variables"))
    dims = re.findall(r"^\| `(\w+)` \|", dims_sec, flags=re.M)
    data_vars = {}
    for name, rest in re.findall(r"^\| `(\w+)` \| ([^|]+)", vars_sec, flags=re.M):
        data_vars[name] = re.findall(r"\w+", rest.split("(")[0].split(":")[0])
    one_d = re.findall(r"`(\w+)\[(\w+)\]`", dims_sec)
    return dims, data_vars, [n for n, _ in one_d]


@pytest.mark.parametrize("pooled", [5, 3])
def test_xarray_open_zarr_gives_the_documented_dims_and_coords(tmp_path, pooled):
    full_store(tmp_path / "s.zarr", pooled_samples=pooled)
    ds = xr.open_zarr(tmp_path / "s.zarr")
    dims, data_vars, one_d = doc_tables()
    want = set(dims) - ({"pooled_sample"} if pooled == 5 else set())
    assert set(ds.dims) == want
    for d in want:
        assert d in ds.coords and ds[d].dims == (d,), d
    np.testing.assert_array_equal(ds.noise_level.values, [0.0, 0.5, 1.0])
    for d in ("block", "block2", "sublayer", "router", "source", "sample", "feature"):
        np.testing.assert_array_equal(ds[d].values, np.arange(ds.sizes[d]))
    assert ds.sizes["router"] == ds.sizes["source"] == ds.sizes["sublayer"] + 1 == 2 * ds.sizes["block"] + 1
    for name, ddims in data_vars.items():
        assert name in ds.data_vars, name
        if name in POOLED_VARS and pooled < 5:
            ddims = ["pooled_sample" if d == "sample" else d for d in ddims]
        assert list(ds[name].dims) == ddims, name
        assert ds[name].dtype == (np.float16 if name in POOLED_VARS else np.float32), name
    for name in one_d:
        assert name in ds.variables, name
    assert list(ds.sublayer_kind.values) == ["attn", "mlp", "attn", "mlp"]
    assert list(ds.router_name.values) == ["block0.attn", "block0.mlp", "block1.attn", "block1.mlp", "head"]
    assert list(ds.sublayer_block.values) == [0, 0, 1, 1]
    assert ds.attrs["status"] == "complete" and ds.attrs["schema_version"] == 1
    # a layer x timestep table for a heatmap, as the docs promise
    assert ds.z_rms.to_pandas().shape == (3, 2)


def test_docs_list_every_array_the_store_writes():
    _, data_vars, one_d = doc_tables()
    lay = layout(pooled_samples=3)
    assert set(lay.data_vars()) == set(data_vars)
    assert {"model_t", "sublayer_kind", "sublayer_block", "router_name", "label", "data_index"} <= set(one_d)


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------


def test_means_are_sample_means_over_uneven_batches(tmp_path):
    store, written = full_store(tmp_path / "s.zarr")
    ds = open_store(tmp_path / "s.zarr")
    for name in MEAN_VARS:
        allv = np.concatenate([written[b][0][name] for b in sorted(written)], axis=1)    # [S, N, ...]
        np.testing.assert_allclose(ds[name].values, allv.mean(1), rtol=1e-6, err_msg=name)
        if f"{name}_per_sample" in ds:
            np.testing.assert_allclose(ds[f"{name}_per_sample"].values, allv, rtol=1e-6, err_msg=name)
    pooled = np.concatenate([written[b][1]["pooled_h"] for b in sorted(written)], axis=1)
    np.testing.assert_allclose(ds.pooled_h.values, pooled, rtol=1e-3, atol=1e-3)


def test_nan_marks_undefined_entries(tmp_path):
    lay = layout()
    store = prepare_store(tmp_path / "s.zarr", lay, ATTRS, arrays(lay))
    for b in range(lay.num_batches):
        per, pooled = values(lay, b, [0, 1, 2])
        per["importance"][:, :, 0, 1:] = np.nan           # source i > r for router 0
        per["time_cos"][-1] = np.nan                      # no next level
        store.write_batch(b, [0, 1, 2], per, pooled)
    store.finalize()
    ds = open_store(tmp_path / "s.zarr")
    assert np.isnan(ds.importance.values[:, 0, 1:]).all() and np.isfinite(ds.importance.values[:, 1:]).all()
    assert np.isnan(ds.time_cos.values[-1]).all() and np.isfinite(ds.time_cos.values[:-1]).all()


def test_each_batch_writes_only_its_own_chunks(tmp_path):
    lay = layout(pooled_samples=3)
    store = prepare_store(tmp_path / "s.zarr", lay, ATTRS, arrays(lay))
    fill(store, batches=[1])
    files = [p.name for p in (tmp_path / "s.zarr" / "loss_per_sample").iterdir() if p.name.startswith("c")]
    assert sorted(files) == ["c.0.1", "c.1.1", "c.2.1"]            # (noise_level, batch 1) chunks only
    assert sorted(p.name for p in (tmp_path / "s.zarr" / "pooled_h").iterdir() if p.name.startswith("c")) == \
        ["c.0.1.0.0", "c.1.1.0.0", "c.2.1.0.0"]
    done = store.done()
    assert done[:, 1].all() and not done[:, [0, 2]].any()
    for name, (dims, _) in lay.data_vars().items():
        arr = store.group[name]
        if "sample" in dims or "pooled_sample" in dims:
            assert arr.chunks[:2] == (1, 2), name


def test_an_interrupted_write_is_redone_and_never_marked_done(tmp_path, monkeypatch):
    lay = layout()
    store = prepare_store(tmp_path / "s.zarr", lay, ATTRS, arrays(lay))
    fill(store, batches=[0])
    per, pooled = values(lay, 1, [0, 1, 2])
    real = store._array
    calls = []

    def failing(name):
        calls.append(name)
        if name == "progress/sum_block_cos":
            raise KeyboardInterrupt  # killed in the middle of batch 1
        return real(name)

    monkeypatch.setattr(store, "_array", failing)
    with pytest.raises(KeyboardInterrupt):
        store.write_batch(1, [0, 1, 2], per, pooled)
    monkeypatch.setattr(store, "_array", real)
    assert "loss_per_sample" in calls and not store.done()[:, 1].any()
    assert store_status(tmp_path / "s.zarr") == {"status": "in_progress", "done": 3, "total": 9}
    again = prepare_store(tmp_path / "s.zarr", lay, ATTRS, arrays(lay), resume=True)
    fill(again, batches=[1, 2])
    again.finalize()
    ds = open_store(tmp_path / "s.zarr")
    np.testing.assert_allclose(ds.loss_per_sample.values[:, 2:4], per["loss"], rtol=1e-6)


def test_finalize_refuses_missing_units_and_partial_reads(tmp_path):
    lay = layout()
    store = prepare_store(tmp_path / "s.zarr", lay, ATTRS, arrays(lay))
    fill(store, batches=[0, 2])
    with pytest.raises(StoreError, match="3 \\(noise level, batch\\) units are not written"):
        store.finalize()
    with pytest.raises(StoreError, match="unfinished probe \\(6 of 9 units written\\).*--resume.*allow_partial"):
        open_store(tmp_path / "s.zarr")
    ds = open_store(tmp_path / "s.zarr", allow_partial=True)
    assert np.isfinite(ds.loss_per_sample.values[:, :2]).all() and np.isnan(ds.loss_per_sample.values[:, 2:4]).all()
    assert np.isnan(ds.loss.values).all() and ds.attrs["status"] == "in_progress"


def test_consolidated_metadata_written_once_at_close(tmp_path):
    lay = layout()
    store = prepare_store(tmp_path / "s.zarr", lay, ATTRS, arrays(lay))
    assert "consolidated_metadata" not in json.loads((tmp_path / "s.zarr" / "zarr.json").read_text())
    fill(store)
    store.finalize()
    meta = json.loads((tmp_path / "s.zarr" / "zarr.json").read_text())
    assert "loss" in meta["consolidated_metadata"]["metadata"] and meta["attributes"]["status"] == "complete"
    assert xr.open_zarr(tmp_path / "s.zarr", consolidated=True).attrs["status"] == "complete"


# --------------------------------------------------------------------------------------------------
# create / resume / overwrite
# --------------------------------------------------------------------------------------------------


def test_existing_stores_are_refused_without_a_flag(tmp_path):
    lay = layout()
    path = tmp_path / "s.zarr"
    full_store(path)
    with pytest.raises(StoreError, match="complete probe; pass --overwrite"):
        prepare_store(path, lay, ATTRS, arrays(lay))
    assert prepare_store(path, lay, ATTRS, arrays(lay), resume=True).complete      # nothing left to do
    store = prepare_store(path, lay, {**ATTRS, "seed": 3}, arrays(lay), overwrite=True)
    assert not store.done().any() and read_attrs(path)["seed"] == 3
    with pytest.raises(StoreError, match="pass --resume to continue it or --overwrite to start over"):
        prepare_store(path, lay, ATTRS, arrays(lay))
    with pytest.raises(StoreError, match="other settings \\(seed: 0 now vs 3"):
        prepare_store(path, lay, ATTRS, arrays(lay), resume=True, match_keys=["seed"])
    with pytest.raises(StoreError, match="other settings \\(num_samples"):
        prepare_store(path, layout(num_samples=6), {**ATTRS, "seed": 3}, arrays(layout(num_samples=6)), resume=True)
    with pytest.raises(StoreError, match="not both"):
        prepare_store(path, lay, ATTRS, arrays(lay), resume=True, overwrite=True)


def test_overwrite_never_deletes_something_else(tmp_path):
    lay = layout()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    for flags in ({}, {"overwrite": True}, {"resume": True}):
        with pytest.raises(StoreError, match="not a dartool probe store"):
            prepare_store(other, lay, ATTRS, arrays(lay), **flags)
    assert (other / "thesis.tex").read_text() == "precious"
    empty = tmp_path / "empty.zarr"
    empty.mkdir()
    prepare_store(empty, lay, ATTRS, arrays(lay))                                   # an empty folder is fine
    assert read_attrs(empty)["status"] == "in_progress"


def test_a_store_interrupted_while_being_created(tmp_path):
    lay = layout()
    path = tmp_path / "s.zarr"
    g = zarr.open_group(str(path), mode="w", zarr_format=3)
    g.attrs.update({"schema_version": 1, "status": "creating"})
    with pytest.raises(StoreError, match="interrupted while being created; pass --overwrite"):
        prepare_store(path, lay, ATTRS, arrays(lay), resume=True)
    with pytest.raises(StoreError, match="interrupted while being created"):
        open_store(path)
    prepare_store(path, lay, ATTRS, arrays(lay), overwrite=True)


# --------------------------------------------------------------------------------------------------
# reading errors
# --------------------------------------------------------------------------------------------------


def test_open_store_errors_are_one_clear_line(tmp_path):
    with pytest.raises(StoreError, match="no probe store at"):
        open_store(tmp_path / "nope.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(StoreError, match="not a zarr v3 probe store"):
        open_store(tmp_path / "plain")
    (tmp_path / "file.zarr").write_text("hello")
    with pytest.raises(StoreError, match="not a zarr v3 probe store"):
        open_store(tmp_path / "file.zarr")
    zarr.open_group(str(tmp_path / "other.zarr"), mode="w", zarr_format=3).attrs["x"] = 1
    with pytest.raises(StoreError, match="not a dartool probe store \\(no schema_version"):
        open_store(tmp_path / "other.zarr")
    full_store(tmp_path / "v2.zarr")
    zarr.open_group(str(tmp_path / "v2.zarr"), mode="r+").attrs["schema_version"] = 2
    with pytest.raises(StoreError, match="schema version 2; this dartool reads version 1"):
        open_store(tmp_path / "v2.zarr")
    for err in (StoreError("x"),):
        assert isinstance(err, ValueError)


def test_a_corrupt_store_is_reported(tmp_path):
    full_store(tmp_path / "s.zarr")
    (tmp_path / "s.zarr" / "z_rms" / "c.0.0").write_bytes(b"garbage")
    with pytest.raises(StoreError, match="corrupt: z_rms cannot be read"):
        open_store(tmp_path / "s.zarr")
    full_store(tmp_path / "t.zarr")
    for p in (tmp_path / "t.zarr" / "loss").iterdir():
        p.unlink()
    (tmp_path / "t.zarr" / "loss").rmdir()
    with pytest.raises(StoreError, match="corrupt"):
        open_store(tmp_path / "t.zarr")


def test_layout_validation():
    with pytest.raises(ValueError, match="strictly ascending"):
        layout(noise_levels=(0.5, 0.1))
    with pytest.raises(ValueError, match="pooled_samples"):
        layout(pooled_samples=9)
    lay = layout(num_samples=5, batch_size=2)
    assert lay.num_batches == 3 and lay.batch_range(2) == (4, 5)
