"""`stem-count`: the 4D-STEM consumer (`count`, under mpirun) and its helpers (`merge`:
the file from a dead job's part files, with no stream; `dark`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, TypeVar

import numpy as np
import typer
from pydantic import ValidationError

from certified.logs import configure_json_logging
from nngstream.errors import NngstreamError

from ..config import load_config
from ..errors import LclstreamerError
from ..models import StemSectorEventSource
from ..mpi import world
from ..sources.stem import dark_reference
from .consumer import CountSettings, StemSettings, merge_parts, run

S = TypeVar("S", bound=CountSettings)
# the options `count` and `merge` share
ScanShape = Annotated[tuple[int, int], typer.Option("--scan-shape", help="Nx Ny")]
Dark = Annotated[Path, typer.Option("--dark", help=".npy dark reference")]
Output = Annotated[Path, typer.Option("--output", "-o", help="HDF5 file (stempy's format)")]
FrameShape = Annotated[tuple[int, int], typer.Option("--frame-shape", help="rows cols")]
Sectors = Annotated[int, typer.Option("--sectors")]
BackgroundSigma = Annotated[float, typer.Option("--background-sigma", help="N sigma")]
XraySigma = Annotated[float, typer.Option("--xray-sigma", help="M sigma")]
ThresholdFrames = Annotated[int, typer.Option("--threshold-frames", help="sample per rank")]
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False)


def _fail(message: str, code: int = 1) -> typer.Exit:
    print(f"stem-count: error: {message}", file=sys.stderr)
    return typer.Exit(code)


@app.command(help="Count a 4D-STEM stream (one consumer group per MPI rank); rank 0 writes.")
def count(
    url: Annotated[str, typer.Argument(help="the buffer's OUT address (see --proto)")],
    scan_shape: ScanShape,
    dark: Dark,
    output: Output,
    frame_shape: FrameShape = (576, 576),
    sectors: Sectors = 4,
    background_sigma: BackgroundSigma = 4.0,
    xray_sigma: XraySigma = 10.0,
    threshold_frames: ThresholdFrames = 10,
    dial_timeout: float = typer.Option(10.0, "--dial-timeout"),
    credit: int = typer.Option(256, "--credit", help="unacknowledged messages a rank holds"),
    proto: str = typer.Option(
        "nng", "--proto", help="nng (acked OUT) or zmq (keyed ZMQ OUT, at-most-once)"
    ),
) -> None:
    configure_json_logging("INFO")
    settings = _settings(
        StemSettings, url=url, scan_shape=scan_shape, dark=dark, output=output,
        frame_shape=frame_shape, sectors=sectors, background_sigma=background_sigma,
        xray_sigma=xray_sigma, threshold_frames=threshold_frames, dial_timeout=dial_timeout,
        credit=credit, proto=proto,
    )  # fmt: skip
    comm = world()
    try:
        acc = run(settings, comm)
    except (LclstreamerError, NngstreamError, OSError) as exc:  # e.g. stream broken
        print(f"stem-count: error: rank {comm.rank}: {exc}", file=sys.stderr)
        comm.abort(1)
        return
    if acc is not None:
        _report(acc)


def _settings(model: type[S], **options: object) -> S:
    """The command's settings; an invalid option is one line and exit 2."""
    try:
        return model(**options)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise _fail(f"--{'-'.join(map(str, err['loc']))}: {err['msg']}", 2) from None


def _report(acc: dict, merged: bool = False) -> None:
    """The accounting as one JSON line on stdout; loss and recovery, if any, on stderr."""
    print(json.dumps(acc), flush=True)
    missing = acc["stream_unaccounted"]
    if merged and acc["frames_missing"]:
        print(
            f"stem-count: loss: {acc['frames_missing']} of the scan's {acc['frames']}"
            " frame(s) are in no part file",
            file=sys.stderr,
        )
    elif acc["ranks_without_end"] or acc["frames_missing"] or acc["lost_max"] or missing:
        print(
            f"stem-count: loss: {acc['frames_missing']} frame(s) never seen,"
            f" {acc['ranks_without_end']} rank(s) without the end of the stream,"
            f" lost_max {acc['lost_max']}, {missing} of the stream's"
            f" {acc['stream_messages']} message(s) neither received by this job"
            " nor recovered from part files",
            file=sys.stderr,
        )
    if acc["recovered_parts"]:
        print(
            f"stem-count: recovered from {acc['recovered_parts']} part file(s):"
            f" {acc['recovered_frames']} counted frame(s) kept,"
            f" {acc['recovered_sectors']} parked sector(s) assembled again,"
            f" {acc['recovered_again']} message(s) received again and dropped",
            file=sys.stderr,
        )


@app.command(
    help="Write the file from the part files a dead consumer job left next to OUTPUT,"
    " with no stream (frames no part file holds are reported missing)."
)
def merge(
    scan_shape: ScanShape,
    dark: Dark,
    output: Output,
    frame_shape: FrameShape = (576, 576),
    sectors: Sectors = 4,
    background_sigma: BackgroundSigma = 4.0,
    xray_sigma: XraySigma = 10.0,
    threshold_frames: ThresholdFrames = 10,
) -> None:
    configure_json_logging("INFO")
    settings = _settings(
        CountSettings, scan_shape=scan_shape, dark=dark, output=output,
        frame_shape=frame_shape, sectors=sectors, background_sigma=background_sigma,
        xray_sigma=xray_sigma, threshold_frames=threshold_frames,
    )  # fmt: skip
    try:
        acc = merge_parts(settings)
    except (LclstreamerError, OSError) as exc:
        raise _fail(str(exc)) from None
    _report(acc, merged=True)


@app.command(help="Write the dark reference of a stem_sectors source (synthetic) as .npy.")
def dark(
    config: Path = typer.Argument(..., help="lclstreamer configuration with stem_sectors"),
    output: Path = typer.Option(..., "--output", "-o"),
) -> None:
    try:
        cfg = load_config(config)
    except LclstreamerError as exc:
        raise _fail(str(exc), 2) from None
    src = cfg.event_source
    if not isinstance(src, StemSectorEventSource):
        raise _fail(f"{config}: event_source.type is {src.type!r}, not stem_sectors", 2)
    np.save(output, dark_reference(src))


def main() -> None:
    app()
