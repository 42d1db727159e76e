"""The ``dartool probe`` command (typer). The work is done by :func:`dartool.probe.run_probe`."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer


def _levels(text: Optional[str]) -> Optional[list[float]]:
    if text is None:
        return None
    try:
        return [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ValueError(f"--noise-levels {text!r}: give comma-separated numbers in [0, 1], e.g. 0,0.5,1") from None


def probe(
    checkpoint: Path = typer.Argument(..., help="A DiT / SiT / REPA / dartool checkpoint (.pt, .pth, .safetensors)."),
    out: Path = typer.Option(..., "--out", "-o", help="The zarr v3 store to write (a folder, e.g. probe.zarr)."),
    data: Optional[str] = typer.Option(
        None, "--data",
        help="Images as an npz of uint8 images, an image folder, 'fashion-mnist', or pre-encoded latents "
             "(npz with key 'latents'). Default: the built-in Fashion-MNIST for a 1-channel 28/32 px model."),
    samples: int = typer.Option(256, "--samples", "-n", help="Number of samples (the same images and noise at every noise level)."),
    timesteps: int = typer.Option(32, "--timesteps", "-t", help="Number of noise levels, evenly covering [0, 1] with both ends."),
    noise_levels: Optional[str] = typer.Option(
        None, "--noise-levels",
        help="Explicit comma-separated noise levels s in [0, 1] (1 = pure noise, 0 = data); overrides --timesteps."),
    batch_size: int = typer.Option(64, "--batch-size", "-b", help="Samples per batch; also the chunk size of the store."),
    max_batch: Optional[int] = typer.Option(
        None, "--max-batch",
        help="At most this many samples per forward pass (default: the batch size). Halved automatically on "
             "CUDA out-of-memory."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sample choice, the noise and Gaussian inputs (deterministic)."),
    precision: str = typer.Option("float32", "--precision", help="float32, or bf16 (autocast; statistics stay float32)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when available), cpu, cuda or cuda:N."),
    pooled_samples: Optional[int] = typer.Option(
        None, "--pooled-samples",
        help="Samples whose pooled router inputs are kept for timestep decodability (default min(256, samples); 0 = none)."),
    projection_dim: int = typer.Option(64, "--projection-dim", help="Random-projection size P of the pooled vectors."),
    projection_seed: int = typer.Option(0, "--projection-seed", help="Seed of the random projection."),
    split: str = typer.Option("train", "--split", help="Split of the built-in Fashion-MNIST: train or test."),
    gaussian: bool = typer.Option(False, "--gaussian", help="Probe on N(0, 1) inputs with random labels (when no data fits the model)."),
    null_class: bool = typer.Option(False, "--null-class", help="Feed the null class: probe the unconditional model."),
    weights: str = typer.Option("ema", "--weights", help="Which weights of a training checkpoint: ema or model."),
    num_heads: Optional[int] = typer.Option(None, "--num-heads", help="Head count, for widths outside the size table."),
    chunk_size: Optional[int] = typer.Option(None, "--chunk-size", help="DAR chunk size, for DAR state dicts without a config."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Delete an existing probe store at --out and start over."),
    resume: bool = typer.Option(
        False, "--resume",
        help="Continue an interrupted probe at --out (with the same settings); a complete store is left as is."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar over (noise level, batch)."),
) -> None:
    """Measure a model's information flow over a grid of noise levels and write a labelled zarr v3 store.

    Per block and per sublayer, at every noise level: RMS of block outputs, sublayer inputs and outputs, update
    ratios; RMS of dL/dz and dL/dh (L = the model's own training loss, summed over the batch); block x block and
    time-neighbour cosines; DAR routing weights and their entropy, or a residual model's source importance; pooled
    router inputs for timestep decodability. Schema: docs/STORE.md; read it with xarray.open_zarr(STORE).

    An existing store at --out is only touched when asked: --resume continues an interrupted probe (written chunks
    are kept, unfinished ones redone), --overwrite deletes it and starts over.
    """
    from rich.table import Table

    from .checkpoints import load_checkpoint
    from .cli import _errors, console
    from .probe import ProbeConfig, ProbeOutOfMemory, resolve_device, run_probe
    from .store import open_store

    def log(msg: str) -> None:
        console.print(f"[yellow]{msg}[/]", highlight=False, soft_wrap=True)

    with _errors():
        if weights not in ("ema", "model"):
            raise ValueError(f"--weights {weights}: choose ema or model")
        config = ProbeConfig(
            num_noise_levels=timesteps, noise_levels=_levels(noise_levels), num_samples=samples, batch_size=batch_size,
            max_batch=max_batch, seed=seed, precision=precision, device=device, pooled_samples=pooled_samples,
            projection_dim=projection_dim, projection_seed=projection_seed, split=split, gaussian=gaussian,
            null_class=null_class, overwrite=overwrite, resume=resume, progress=progress,
        )
        config.validate()
        overrides = {k: v for k, v in dict(num_heads=num_heads, chunk_size=chunk_size).items() if v is not None}
        ck = load_checkpoint(checkpoint, device=resolve_device(device), prefer=weights, **overrides)
        start = time.perf_counter()
        try:
            path = run_probe(ck, data, config, out, log=log)
        except ProbeOutOfMemory as e:
            raise ValueError(f"{e}; {out} keeps what was written (continue with --resume)") from None
        except KeyboardInterrupt:
            console.print(f"[bold red]interrupted:[/] {out} keeps what was written; continue with the same command "
                          f"and --resume", highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
        ds = open_store(path)
    took = time.perf_counter() - start
    a = ds.attrs
    table = Table(title=f"{path}: {a['model']}, {a['num_samples']} samples x {ds.sizes['noise_level']} noise levels "
                        f"on {a['device']} ({took:.1f} s)", title_justify="left")
    for col in ("s", "t", "loss", "RMS z first, last", "cos z_k-1, z_k", "RMS dL/dz first, last"):
        table.add_column(col, justify="right")
    S = ds.sizes["noise_level"]
    for i in sorted({0, S // 2, S - 1}):
        z, g = ds.z_rms.values[i], ds.z_grad_rms.values[i]
        table.add_row(f"{ds.noise_level.values[i]:.3f}", f"{ds.model_t.values[i]:.3g}", f"{ds.loss.values[i]:.4g}",
                      f"{z[0]:.3g}, {z[-1]:.3g}", f"{ds.adjacent_cos.values[i].mean():.3f}", f"{g[0]:.2g}, {g[-1]:.2g}")
    console.print(table)
    console.print(f"open it with xarray.open_zarr('{path}') or dartool.store.open_store('{path}')", highlight=False)
