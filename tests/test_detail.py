"""The high-frequency detail measure (dartool.detail) against answers known by construction."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dartool.detail import hf_energy, hf_energy_ratio, white_noise_share


def test_white_noise_share_is_the_grid_fraction_beyond_the_cutoff():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((400, 32, 32))
    for cutoff in (0.25, 0.5, 0.9):
        assert hf_energy(noise, cutoff) == pytest.approx(white_noise_share(32, 32, cutoff), abs=0.004)
    # the continuous limit: 1 - pi r0^2 for r0 = cutoff / 2 <= 0.5
    assert white_noise_share(256, 256, 0.5) == pytest.approx(1 - np.pi * 0.25**2, abs=2e-3)


def test_single_frequency_images_are_all_low_or_all_high():
    yy, xx = np.mgrid[:32, :32]
    low = np.cos(2 * np.pi * 2 * xx / 32)[None]        # 2/32 = 0.0625 cycles / px
    high = np.cos(2 * np.pi * 12 * yy / 32)[None]      # 0.375 cycles / px
    assert hf_energy(low, 0.5) == pytest.approx(0.0, abs=1e-12)
    assert hf_energy(high, 0.5) == pytest.approx(1.0, abs=1e-12)


def test_blurring_lowers_the_ratio_and_layouts_agree():
    rng = np.random.default_rng(1)
    data = rng.integers(0, 256, (64, 16, 16, 3), dtype=np.uint8)
    x = torch.from_numpy(data).permute(0, 3, 1, 2).float()
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1).permute(0, 2, 3, 1).numpy()
    assert hf_energy_ratio(blurred, data) < 0.5
    assert hf_energy_ratio(data, data) == pytest.approx(1.0)
    assert hf_energy(data) == pytest.approx(hf_energy(np.ascontiguousarray(data.transpose(0, 3, 1, 2))))
    with pytest.raises(ValueError, match="cutoff"):
        hf_energy(data, cutoff=0)
