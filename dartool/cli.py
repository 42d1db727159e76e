"""The ``dartool`` command line (typer). Each verb lives in a small module; this file wires them up.

Errors users can fix (a wrong checkpoint, missing data, a corrupt store) print one line and exit 2.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="dartool",
    help="Diagnose cross-layer information flow in diffusion transformers (DiT/SiT), and train DAR models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()

# Verbs defined in other modules: (name, "module:function"). Each function is a typer command.
EXTERNAL_COMMANDS: list[tuple[str, str]] = [
    ("probe", "dartool.probe_cli:probe"),
    ("bench", "dartool.bench:bench_command"),
    ("report", "dartool.report:report_command"),
    ("train", "dartool.train.cli:train"),
    ("sample", "dartool.sample:sample_command"),
    ("eval", "dartool.evaluate:eval_command"),
]


def fail(msg: str) -> None:
    """Print one red line and exit 2."""
    console.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def user_errors():
    """The exception types whose message is a complete, one-line instruction to the user."""
    from .checkpoints import CheckpointError
    from .data import DataError

    errs = [CheckpointError, DataError, FileExistsError, FileNotFoundError]
    try:
        from .train.loop import TrainError

        errs.append(TrainError)
    except ImportError:  # pragma: no cover
        pass
    try:
        from .store import StoreError  # noqa: F401  (present once the probe exists)

        errs.append(StoreError)
    except ImportError:
        pass
    return tuple(errs)


@app.command()
def models(
    input_size: int = typer.Option(32, help="Input size in pixels/latent cells."),
    in_channels: int = typer.Option(4, help="Input channels (4 = SD-VAE latents)."),
    num_classes: int = typer.Option(1000, help="Number of classes."),
    chunk: int = typer.Option(4, help="DAR chunk size S."),
) -> None:
    """Parameter counts of every size x patch x routing variant (learn_sigma on, as released)."""
    from .models import PATCHES, QUERIES, SIZES, SiT, model_config

    table = Table(title=f"SiT/DiT family at {input_size}x{input_size}x{in_channels}, {num_classes} classes")
    for col in ("model", "routing", "params", "routers", "max sources"):
        table.add_column(col, justify="right" if col in ("params", "routers", "max sources") else "left")
    for size in SIZES:
        for patch in PATCHES:
            variants = [("residual", "static")] + [("dar", q) for q in QUERIES]
            for routing, query in variants:
                cfg = model_config(size, patch, input_size=input_size, in_channels=in_channels,
                                   num_classes=num_classes, routing=routing, query=query, chunk_size=chunk)
                with _meta_device():
                    m = SiT(cfg)
                n = m.num_params()
                routers = len(m.routers) if routing == "dar" else 0
                name = f"SiT-{size}/{patch}"
                kind = "residual" if routing == "residual" else f"DAR {query} c{chunk}"
                table.add_row(name, kind, f"{n / 1e6:,.2f} M", str(routers) if routers else "-",
                              str(max(m.source_counts)) if routers else "-")
    console.print(table)


class _meta_device:
    """Build models on the meta device (no memory, instant) where torch supports it."""

    def __enter__(self):
        import torch

        self._ctx = torch.device("meta")
        self._ctx.__enter__()

    def __exit__(self, *a):
        self._ctx.__exit__(*a)


@app.command()
def info(
    checkpoint: Path = typer.Argument(..., help="A DiT / SiT / REPA / dartool checkpoint (.pt, .pth, .safetensors)."),
    num_heads: Optional[int] = typer.Option(None, help="Head count, for widths outside the size table."),
    chunk_size: Optional[int] = typer.Option(None, help="DAR chunk size, for DAR state dicts without a config."),
) -> None:
    """Inspect a checkpoint: the inferred architecture, where the weights came from, its sha256."""
    from .checkpoints import load_checkpoint

    ov = {k: v for k, v in dict(num_heads=num_heads, chunk_size=chunk_size).items() if v is not None}
    with _errors():
        ck = load_checkpoint(checkpoint, **ov)
    table = Table(title=f"{checkpoint}", show_header=False)
    table.add_row("model", ck.config.label)
    table.add_row("parameters", f"{ck.model.num_params():,}")
    table.add_row("layout / weights", f"{ck.layout} / {ck.source}")
    for k, v in ck.config.to_dict().items():
        table.add_row(k, str(v))
    table.add_row("sha256", ck.sha256)
    console.print(table)


@app.command()
def init(
    out: Path = typer.Option(Path("runs/demo/init.pt"), help="Where to write the checkpoint."),
    size: str = typer.Option("S", help="Model size: S, B, L, XL."),
    patch: int = typer.Option(2, help="Patch size: 2, 4 or 8."),
    input_size: int = typer.Option(28, help="Input size (Fashion-MNIST: 28)."),
    in_channels: int = typer.Option(1, help="Input channels (Fashion-MNIST: 1)."),
    num_classes: int = typer.Option(10, help="Classes."),
    routing: str = typer.Option("residual", help="residual | dar"),
    query: str = typer.Option("static", help="DAR query: static | static_t | dynamic"),
    chunk_size: int = typer.Option(4, help="DAR chunk size S (1 = dense)."),
    depth: Optional[int] = typer.Option(None, help="Override the depth of the size."),
    seed: int = typer.Option(0),
    overwrite: bool = typer.Option(False, help="Replace an existing file."),
) -> None:
    """Build a freshly initialised model and save it as a dartool checkpoint."""
    import torch

    from .checkpoints import save_checkpoint
    from .models import SiT, model_config

    with _errors():
        cfg = model_config(size, patch, input_size=input_size, in_channels=in_channels, num_classes=num_classes,
                           routing=routing, query=query, chunk_size=chunk_size, learn_sigma=False)
        if depth:
            cfg = cfg.replace(depth=depth)
        torch.manual_seed(seed)
        model = SiT(cfg)
        save_checkpoint(out, model, overwrite=overwrite)
    console.print(f"wrote {out}: {cfg.label}, {model.num_params():,} parameters")


@app.command()
def convert(
    checkpoint: Path = typer.Argument(..., help="A trained residual checkpoint."),
    out: Path = typer.Option(..., "--out", help="Where to write the converted DAR checkpoint."),
    to: str = typer.Option("dar", help="Target stream (only 'dar')."),
    query: str = typer.Option("static", help="Query variant of the new routers (zero-initialised)."),
    overwrite: bool = typer.Option(False),
) -> None:
    """Residual -> dense DAR that computes the same function (DAR-METHOD.md section 5)."""
    import torch

    from .checkpoints import load_checkpoint, save_checkpoint
    from .models.convert import max_conversion_error, residual_to_dar

    if to != "dar":
        fail(f"--to {to}: only 'dar' is supported")
    with _errors():
        ck = load_checkpoint(checkpoint)
        dar = residual_to_dar(ck.model, query=query)
        cfg = ck.config
        g = torch.Generator().manual_seed(0)
        x = torch.randn(2, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
        err = max_conversion_error(ck.model, dar, x, torch.rand(2, generator=g), torch.zeros(2, dtype=torch.long))
        save_checkpoint(out, dar, overwrite=overwrite, converted_from=str(checkpoint), converted_from_sha256=ck.sha256)
    console.print(f"wrote {out}: {dar.config.label}; relative output difference on a random batch {err:.2e}")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Run folder (train logs, checkpoints, probe stores, report/)."),
    steps: int = typer.Option(200, help="Training steps per arm."),
    data: str = typer.Option("fashion-mnist", help="Training data (default: the built-in Fashion-MNIST)."),
    overwrite: bool = typer.Option(False, help="Replace an existing demo run."),
) -> None:
    """The main job on the built-in data, in a few minutes on a laptop CPU: train a small residual and a DAR
    model side by side on Fashion-MNIST, evaluate them, probe both over 32 noise levels, write the report."""
    from .train.config import ArmConfig, TrainConfig
    from .train.loop import train as run_training

    cfg = TrainConfig(
        out=str(out), data=data, size="S", depth=6, hidden_size=128, num_heads=4, patch=4,
        arms=[ArmConfig(), ArmConfig(routing="dar")], seeds=[0], steps=steps, batch_size=64, lr=5e-4,
        ema_warmup=True, log_every=50, ckpt_every=steps, final_eval_samples=500, eval_steps=10, ref_samples=2000,
        pr_samples=500, probe=True, probe_final_samples=64, probe_pooled_samples=64, probe_projection_dim=32,
        report=True,
    )
    with _errors():
        run_training(cfg, overwrite=overwrite)
    console.print(f"\n[bold]Report:[/] {out / 'report' / 'report.html'}  (open it in a browser; "
                  f"summary in {out / 'summary.md'})")


class _errors:
    """Turn the user-fixable exceptions into one red line and exit code 2."""

    def __enter__(self):
        return self

    def __exit__(self, et, e, tb):
        if et is not None and issubclass(et, user_errors() + (ValueError,)) and not issubclass(et, typer.Exit):
            msg = str(e).strip().splitlines()[0] if str(e).strip() else et.__name__
            fail(msg)
        return False


def _register() -> None:
    for name, target in EXTERNAL_COMMANDS:
        mod, fn = target.split(":")
        app.command(name)(getattr(importlib.import_module(mod), fn))


_register()


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
