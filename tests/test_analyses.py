"""The analyses on synthetic stores with known answers (tests/synthetic.py builds them per docs/STORE.md)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

from analyses import comparison, decodability, gradient_decay, inflation, redundancy, routing
from analyses.common import StoreContentError, load, n_early, tidy
from tests.synthetic import decaying_gradients, inflating, make_store, write_store

# ------------------------------------------------------------------------------------------- inflation


def test_inflation_exact_geometric_stack():
    K, S, c, g = 8, 5, 3.0, 1.5
    r = inflation.analyze(make_store(K=K, S=S, z_rms=inflating(S, K, c=c, g=g)))
    v = r.verdict
    assert v["ratio_last_first"] == pytest.approx(g ** (K - 1), rel=1e-5)
    assert v["log_slope"] == pytest.approx(math.log(g), rel=1e-5)
    assert v["growth_per_block"] == pytest.approx(g, rel=1e-5)
    assert v["monotone_fraction"] == 1.0
    assert v["inflating"] is True and v["inflating_fraction"] == 1.0
    table = r.tables["per_noise_level"]
    assert np.allclose(table.ratio_last_first, g ** (K - 1), rtol=1e-5)
    assert table.inflating.all()


def test_inflation_flat_stack_is_not_inflating():
    K, S = 8, 5
    rng = np.random.default_rng(0)
    for z in (np.full((S, K), 4.0), 4.0 * (1 + 0.01 * rng.standard_normal((S, K)))):
        v = inflation.analyze(make_store(K=K, S=S, z_rms=z)).verdict
        assert v["inflating"] is False
        assert v["ratio_last_first"] == pytest.approx(1.0, abs=0.05)
        assert abs(v["log_slope"]) < 0.01
    assert inflation.analyze(make_store(K=K, S=S, z_rms=np.full((S, K), 4.0))).verdict["monotone_fraction"] == 0.0


def test_inflation_finding_states_the_number_in_words():
    K, S = 28, 4
    g = 97.0 ** (1 / (K - 1))
    r = inflation.analyze(make_store(K=K, S=S, N=4, z_rms=inflating(S, K, c=15.5, g=g)), noise_level=0.0)
    assert r.findings[0].startswith("hidden-state RMS grows 97× from block 1 to 28 at noise level 0.0")


def test_inflation_tidy_table_pivots_to_a_heatmap_with_1_based_blocks():
    K, S = 6, 5
    r = inflation.analyze(make_store(K=K, S=S))
    t = r.tables["by_block"]
    assert list(t.columns) == ["noise_level", "block", "metric", "value"]
    grid = t.pivot(index="block", columns="noise_level", values="value")
    assert grid.shape == (K, S) and list(grid.index) == list(range(1, K + 1))


def test_reference_noise_level_is_the_nearest_grid_point():
    z = inflating(5, 6)
    z[-1] = 1.0  # flat at noise level 1
    ds = make_store(K=6, S=5, z_rms=z)
    assert inflation.analyze(ds, noise_level=0.9).verdict["noise_level"] == 1.0
    assert inflation.analyze(ds, noise_level=0.9).verdict["ratio_last_first"] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------- gradients


def test_gradient_decay_step_function():
    K, S = 12, 4
    ne = n_early(K)
    assert (n_early(28), n_early(12), n_early(3)) == (6, 2, 1)
    v = gradient_decay.analyze(make_store(K=K, S=S, z_grad_rms=decaying_gradients(S, K, ne, 1e-3, 1e-5))).verdict
    assert v["ratio_early_deep"] == pytest.approx(100.0, rel=1e-4)
    assert v["drop_block"] == ne + 1
    assert v["drop_factor"] == pytest.approx(100.0, rel=1e-4)
    assert v["decaying"] is True


def test_gradient_decay_drop_location_and_flat():
    K, S = 10, 3
    g = np.tile(np.array([1.0, 0.9, 0.8, 0.7, 0.07, 0.06, 0.05, 0.05, 0.05, 0.05]), (S, 1))
    v = gradient_decay.analyze(make_store(K=K, S=S, z_grad_rms=g)).verdict
    assert v["drop_block"] == 5 and v["drop_factor"] == pytest.approx(10.0, rel=1e-4)
    flat = gradient_decay.analyze(make_store(K=K, S=S, z_grad_rms=np.full((S, K), 2e-4))).verdict
    assert flat["ratio_early_deep"] == pytest.approx(1.0) and flat["decaying"] is False


# ------------------------------------------------------------------------------------------- redundancy


def _block_diagonal(sizes, within=1.0, across=0.0):
    K = sum(sizes)
    m = np.full((K, K), across)
    i = 0
    for n in sizes:
        m[i:i + n, i:i + n] = within
        i += n
    np.fill_diagonal(m, 1.0)
    return m


def test_effective_blocks_known_matrices():
    assert redundancy.participation_ratio(np.eye(7)) == pytest.approx(7.0)
    assert redundancy.participation_ratio(np.ones((7, 7))) == pytest.approx(1.0)
    assert redundancy.participation_ratio(_block_diagonal([3, 3, 3])) == pytest.approx(3.0)
    assert redundancy.clusters_at(_block_diagonal([2, 4, 3], within=0.95, across=0.2)) == 3
    assert redundancy.clusters_at(np.eye(5)) == 5
    assert redundancy.clusters_at(np.ones((5, 5))) == 1


def test_redundancy_on_stores():
    K, S = 10, 3
    red = redundancy.analyze(make_store(K=K, S=S, adjacent_cos=np.full((S, K), 0.97),
                                        block_cos=np.tile(_block_diagonal([5, 5]), (S, 1, 1))))
    assert red.verdict["redundant"] is True
    assert red.verdict["deep_adjacent_cos"] == pytest.approx(0.97, rel=1e-5)
    assert red.verdict["effective_blocks"] == pytest.approx(2.0)
    assert red.verdict["clusters_at_0.9"] == 2
    distinct = redundancy.analyze(make_store(K=K, S=S, adjacent_cos=np.full((S, K), 0.3),
                                             block_cos=np.tile(np.eye(K), (S, 1, 1))))
    assert distinct.verdict["redundant"] is False and distinct.verdict["effective_blocks"] == pytest.approx(K)
    assert set(red.tables["block_matrix"].block2) == set(range(1, K + 1))


# ------------------------------------------------------------------------------------------- routing


def test_routing_default_blocks():
    assert routing.default_blocks(28) == [3, 13]
    assert routing.default_blocks(13) == [3, 13]
    assert routing.default_blocks(12) == [3, 6]
    assert routing.default_blocks(2) == [1]


def test_routing_dar_alpha_top_sources_move_with_noise():
    K, S = 6, 5
    r = routing.analyze(make_store(K=K, S=S, routing="dar"), blocks=[3])
    v = r.verdict
    assert v["kind"] == "alpha"
    # synthetic.py: the embedding wins at noise level 1; at 0 source r - 1 wins (router 4 -> source 3 = b2.attn)
    assert v["block3_top_source_high"] == "embed"
    assert v["block3_top_source_low"] == "b2.attn"
    assert v["block3_top_source_changes"] == 1
    t = r.tables["source_map"]
    assert set(t.source_name) == {"embed", "b1.attn", "b1.mlp", "b2.attn", "b2.mlp"}  # router 4 reads 0..4
    sums = t.groupby("noise_level").value.sum()
    assert np.allclose(sums, 1.0, atol=1e-5)


def test_routing_uniform_alpha_has_full_entropy_and_residual_uses_importance():
    K, S = 4, 3
    ds = make_store(K=K, S=S, routing="dar")
    valid = np.isfinite(ds["alpha"].values)
    uni = np.where(valid, 1.0 / valid.sum(-1, keepdims=True), np.nan)
    ds["alpha"] = (ds["alpha"].dims, uni.astype(np.float32))
    ds = ds.drop_vars("alpha_entropy")
    v = routing.analyze(ds).verdict
    assert v["mean_normalized_entropy"] == pytest.approx(1.0, rel=1e-5)
    assert routing.analyze(make_store(K=K, S=S)).verdict["kind"] == "importance"
    with pytest.raises(StoreContentError, match="neither 'alpha'"):
        routing.analyze(make_store(K=K, S=S, drop=("alpha", "importance")))


# ------------------------------------------------------------------------------------------- decodability


def test_decodability_linear_features_give_r2_near_one_and_noise_near_zero():
    sig = decodability.analyze(make_store(K=4, S=8, N=40, P=16, decodable=True))
    r2 = sig.tables["r2"]
    assert (r2[r2.router >= 4].r2 > 0.98).all()
    assert sig.verdict["median_r2_deep"] > 0.98 or np.isnan(sig.verdict["median_r2_deep"])
    noise = decodability.analyze(make_store(K=4, S=8, N=40, P=16, decodable=False))
    assert abs(noise.verdict["baseline_r2"]) < 0.2
    assert (noise.tables["r2"].r2.abs() < 0.2).all()
    assert noise.verdict["first_router_above_0.95"] == "none"


def test_decodability_split_is_disjoint_and_pooled_sample_dim_works():
    train, test = decodability.split_samples(20, 0.25, seed=3)
    assert len(test) == 5 and not set(train) & set(test) and len(train) + len(test) == 20
    r = decodability.analyze(make_store(K=3, S=6, N=24, pooled_samples=12, P=8))
    assert int(r.verdict["n_train_samples"]) + int(r.verdict["n_test_samples"]) == 12
    with pytest.raises(StoreContentError, match="pooled_h"):
        decodability.analyze(make_store(K=3, S=6, drop=("pooled_h",)))


# ------------------------------------------------------------------------------------------- comparison


def _mini(z: np.ndarray, loss: np.ndarray, seed: int = 0, label: str = "arm") -> xr.Dataset:
    """A store with only the per-sample arrays the comparison reads: z [S, N, K], loss [S, N]."""
    S, N, K = z.shape
    ds = xr.Dataset(
        {"z_rms_per_sample": (("noise_level", "sample", "block"), z),
         "loss_per_sample": (("noise_level", "sample"), loss)},
        coords={"noise_level": np.linspace(0, 1, S), "sample": np.arange(N), "block": np.arange(K)})
    ds.attrs.update(model=label, seed=seed, data="synthetic", status="complete", schema_version=1)
    return ds


def test_comparison_bootstrap_ci_covers_true_difference_unpaired():
    rng = np.random.default_rng(0)
    S, N, K, mu_a, mu_b, sd = 2, 40, 3, 2.0, 2.5, 0.8
    hits = hits_ratio = 0
    for rep in range(100):
        a = _mini(rng.normal(mu_a, sd, (S, N, K)), rng.normal(1.0, 0.2, (S, N)), seed=rep, label="A")
        b = _mini(rng.normal(mu_b, sd, (S, N, K)), rng.normal(1.0, 0.2, (S, N)), seed=rep + 1000, label="B")
        r = comparison.compare(a, b, n_boot=300, seed=rep)
        d = r.tables["differences"]
        cell = d[(d.metric == "z_rms") & (d.block == 2)].iloc[0]
        hits += cell.diff_lo <= mu_b - mu_a <= cell.diff_hi
        hits_ratio += cell.log_ratio_lo <= math.log(mu_b / mu_a) <= cell.log_ratio_hi
        assert "unpaired" in r.verdict["method"]
    assert hits >= 85 and hits_ratio >= 85


def test_comparison_paired_bootstrap_covers_and_is_tighter():
    rng = np.random.default_rng(1)
    S, N, K, delta = 2, 40, 2, 0.3
    hits, widths_p, widths_u = 0, [], []
    for rep in range(100):
        base = rng.normal(3.0, 1.0, (S, N, K))
        a = _mini(base, np.ones((S, N)), seed=7, label="A")
        b = _mini(base + delta + rng.normal(0, 0.1, (S, N, K)), np.ones((S, N)), seed=7, label="B")
        r = comparison.compare(a, b, n_boot=300, seed=rep)
        assert "paired" in r.verdict["method"] and "unpaired" not in r.verdict["method"]
        cell = r.tables["differences"].query("metric == 'z_rms' and block == 1").iloc[0]
        hits += cell.diff_lo <= delta <= cell.diff_hi
        widths_p.append(cell.diff_hi - cell.diff_lo)
        if rep < 5:
            u = comparison.compare(a, b, n_boot=300, seed=rep, paired=False)
            uc = u.tables["differences"].query("metric == 'z_rms' and block == 1").iloc[0]
            widths_u.append(uc.diff_hi - uc.diff_lo)
    assert hits >= 85
    assert np.mean(widths_p[:5]) < 0.5 * np.mean(widths_u)


def test_comparison_over_seeds_t_interval_covers():
    rng = np.random.default_rng(2)
    S, N, K, mu_a, mu_b, sd_seed = 2, 8, 2, 5.0, 6.0, 0.5
    hits = 0
    for rep in range(100):
        arm_a = [_mini(rng.normal(mu_a, sd_seed) + 0.01 * rng.standard_normal((S, N, K)), np.ones((S, N)), i, "A")
                 for i in range(3)]
        arm_b = [_mini(rng.normal(mu_b, sd_seed) + 0.01 * rng.standard_normal((S, N, K)), np.ones((S, N)), i, "B")
                 for i in range(3)]
        r = comparison.compare(arm_a, arm_b)
        assert r.verdict["method"].startswith("Welch t over seeds (3 vs 3")
        cell = r.tables["differences"].query("metric == 'z_rms' and block == 1 and noise_level == 0").iloc[0]
        hits += cell.diff_lo <= mu_b - mu_a <= cell.diff_hi
    assert hits >= 85


def test_comparison_headline_and_errors():
    K, S = 6, 4
    a = make_store(K=K, S=S, z_rms=inflating(S, K, g=1.5), rel_spread=0.0, model="A")
    b = make_store(K=K, S=S, z_rms=inflating(S, K, g=1.1), rel_spread=0.0, model="B")
    r = comparison.compare(a, b, n_boot=200)
    h = r.tables["headline"].set_index("statistic")
    assert h.loc[f"RMS growth, block 1 → {K}", "estimate"] == pytest.approx((1.1 / 1.5) ** (K - 1), rel=1e-4)
    assert bool(h.loc[f"RMS growth, block 1 → {K}", "significant"])
    assert any("RMS growth" in f for f in r.findings)
    with pytest.raises(StoreContentError, match="noise-level grids"):
        comparison.compare(a, make_store(K=K, S=S + 1))
    with pytest.raises(StoreContentError, match="per-sample"):
        comparison.compare(a.drop_vars([v for v in a.data_vars if v.endswith("_per_sample")]), b)


# ------------------------------------------------------------------------------------------- loading


def test_missing_variable_message_names_it():
    with pytest.raises(StoreContentError, match=r"no variable 'z_rms'.*older probe"):
        inflation.analyze(make_store(drop=("z_rms",)))


def test_load_refuses_unfinished_store_and_reads_zarr(tmp_path):
    with pytest.raises(StoreContentError, match="in progress"):
        load(make_store(status="in_progress"))
    assert load(make_store(status="in_progress"), allow_partial=True).attrs["status"] == "in_progress"
    unfinished = make_store(K=5, S=4, status="in_progress")
    unfinished["z_rms"][:] = float("nan")  # an unfinished probe has NaN sample means ...
    ppath = write_store(unfinished, tmp_path / "partial.zarr")
    with pytest.raises(StoreContentError, match="--partial"):
        load(ppath)
    part = load(ppath, allow_partial=True)  # ... which are recomputed from the per-sample arrays
    assert np.allclose(part["z_rms"].values, make_store(K=5, S=4)["z_rms"].values, rtol=1e-5)
    path = write_store(make_store(K=5, S=4), tmp_path / "s.zarr")
    ds = load(path)
    assert ds.sizes["block"] == 5 and isinstance(ds.attrs["config"], dict)
    assert inflation.analyze(path).verdict["inflating"] is True


def test_tidy_makes_blocks_one_based():
    t = tidy(make_store(K=3, S=2)["block_cos"], "block_cos")
    assert t.block.min() == 1 and t.block2.max() == 3 and list(t.columns[-2:]) == ["metric", "value"]
