"""The ``edge-stpm`` command line: thin wrappers that parse, call one function and print."""
from __future__ import annotations

import functools
import sys
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import typer
import typer.core
import typer.rich_utils
from rich.console import Console
from rich.markup import escape

from edge_stpm.common.errors import UserError, need_train
from edge_stpm.common.files import data_dir
from edge_stpm.contract.options import (
    DEFAULT_BANK_MAX_MB,
    DEFAULT_CORESET,
    DEFAULT_CORESET_CHUNK,
    DEFAULT_CORESET_DIMS,
    DEFAULT_CORESET_EXACT_MAX,
    DEFAULT_HEAD,
    DEFAULT_UPDATE_METHOD,
    Backbone,
    BackendName,
    CalibMethod,
    DeviceName,
    EnginePrecision,
    Fit,
    FramePath,
    HeadName,
    HistoryFormat,
    HistoryVerdict,
    ListFormat,
    Loss,
    MapCombine,
    Precision,
    ThresholdMethod,
    TrainHeadName,
    Trigger,
    UpdateMethod,
    rng,
)


def _metavar_only(self: Any, ctx: Any) -> Optional[str]:
    """Help shows an option's explicit metavar or its choices (``[a|b]``), never typer's type tag (``<bool>``,
    ``<str>``...)."""
    if self.metavar is not None:
        return self.metavar
    choices = _choices(self)
    if choices:
        return "[" + "|".join(choices) + "]"
    return None  # a declared range is shown by typer itself ([1<=x<=256])


def _choices(param: Any) -> tuple[str, ...]:
    """The values a ``Literal``-annotated option takes (also inside Optional/list), else ()."""
    ann = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    while ann is not None and typing.get_origin(ann) is not typing.Literal:
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        ann = args[0] if args else None
    return tuple(map(str, typing.get_args(ann))) if ann is not None else ()


typer.core.TyperOption.display_type_rich = _metavar_only  # type: ignore[method-assign]
typer.core.TyperArgument.display_type_rich = _metavar_only  # type: ignore[method-assign]


def _one_line_usage_error(e: Any) -> None:
    """A value outside an option's declared range or choices, a missing option, an unknown one: one ``error:``
    line on stderr (click then exits 2), instead of typer's boxed usage panel."""
    hint = ""
    ctx = getattr(e, "ctx", None)
    if ctx is not None and ctx.command_path:
        hint = f" (see {ctx.command_path} --help)"
    text = e.format_message().replace("Value error, ", "")
    Console(stderr=True).print(f"[red]error:[/red] {escape(text)}{hint}", highlight=False, soft_wrap=True)


typer.rich_utils.rich_format_error = _one_line_usage_error  # type: ignore[assignment]

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Real-time visual inspection with Student-Teacher Feature Pyramid Matching (STPM).")
out = Console()
err = Console(stderr=True)


def one_line_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a UserError into one red line on stderr and exit code 2."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            for line in getattr(exc, "lines", [str(exc)]):  # UserErrors: one line per problem of a file
                err.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130) from None
    return wrapper


@app.command()
@one_line_errors
def synth(out_dir: Path = typer.Option(..., "--out", help="Folder to write (MVTec layout + video.avi)."),
          n_train: int = typer.Option(80, **rng("n_images"), help="Good training images."),
          n_test_good: int = typer.Option(16, **rng("n_images"), help="Good test images."),
          n_test_defect: int = typer.Option(8, **rng("n_test_defect"), help="Test images per defect type."),
          video_frames: int = typer.Option(120, **rng("video_frames"), help="Frames in the labelled video."),
          size: int = typer.Option(256, **rng("size"), help="Image side in pixels."),
          seed: int = typer.Option(0, **rng("seed"), help="Random seed (the same seed gives the same set).")) -> None:
    """Generate seeded synthetic parts in MVTec layout (scratches, spots, cracks, missing corners; exact masks) and
    a labelled video — for demos and tests, not evidence of accuracy."""
    from edge_stpm.training.synth import SynthConfig, generate

    counts = generate(out_dir, SynthConfig(size, n_train, n_test_good, n_test_defect, video_frames, seed=seed))
    out.print(f"wrote {out_dir}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


@app.command()
@one_line_errors
def train(data: Path = typer.Option(..., help="MVTec-layout folder (uses train/good) or a folder of good images."),
          out_dir: Path = typer.Option(Path("runs/latest"), "--out", help="Run folder; the checkpoint is OUT/model.pt."),
          backbone: Backbone = typer.Option("resnet18", help="Teacher and student network."),
          epochs: int = typer.Option(30, **rng("epochs"), help="Training epochs (the epoch with the lowest held-out loss is kept)."),
          lr: float = typer.Option(0.4, **rng("lr"), help="SGD learning rate."),
          loss: Optional[Loss] = typer.Option(None, help="Loss over the images of a batch: mean (default: higher AUROC on magnetic tile, 3 seeds); sum (the official STPM code's and anomalib's; a step batch-size times larger); hard (EfficientAD's hard-feature loss: only the differences at or above their 0.999 quantile in the batch)."),
          momentum: float = typer.Option(0.9, **rng("momentum"), help="SGD momentum."),
          weight_decay: float = typer.Option(1e-4, **rng("weight_decay"), help="SGD weight decay."),
          batch_size: int = typer.Option(32, **rng("batch_size"), help="Images per training step."),
          val_fraction: float = typer.Option(0.2, **rng("val_fraction"), help="Share of good images held out for model selection and thresholds."),
          size: int = typer.Option(256, **rng("size"), help="Model input side (pixels)."),
          fit: Optional[Fit] = typer.Option(None, help="How images meet the square input: pad (keep aspect ratio, reflect-pad), stretch or crop (default: the one the head was chosen with: stretch for memory, pad for stpm and both)."),
          tiles: Optional[str] = typer.Option(None, help="Tiled fit for large frames: ROWSxCOLS overlapping tiles (e.g. 2x2), each fitted to --size and inferred as one batch, the maps stitched back, the frame's score the largest tile's; travels with the model (default: the whole frame)."),
          tile_overlap: float = typer.Option(0.125, **rng("tile_overlap"), help="With --tiles: the share of a tile's side shared with its neighbour."),
          smoothing: float = typer.Option(4.0, **rng("smoothing"), help="Gaussian smoothing of the map before the image score: sigma in pixels (0 = official STPM head)."),
          input_blur: Optional[float] = typer.Option(None, **rng("input_blur"), help="Gaussian blur of the fitted input before the teacher, inside the graph: sigma in pixels of the model input (default for the memory head: 1 at --size 256, scaled with the size (0.5 at 128), with the pixel threshold at the held-out pixels' 99.9th percentile; 0 for stpm, both and auto)."),
          score_top: float = typer.Option(2.0, **rng("score_top"), help="Image score: the mean of the top this % of the map (default 2: higher AUROC on magnetic tile, 3 seeds); 0 = its max (the official STPM head)."),
          map_combine: MapCombine = typer.Option("weighted_sum", help="How the pyramid levels make the map: weighted_sum (default: each level divided by its spread on the held-out good images; higher AUROC on magnetic tile) or product (the official STPM head)."),
          head: TrainHeadName = typer.Option(DEFAULT_HEAD, help="stpm (the student, trained), memory (nearest neighbour over the teacher's good patches: nothing trained, seconds to minutes on a CPU), both (the two maps, each scaled by its spread on the held-out good images) or auto (fits both, keeps the head with the best no-defect check)."),
          coreset: float = typer.Option(DEFAULT_CORESET, **rng("coreset"), help="Memory head: the share of the training patches kept in the bank (greedy k-center)."),
          bank_max_mb: float = typer.Option(DEFAULT_BANK_MAX_MB, **rng("bank_max_mb"), help="Memory head: the bank's size cap in MB (float32), whatever --coreset asks."),
          coreset_dims: int = typer.Option(DEFAULT_CORESET_DIMS, **rng("coreset_dims"), help="Memory head: the k-center selection runs on the features themselves (0, the default: higher AUROC on magnetic tile, 3 seeds) or on a random projection to this many dimensions (faster fit, e.g. 32)."),
          coreset_chunk: int = typer.Option(DEFAULT_CORESET_CHUNK, **rng("coreset_chunk"), help="Memory head: 0 = exact greedy k-center over all patches (the default); N > 0 = over shuffled chunks of at most N patches, each keeping its share (cost linear in the patches: for many images or tiles; e.g. 32768)."),
          threshold_method: ThresholdMethod = typer.Option("logsigma", help="How thresholds are set from held-out good images: logsigma (exp(mean+kσ) of log scores), percentile (99.5th) or sigma (mean+kσ)."),
          threshold_k: Optional[float] = typer.Option(None, **rng("threshold_k"), help="The image threshold's k for logsigma / sigma (default: 2 for the memory head, 3 for stpm and both; the pixel threshold keeps 3)."),
          seed: int = typer.Option(0, **rng("seed"), help="Random seed (split, initialisation, batch order, coreset start)."),
          device: DeviceName = typer.Option("auto", help="Where the PyTorch model runs (auto: cuda when there is a GPU)."),
          threads: Optional[int] = typer.Option(None, **rng("threads"), help="CPU threads (default: the cores this process may use)."),
          low_memory: Optional[bool] = typer.Option(None, "--low-memory/--no-low-memory", help="Activation checkpointing: ~2.5× lower peak memory, ~2× slower steps, same gradients (default: on for CPUs with under 12 GB RAM)."),
          teacher_cache: Optional[bool] = typer.Option(None, "--teacher-cache/--no-teacher-cache", help="Compute the frozen teacher's pyramid once per image instead of every epoch: same model, fewer FLOPs (default: on when it fits in 35 % of the free memory)."),
          teacher_weights: Optional[str] = typer.Option(None, help="Teacher state-dict file (default: torchvision cache / download); 'random' for tests only."),
          init_from: Optional[Path] = typer.Option(None, help="Fine-tune: start from this checkpoint's student and teacher (same --backbone) and train on --data's good images plus the checkpoint's own (those still on this machine); a few --epochs are enough (docs/feedback.md)."),
          quiet: bool = typer.Option(False, help="No progress bars.")) -> None:
    """Fit the model on good images and set its thresholds from held-out good images (20 % of them); writes
    runs/NAME/model.pt, training.json and loss.png.

    Heads (--head): memory (the default; PatchCore's recipe on the frozen teacher — levels 2+3, a greedy k-center
    coreset of the patches capped by --bank-max-mb, nearest-neighbour distance as MatMul + ReduceMin in the graph:
    nothing trained); stpm (the student trained to reproduce the teacher's pyramid; the epoch with the lowest
    held-out loss is kept; defaults chosen by benchmarks/results/accuracy/RULE.md); both (the two maps, each scaled
    by its spread on held-out good images); auto (the head with the best no-defect check). The map: levels summed,
    each weighted by 1 / its spread on held-out good images (--map-combine), image score = mean of the top 2 % of
    the map (--score-top). Large frames: --tiles 2x2 inspects each frame as overlapping tiles at model resolution
    (batched, maps stitched, the frame's score the largest tile's; host path only; lower --coreset for many tiles).
    The teacher's pyramid is computed once per image (--teacher-cache). CUDA: mixed precision, channels_last, images
    cached on the GPU."""
    need_train("train")
    from edge_stpm.training.report import print_train

    print_train(out, data=data, out=out_dir, backbone=backbone, epochs=epochs, lr=lr, loss=loss, momentum=momentum,
                weight_decay=weight_decay, batch_size=batch_size, val_fraction=val_fraction, image_size=size, fit=fit,
                tiles=tiles, tile_overlap=tile_overlap, sigma=smoothing, input_blur=input_blur, score_top_percent=score_top,
                map_combine=map_combine, seed=seed, device=device, head=head, coreset=coreset, bank_max_mb=bank_max_mb,
                coreset_dims=coreset_dims, coreset_chunk=coreset_chunk, teacher_weights=teacher_weights,
                threshold_method=threshold_method, threshold_k=threshold_k, quiet=quiet, threads=threads,
                low_memory=low_memory, teacher_cache=teacher_cache, init_from=init_from)


@app.command()
@one_line_errors
def evaluate(checkpoint: Optional[Path] = typer.Option(None, help="The training checkpoint (model.pt): evaluation runs the PyTorch model."),
             data: Path = typer.Option(..., help="MVTec-layout folder with test/ and ground_truth/."),
             compare: Optional[tuple[Path, Path]] = typer.Option(None, help="OLD NEW: two models (checkpoints or bundles) on --data's test/ images (a dataset --from-history folder: reviewed good parts, confirmed defects), each at its own threshold: false calls, recall per defect, a figure (OUT/compare.png)."),
             out_dir: Path = typer.Option(Path("reports/latest"), "--out", help="Report folder."),
             device: DeviceName = typer.Option("auto", help="Where the PyTorch model runs (auto: cuda when there is a GPU)."),
             batch_size: int = typer.Option(16, **rng("batch_size"), help="Images per inference batch."),
             threads: Optional[int] = typer.Option(None, **rng("threads"), help="CPU threads (default: the cores this process may use)."),
             quiet: bool = typer.Option(False, help="No progress bars.")) -> None:
    """Image AUROC, pixel AUROC, AUPRO@0.3 and AU-PRO@0.05 (overall and per defect); precision / recall / F1 at the
    stored threshold and the F1-optimal threshold of the labelled set (reported, not applied); where the defect is:
    SegF1 at the stored pixel threshold, region / true area and IoU per defect type, the good parts' coloured share
    and their scores on the score scale (docs/score-scale.md); report.json, report.md, ROC and heatmap PNGs. With
    --compare OLD NEW: two models (checkpoints or bundles) on a reviewed set (DIR/test/), each at its own threshold
    — false calls on the good parts, recall per confirmed defect type, compare.png (docs/feedback.md)."""
    need_train("evaluate")
    from edge_stpm.training.report import print_compare, print_evaluate

    if compare:
        return print_compare(out, compare, data, out_dir)
    if checkpoint is None:
        raise UserError("give the model to evaluate: --checkpoint runs/NAME/model.pt (or --compare OLD NEW)")
    print_evaluate(out, checkpoint, data, out_dir, device, batch_size, quiet, threads)


@app.command()
@one_line_errors
def calibrate(checkpoint: Path = typer.Option(..., help="The training checkpoint (model.pt) to update in place (atomically)."),
              threshold_method: ThresholdMethod = typer.Option("logsigma", help="How thresholds are set from the held-out good images."),
              threshold_k: Optional[float] = typer.Option(None, **rng("threshold_k"), help="The image threshold's k for logsigma / sigma (default: 2 for the memory head, 3 for stpm and both)."),
              smoothing: Optional[float] = typer.Option(None, **rng("smoothing"), help="Change the map smoothing (sigma in pixels; 0 = none) before calibrating."),
              score_top: Optional[float] = typer.Option(None, **rng("score_top"), help="Change the image score before calibrating: the mean of the top this % of the map (0 = its max)."),
              map_combine: Optional[MapCombine] = typer.Option(None, help="Change how the levels make the map: product, or weighted_sum (weights from the held-out good images)."),
              head: Optional[HeadName] = typer.Option(None, help="Change the head: memory or both build the memory bank from the checkpoint's training images (nothing trained); stpm and both need its trained student."),
              coreset: float = typer.Option(DEFAULT_CORESET, **rng("coreset"), help="With --head memory/both: the share of the training patches kept in the bank."),
              bank_max_mb: float = typer.Option(DEFAULT_BANK_MAX_MB, **rng("bank_max_mb"), help="With --head memory/both: the bank's size cap in MB."),
              data: Optional[Path] = typer.Option(None, help="A labelled MVTec split: also set the image threshold to its F1 optimum."),
              threads: Optional[int] = typer.Option(None, **rng("threads"), help="CPU threads (default: the cores this process may use)."),
              quiet: bool = typer.Option(False, help="No progress bars.")) -> None:
    """Recompute a checkpoint's thresholds (no retraining): from its held-out good images, or F1-optimal on --data."""
    need_train("calibrate")
    from edge_stpm.training.calibrate import recalibrate
    from edge_stpm.training.devices import set_threads

    set_threads(threads)
    thr = recalibrate(checkpoint, threshold_method, smoothing, data, quiet, top_percent=score_top, combine=map_combine,
                      head=head, coreset=coreset, bank_max_mb=bank_max_mb, k=threshold_k)
    out.print(f"thresholds ({thr['method']}): image {thr['image']:.5g}, pixel {thr['pixel']:.5g}; written to {checkpoint}")


@app.command()
@one_line_errors
def export(checkpoint: Path = typer.Option(..., help="The training checkpoint (model.pt) to export into a bundle."),
           precision: str = typer.Option("fp32,fp16,int8", help="Comma list of fp32, fp16, int8 (FP32 is always written: it is the reference)."),
           batch: int = typer.Option(1, **rng("batch"), help="Static batch of the graphs."),
           out_dir: Optional[Path] = typer.Option(None, "--out", help="Folder for the graphs (default engines/<run name>/)."),
           calib: Optional[Path] = typer.Option(None, help="Good images for INT8 calibration (default: the checkpoint's training images)."),
           calib_count: int = typer.Option(300, **rng("calib_count"), help="Calibration images (warns under 100, refuses under 20)."),
           calib_method: CalibMethod = typer.Option("minmax", help="How INT8 activation ranges are set from the calibration images."),
           calib_root: Path = typer.Option(Path("calibration"), help="Where calibration lists and ranges are kept."),
           data: Optional[Path] = typer.Option(None, help="MVTec test split: report each graph's AUROC beside FP32's."),
           int8_float_stages: str = typer.Option("0", help="Pyramid stages (0,1,2) whose convolutions stay float in the INT8 graph; '' quantizes all."),
           force: bool = typer.Option(False, help="Write FP16/INT8 graphs even when they miss their precision gate."),
           frame_size: Optional[str] = typer.Option(None, help="Camera frame sizes WxH (comma list, e.g. 640x480,1920x1080): also write device frame-path graphs (frame in, overlay out; FP32/FP16) that run and the camera loop uses for frames of that size."),
           threads: Optional[int] = typer.Option(None, **rng("threads"), help="CPU threads for the PyTorch reference and ONNX Runtime checks."),
           quiet: bool = typer.Option(False, help="No progress bars.")) -> None:
    """Write a bundle (engines/NAME/): ONNX opset 17 graphs with static shapes, each checked against PyTorch (FP32
    must match to 1e-4 relative L2 or export fails) and against TensorRT's ONNX-parser rules (a graph TensorRT would
    refuse is not written); INT8 calibrated on good images (--calib, --calib-count; lists and ranges kept in
    calibration/NAME/); manifest.json (sha256 of every file), self-test images and a README for the box.
    --frame-size adds the device frame-path graphs (docs/frame-path.md)."""
    need_train("export")
    from edge_stpm.training.export.report import print_export

    print_export(out, checkpoint, precision, batch, out_dir, calib, calib_count, calib_method, calib_root, data,
                 int8_float_stages, force, frame_size, threads, quiet)


@app.command("build-engine")
@one_line_errors
def build_engine(model: Path = typer.Option(..., help="A bundle folder from edge-stpm export, or one of its .onnx graphs."),
                 precision: EnginePrecision = typer.Option("fp16", help="Engine precision."),
                 out_file: Optional[Path] = typer.Option(None, "--out", help="Engine file (default BUNDLE/model_<precision>.engine)."),
                 workspace_mib: int = typer.Option(2048, **rng("workspace_mib"), help="Builder workspace limit (MiB)."),
                 frame_size: Optional[str] = typer.Option(None, help="Build the device frame-path engine for this camera size WxH from the bundle's frame graph (export --frame-size) instead of the model engine.")) -> None:
    """On the box: build a TensorRT engine for this GPU into the bundle (a self-describing file; the manifest
    updated). Needs TensorRT, cuda-python and an NVIDIA GPU, and checks for them first."""
    from edge_stpm.contract.artifacts import parse_frame_size
    from edge_stpm.training.export.engine_build import build_into_bundle

    md, engine = build_into_bundle(model, precision, out_file, workspace_mib,
                                   parse_frame_size(frame_size) if frame_size else None)
    out.print(f"engine: {engine} (TensorRT {md['tensorrt_version']}, {md['gpu_name']}, sm {md['compute_capability']}, "
              f"built {md['precision']} from the {md['onnx_precision']} graph)")


@app.command("check-graph")
@one_line_errors
def check_graph(graphs: list[Path] = typer.Argument(..., help="ONNX graphs to check.")) -> None:
    """Check ONNX graphs against TensorRT's ONNX-parser rules (8.6 operator matrix, uint8 only at I/O, INT8 Q/DQ,
    opset ≤ 17). Exit 0 when all pass, 1 when any rule is broken (each listed with its node and rule)."""
    from edge_stpm.contract.trt_rules import print_checks

    if print_checks(out, graphs):
        raise typer.Exit(1)


@app.command()
@one_line_errors
def run(ctx: typer.Context,
        config: Optional[Path] = typer.Option(None, "--config", help="A station file (TOML): recipes, sources and every option below in one file (docs/station.md); a flag given here overrides the same key of the file (--threshold, --roi and --precision every recipe's)."),
        model: Optional[Path] = typer.Option(None, help="A bundle folder, .onnx graph, TensorRT engine, training checkpoint (.pt), or a model on a Triton server: grpc://HOST:PORT/MODEL (with --config: the station's recipes)."),
        camera: Optional[list[int]] = typer.Option(None, **rng("camera"), help="Camera index (V4L2 on Linux); repeat for several cameras."),
        source: Optional[list[str]] = typer.Option(None, help="Video file, image folder, RTSP/HTTP URL, GStreamer pipeline or Basler camera (basler://SERIAL?settings: docs/cameras.md); repeat for several sources (any mix, inferred together)."),
        backend: BackendName = typer.Option("auto", help="Inference runtime (auto: TensorRT where it can run, else ONNX Runtime)."),
        precision: Optional[Precision] = typer.Option(None, help="Pick the graph/engine of this precision in an export folder."),
        threads: Optional[int] = typer.Option(None, **rng("threads"), help="CPU threads for ONNX Runtime / PyTorch CPU (default: the cores, divided among --workers)."),
        workers: Optional[int] = typer.Option(None, **rng("workers"), help="Frames inferred at once on worker threads, results still in order (ONNX Runtime). 1: lowest verdict latency; the cores with --threads 1: most frames/s on a CPU. Default: 1, or one per core (at most one per source) for several free-running sources on ONNX Runtime CPU without --threads (docs/pipeline.md)."),
        threshold: Optional[float] = typer.Option(None, **rng("threshold"), help="Threshold on the score scale (0 = a typical good part, 1.0 = the stored threshold; 1.2 = 20 % of that distance beyond it). Default 1.0."),
        roi: Optional[str] = typer.Option(None, help="Crop x,y,w,h (pixels) before inspection."),
        headless: bool = typer.Option(False, help="No window."),
        record: Optional[Path] = typer.Option(None, help="Record the overlay video (.mp4, .avi, .mkv…); in segments (out.mp4, out.001.mp4…) so a power cut loses at most the last one — none with .mkv/.avi, whose unfinished part is recovered on the next start."),
        record_segment: float = typer.Option(60.0, **rng("record_segment"), help="Seconds per recording file (0: one file for the whole run)."),
        save_anomalies: Optional[Path] = typer.Option(None, help="Save frame, overlay and JSON per NG event here."),
        anomaly_interval: float = typer.Option(1.0, **rng("anomaly_interval"), help="At most one saved NG event per this many seconds."),
        events: Optional[Path] = typer.Option(None, help="Append one JSON line per NG frame to this file."),
        max_frames: Optional[int] = typer.Option(None, **rng("max_frames"), help="Stop after this many frames."),
        reconnect: float = typer.Option(10.0, **rng("reconnect"), help="Seconds to keep retrying a lost live stream; a camera down at start is retried the same way while the other sources run (with a station file even when all are down); 0: fail at once."),
        loop: bool = typer.Option(False, "--loop", help="Play a video file or image folder source again from its start when it ends (demos, soak tests); stop with --max-frames, q or Ctrl-C."),
        alpha: float = typer.Option(0.6, **rng("alpha"), help="Opacity of the colour at and above the threshold."),
        summary_json: Optional[Path] = typer.Option(None, help="Write the run summary here."),
        http: Optional[str] = typer.Option(None, help="Serve a live view, status.json and Prometheus /metrics at HOST:PORT (e.g. 127.0.0.1:8080)."),
        http_token: Optional[str] = typer.Option(None, envvar="EDGE_STPM_HTTP_TOKEN", help="The token the HTTP server requires (Authorization: Bearer, or typed once on the live page; never in a URL); needed for a non-loopback --http. Or set EDGE_STPM_HTTP_TOKEN (kept out of the process list)."),
        http_fps: float = typer.Option(15.0, **rng("http_fps"), help="Most frames per second encoded for HTTP viewers (only while someone watches)."),
        http_cert: Optional[Path] = typer.Option(None, help="Serve HTTPS with this certificate (PEM; with --http-key)."),
        http_key: Optional[Path] = typer.Option(None, help="The private key of --http-cert (PEM)."),
        http_self_signed: bool = typer.Option(False, "--http-self-signed", help="Serve HTTPS with a self-signed certificate made on first start (in the data folder's tls/)."),
        http_insecure: bool = typer.Option(False, "--http-insecure", help="Allow a non-loopback --http without TLS (tokens then cross the network readable)."),
        history_db: Path = typer.Option(data_dir() / "history.db", help="The inspection record (SQLite): one row per inspected frame; read it with edge-stpm history."),
        no_history: bool = typer.Option(False, "--no-history", help="Keep no inspection record for this run."),
        history_keep_days: float = typer.Option(90.0, **rng("record_keep_days"), help="Delete record rows older than this many days."),
        history_max_mb: float = typer.Option(2048.0, **rng("record_max_mb"), help="Delete the oldest record rows while the record is larger than this (MB)."),
        mqtt: Optional[str] = typer.Option(None, help="Publish every result to this MQTT broker: mqtt://[user:pass@]host[:port] or mqtts:// (TLS); QoS 1 through a durable outbox."),
        mqtt_topic: str = typer.Option("edge-stpm/{host}/{source}", help="MQTT topic; {host} and {source} are filled in."),
        mqtt_ca: Optional[Path] = typer.Option(None, help="CA certificate file for mqtts:// (default: the system's)."),
        mqtt_outbox: Path = typer.Option(data_dir() / "mqtt-outbox.db", help="The MQTT outbox (SQLite): results wait here until the broker acknowledges them."),
        outbox_max: int = typer.Option(100_000, **rng("outbox_max"), help="Most unsent MQTT results kept; when full the oldest unsent are dropped (the record keeps them)."),
        modbus: Optional[str] = typer.Option(None, help="Serve the PLC handshake as a Modbus TCP server at HOST:PORT (register map: docs/line.md); loopback unless you give another address (Modbus has no authentication)."),
        opcua: Optional[str] = typer.Option(None, help="Serve the handshake and the last result as an OPC UA server at HOST:PORT (OPC 40100-like address space: docs/line.md); anonymous sessions on loopback only, and read-only."),
        opcua_user: Optional[str] = typer.Option(None, help="USER:PASSWORD of the one OPC UA user who may call Trigger / AckResult / SelectRecipe (needed for a non-loopback --opcua)."),
        opcua_security: Optional[Literal["none", "sign_encrypt"]] = typer.Option(None, help="OPC UA channel security: sign_encrypt = Basic256Sha256 Sign & Encrypt only (the password and every value encrypted; needs --opcua-cert/--opcua-key or --opcua-self-signed); none = nothing encrypted. Default: sign_encrypt when a certificate is given, else none."),
        opcua_cert: Optional[Path] = typer.Option(None, help="The OPC UA server's certificate (PEM or DER); give it to the PLC."),
        opcua_key: Optional[Path] = typer.Option(None, help="The OPC UA certificate's RSA private key (PEM or DER, no password)."),
        opcua_self_signed: bool = typer.Option(False, "--opcua-self-signed", help="Make a self-signed OPC UA certificate and key on first start (in the data folder's opcua/, or at --opcua-cert/--opcua-key) and reuse them after."),
        trigger: Trigger = typer.Option("free-run", help="free-run: inspect every frame; plc: one frame per PLC trigger (--modbus or --opcua), each with its own trigger id; http: one frame per POST /trigger on the --http server, answered with its verdict."),
        safe_mode: bool = typer.Option(False, "--safe-mode", help="With --config (the systemd unit uses it): a station file that does not check, or a start that fails, serves its errors on the file's \\[http] bind (/healthz 503) instead of exiting, until SIGHUP finds the file good (docs/station.md)."),
        frame_path: FramePath = typer.Option("auto", help="Where fit, map-back, colour and blend run: device = in the model's graph (a bundle's frame graph for the camera's size, or the PyTorch model), one upload and one download per frame; host = OpenCV on the host; auto = device where the model runs on a GPU, else host (cheaper on a CPU).")) -> None:
    """Inspect cameras or streams: the live loop with heatmap overlay, contours, OK / NG / REVIEW with the score on
    the score scale, FPS and latencies. Keys: q quit, s snapshot, h hide overlay.

    With --config station.toml: a station — everything below in one TOML file, with recipes (model, threshold, ROI,
    ignore mask, minimum defect area, an optional review band) the PLC selects by Modbus register 11 / OPC UA /
    HTTP; a flag given here overrides the file's key; SIGHUP re-reads it (docs/station.md). Results to the line:
    every result into the inspection record (--history-db), MQTT through a durable outbox (--mqtt), the PLC
    handshake (--modbus, --opcua), one frame per PLC or HTTP trigger (--trigger); --http serves the live view,
    status.json, /metrics and the web app (who may call what: docs/api.md). --record writes the stream in short
    segment files (a power cut loses at most the last seconds; leftovers are recovered on the next start). Without a
    display it runs headless, with a note."""
    from edge_stpm.runtime.station.report import print_run

    given = {k: v for k, v in locals().items() if k not in ("ctx", "config", "safe_mode")}
    # given on the command line (click's ParameterSource.COMMANDLINE; by name: typer may bring its own click)
    flag = lambda name: getattr(ctx.get_parameter_source(name), "name", "") == "COMMANDLINE"  # noqa: E731
    code = print_run(out, err, given, config, flag, safe_mode)
    if code is not None:
        raise typer.Exit(code)


@app.command()
@one_line_errors
def infer(inputs: list[Path] = typer.Argument(..., help="Images or folders of images."),
          model: Path = typer.Option(..., help="A bundle folder, .onnx graph, TensorRT engine, training checkpoint (.pt), or a model on a Triton server: grpc://HOST:PORT/MODEL."),
          out_dir: Path = typer.Option(Path("reports/infer"), "--out", help="Overlays and summary.csv/json go here."),
          backend: BackendName = typer.Option("auto", help="Inference runtime (auto: TensorRT where it can run, else ONNX Runtime)."),
          precision: Optional[Precision] = typer.Option(None, help="Pick the graph/engine of this precision in a bundle."),
          threads: Optional[int] = typer.Option(None, **rng("threads"), help="CPU threads for ONNX Runtime / PyTorch CPU."),
          threshold: Optional[float] = typer.Option(None, **rng("threshold"), help="Threshold on the score scale (0 = a typical good part, 1.0 = the stored threshold; 1.2 = 20 % of that distance beyond it). Default 1.0."),
          roi: Optional[str] = typer.Option(None, help="Crop x,y,w,h (pixels) before inspection."),
          overlays: bool = typer.Option(True, "--overlays/--no-overlays", help="Write an overlay PNG per image (--no-overlays: only the summary).")) -> None:
    """Score images: per-image score (raw and on the score scale), threshold and verdict, overlay PNGs, summary.csv
    and summary.json."""
    from edge_stpm.runtime.infer import print_infer
    from edge_stpm.runtime.station.app import parse_roi

    print_infer(out, inputs, model, out_dir, backend, threshold, overlays, precision, threads, parse_roi(roi))


@app.command()
@one_line_errors
def history(db: Path = typer.Option(data_dir() / "history.db", "--history-db", "--db", help="The inspection record that edge-stpm run keeps (the same name as run --history-db and the station file's history.db; --db is kept for older scripts)."),
            since: Optional[str] = typer.Option(None, help="Only results since this: a duration (45s, 30m, 2h, 7d) or an ISO time (UTC unless it says otherwise)."),
            verdict: HistoryVerdict = typer.Option("any", help="Only OK, NG or REVIEW results (REVIEW: inside a recipe's review band)."),
            source: Optional[int] = typer.Option(None, **rng("source_index"), help="Only this source (0 = the first --camera/--source of the run)."),
            recipe: Optional[str] = typer.Option(None, help="Only results of this recipe (its name or index in the station file)."),
            limit: int = typer.Option(50, **rng("limit"), help="The newest this many results (shown oldest first)."),
            fmt: HistoryFormat = typer.Option("table", "--format", help="table on the terminal, or csv / json (to --out or stdout)."),
            out_file: Optional[Path] = typer.Option(None, "--out", help="Write the csv / json here instead of stdout.")) -> None:
    """Results from the inspection record run keeps: filter by time, verdict, source and recipe; a table, or CSV /
    JSON for a spreadsheet or a central database."""
    from edge_stpm.runtime.loop.sinks.record import print_history

    print_history(out, db, since, verdict, source, limit, recipe, fmt, out_file)


@app.command("triton-repo")
@one_line_errors
def triton_repo(model: Path = typer.Option(..., help="A bundle folder from edge-stpm export (or one of its model_<precision>.onnx graphs)."),
                out_dir: Path = typer.Option(Path("triton_repository"), "--out", help="The Triton model repository to write (created or refreshed)."),
                name: str = typer.Option("edge_stpm", help="Model name on the server (the Python-backend model; NAME_onnxruntime and NAME_tensorrt beside it)."),
                precision: Precision = typer.Option("fp32", help="Which of the bundle's graphs to serve."),
                max_batch: int = typer.Option(8, **rng("triton_max_batch"), help="Most requests Triton's dynamic batcher groups into one call (Python-backend model)."),
                queue_delay_us: int = typer.Option(500, **rng("triton_queue_delay_us"), help="How long a request may wait for others to batch with (µs)."),
                instances: int = typer.Option(1, **rng("triton_instances"), help="Model instances per model (CPU for the Python model)."),
                python_env: Optional[Path] = typer.Option(None, help="A virtualenv with numpy and onnxruntime for the Python-backend model (Triton's EXECUTION_ENV_PATH); default: the server's own Python."),
                threads: int = typer.Option(0, **rng("triton_threads"), help="ONNX Runtime threads per Python-model instance (0 = all cores).")) -> None:
    """A Triton Inference Server model repository from a bundle (Python backend with ONNX Runtime and dynamic
    batching; ORT and TensorRT backend configs); then run / infer --model grpc://SERVER:8001/edge_stpm on the camera
    boxes (pip install "edge-stpm[triton]"; docs/triton.md)."""
    from edge_stpm.runtime.triton_repo.writer import write_repository

    if not name.replace("_", "").replace("-", "").isalnum():
        raise UserError(f"--name {name!r}: letters, digits, '_' and '-' only")
    written = write_repository(model, out_dir, name, precision, max_batch, queue_delay_us, instances, python_env, threads)
    for m, backend in written.items():
        out.print(f"{out_dir / m}: {backend}", highlight=False, markup=False)
    out.print(f"serve it: tritonserver --model-repository {out_dir}; then edge-stpm run --model grpc://HOST:8001/{name} ...",
              highlight=False, markup=False)


@app.command()
@one_line_errors
def cameras(fmt: ListFormat = typer.Option("table", "--format", help="table on the terminal, or json."),
            no_open: bool = typer.Option(False, "--no-open", help="List without opening each industrial camera (no current format shown; leaves cameras another program holds alone).")) -> None:
    """The cameras this box sees: V4L2 devices (--camera N) and Basler GigE/USB3 cameras (--source basler://SERIAL;
    pip install "edge-stpm[basler]"): vendor, model, serial, interface, current format."""
    from edge_stpm.runtime.loop.sources import print_cameras

    print_cameras(out, err, fmt, open_each=not no_open)


@app.command()
@one_line_errors
def bench(model: Path = typer.Option(..., "--model", "--checkpoint", help="A bundle folder, .onnx graph or engine (runtime install), or a training checkpoint .pt (adds the PyTorch rows; needs edge-stpm[train])."),
          engine: Optional[Path] = typer.Option(None, help="A TensorRT engine to include."),
          backend: str = typer.Option("onnxruntime,pytorch,tensorrt", help="Comma list of onnxruntime, pytorch, tensorrt."),
          precision: str = typer.Option("fp32,fp16,int8", help="Comma list of fp32, fp16, int8."),
          batch: str = typer.Option("1,8", help="Comma list of batch sizes."),
          size: Optional[int] = typer.Option(None, **rng("size"), help="Must equal the checkpoint's input size (the graphs are static)."),
          data: Optional[Path] = typer.Option(None, help="MVTec test split: adds an image-AUROC column."),
          iters: int = typer.Option(50, **rng("iters"), help="Timed runs per row."),
          warmup: int = typer.Option(10, **rng("warmup"), help="Untimed warm-up runs per row."),
          threads: Optional[int] = typer.Option(None, **rng("threads"), help="CPU threads (default: all cores)."),
          work: Path = typer.Option(Path("engines/bench"), help="Where exported graphs for the rows are cached."),
          frame_size: str = typer.Option("640x480,1920x1080", help="Camera frame sizes WxH for the host-path vs device-path comparison (batch-1 rows); '' skips it."),
          source: Optional[list[str]] = typer.Option(None, help="Also run the loop on this real source (a camera such as basler://SERIAL?trigger=software, a stream): read cost and capture → verdict; repeat for several."),
          source_frames: int = typer.Option(300, **rng("source_frames"), help="Frames per --source row."),
          workers: str = typer.Option("auto", help="Loop configurations to compare (bundle or graph): comma list of worker counts, each with the cores divided among them (or --threads each); auto = 1 and the cores; '' skips."),
          out_dir: Optional[Path] = typer.Option(None, "--out", help="Folder for bench.json, bench.md and bench.png (default bench_results/<host>_<time>/)."),
          quiet: bool = typer.Option(False, help="No progress bar.")) -> None:
    """FPS and latency (p50/p90/p99) per backend × precision × batch beside the PyTorch eager FP32 baseline (a
    checkpoint) or ONNX Runtime FP32 (a bundle, on the runtime install): a table of ms/batch, ms/frame and frames/s,
    rows that could not run listed with the reason, a warning when the machine was busy; bench.json / bench.md /
    bench.png in --out. Batch-1 rows also compare the host path and the device frame path end to end (--frame-size);
    a bundle also compares loop configurations (--workers: the model alone and the loop with the overlay drawn for
    every frame)."""
    from edge_stpm.bench import print_bench

    print_bench(out, err, model=model, engine=engine, backend=backend, precision=precision, batch=batch, size=size,
                data=data, iters=iters, warmup=warmup, threads=threads, work=work, frame_size=frame_size,
                source=source, source_frames=source_frames, workers=workers, out_dir=out_dir, quiet=quiet)


@app.command()
@one_line_errors
def demo(out_dir: Path = typer.Option(Path("demo_out"), "--out", help="Folder for everything the demo makes."),
         epochs: int = typer.Option(25, **rng("epochs"), help="Training epochs (mobilenet_v2)."),
         teacher_weights: Optional[str] = typer.Option(None, help="Teacher weights file if torchvision's cache is empty and there is no internet."),
         threads: Optional[int] = typer.Option(None, **rng("threads"), help="CPU threads (default: the cores this process may use).")) -> None:
    """One command to try it: synthetic data → train → evaluate → export → run the loop on a video → bench."""
    need_train("demo")
    from edge_stpm.training.demo import run_demo
    from edge_stpm.training.devices import set_threads

    set_threads(threads)
    run_demo(out_dir, epochs, teacher_weights)


_STATION = typer.Option(..., "--station", help="The running station's URL (run --config with \\[http] bind), e.g. http://10.0.0.5:8080.")
_TOKEN = typer.Option(None, "--token", envvar="EDGE_STPM_ENGINEER_TOKEN", help="The engineer token (the station file's http.engineer_token); or set EDGE_STPM_ENGINEER_TOKEN.")
_CA = typer.Option(None, "--ca", envvar="EDGE_STPM_CA", help="The CA (or the station's self-signed certificate, tls/http-cert.pem) an https:// station is checked against; default: the system's.")


@app.command()
@one_line_errors
def service(config: Path = typer.Option(..., "--config", help="The station file the service runs."),
            user: Optional[str] = typer.Option(None, help="Run the service as this user (User= in the unit; default: a dedicated user edge-stpm, created as the unit's comment says)."),
            exe: Optional[str] = typer.Option(None, help="The edge-stpm executable (default: the one on PATH).")) -> None:
    """Print a systemd unit for this station (restart on failure, watchdog, journal, reload = SIGHUP, a sandbox, a
    dedicated user); docs/station.md ("Run as a service") says how to install it."""
    from edge_stpm.runtime.station.config import load
    from edge_stpm.runtime.station.service import unit_text

    load(config)  # a unit for a file that does not check would fail at every start
    sys.stdout.write(unit_text(config, exe, user))


@app.command()
@one_line_errors
def deploy(bundle: Path = typer.Argument(..., help="The bundle folder (from edge-stpm export)."),
           station: str = _STATION, recipe: str = typer.Option(..., help="The recipe (its name) to give the bundle."),
           token: Optional[str] = _TOKEN, ca: Optional[Path] = _CA) -> None:
    """Send a bundle to a running station: it is verified (manifest, schemas, TensorRT's rules, self-test) on the
    box, loaded beside the running model and swapped in between two frames; refused in one line otherwise."""
    from edge_stpm.runtime.station.client import call
    from edge_stpm.runtime.station.control import zip_bundle

    r = call(station, "deploy", {"recipe": recipe, "source": str(bundle)}, token, zip_bundle(bundle), ca=ca)
    out.print(f"recipe {recipe}: version {r['before']['version']} → {r['after']['version']} live "
              f"(self-test {r['self_test']['precision']} on {r['self_test']['backend']}: max error "
              f"{r['self_test']['max_error_threshold_units']:.2g} × threshold; loaded in {r['load_s']:.2f} s, "
              f"swapped in {r['swap_ms']:.2f} ms)", highlight=False, soft_wrap=True)


@app.command()
@one_line_errors
def rollback(station: str = _STATION, recipe: str = typer.Option(..., help="The recipe (its name) to roll back."),
             token: Optional[str] = _TOKEN, ca: Optional[Path] = _CA) -> None:
    """Return a recipe on a running station to its previous version, loaded and swapped in the same way."""
    from edge_stpm.runtime.station.client import call

    r = call(station, "rollback", {"recipe": recipe}, token, b"", ca=ca)
    out.print(f"recipe {recipe}: version {r['before']['version']} → {r['after']['version']} live", highlight=False)


@app.command()
@one_line_errors
def dataset(from_history: Path = typer.Option(..., "--from-history", help="The inspection record (the station's history.db) with review marks and saved frames."),
            recipe: str = typer.Option(..., help="The recipe whose reviewed results to take."),
            out_dir: Path = typer.Option(..., "--out", help="The MVTec-layout folder to write."),
            held_out: float = typer.Option(0.2, **rng("held_out"), help="Share of the reviewed good frames put in test/good (seeded by result id)."),
            include_ok: bool = typer.Option(False, "--include-ok", help="Add the sampled OK frames to train/good.")) -> None:
    """Reviewed results as data: frames marked good → train/good (a share to test/good), defect → test/<type>,
    manifest.json naming each file's record row and model."""
    from edge_stpm.runtime.learn.dataset import build

    m = build(from_history, recipe, out_dir, held_out, include_ok)
    out.print(f"{out_dir}: " + ", ".join(f"{k} {v}" for k, v in sorted(m["counts"].items())) + "; manifest.json",
              highlight=False, soft_wrap=True)


@app.command()
@one_line_errors
def collect(out_dir: Path = typer.Option(..., "--out", help="The MVTec-layout folder to fill: raw frames go to OUT/train/good/ (numbering goes on in a folder that has some), contact_sheet.jpg beside."),
            config: Optional[Path] = typer.Option(None, "--config", help="A station file: its source, trigger, PLC servers, HTTP and the first recipe's ROI (flags given here win)."),
            camera: Optional[list[int]] = typer.Option(None, **rng("camera"), help="Camera index (V4L2 on Linux)."),
            source: Optional[list[str]] = typer.Option(None, help="Any source run takes: video file, image folder, RTSP/HTTP URL, GStreamer pipeline, basler://SERIAL?… (a camera trigger: one frame per trigger)."),
            count: int = typer.Option(200, **rng("collect_count"), help="Stop when this many frames are kept."),
            min_change: float = typer.Option(3.0, **rng("min_change"), help="Skip a frame whose 64x64 grey thumbnail differs from the last kept one's by less than this (mean absolute difference, grey levels): a stopped conveyor shows the same part again. 0 keeps every frame."),
            trigger: Trigger = typer.Option("free-run", help="free-run: every frame; plc: one frame per PLC trigger (--modbus or --opcua; the PLC reads OK); http: one per POST /trigger on --http."),
            roi: Optional[str] = typer.Option(None, help="Crop x,y,w,h (pixels) before saving: the ROI run will inspect."),
            modbus: Optional[str] = typer.Option(None, help="The PLC handshake as a Modbus TCP server at HOST:PORT (docs/line.md)."),
            opcua: Optional[str] = typer.Option(None, help="The PLC handshake as an OPC UA server at HOST:PORT."),
            opcua_user: Optional[str] = typer.Option(None, help="USER:PASSWORD the OPC UA server requires."),
            http: Optional[str] = typer.Option(None, help="Serve the live view (and POST /trigger) at HOST:PORT while collecting."),
            http_token: Optional[str] = typer.Option(None, help="Token every HTTP endpoint requires."),
            max_frames: Optional[int] = typer.Option(None, **rng("max_frames"), help="Stop after reading this many frames, kept or not.")) -> None:
    """Day one, no model needed: save good parts from the station's own camera, lighting and trigger into
    DIR/train/good (MVTec layout) — near-duplicates (a stopped conveyor) skipped, progress shown, contact_sheet.jpg
    at the end (docs/feedback.md). Then: train, evaluate, deploy."""
    from edge_stpm.runtime.learn.collect import CollectSettings
    from edge_stpm.runtime.station.app import parse_roi
    from edge_stpm.runtime.station.report import print_collect

    cfg = CollectSettings([str(c) for c in camera or []] + list(source or []), out_dir, count, min_change, trigger,
                          parse_roi(roi) if roi else None, modbus, opcua, opcua_user, http, http_token,
                          max_frames=max_frames)
    print_collect(out, err, cfg, config)


@app.command("update-memory")
@one_line_errors
def update_memory(checkpoint: Optional[Path] = typer.Option(None, help="A training checkpoint (model.pt) of a memory-bank head (memory or both): needs the training install; writes a checkpoint."),
                  bundle: Optional[Path] = typer.Option(None, help="Or a bundle that carries its teacher pack (every bundle fit and update-memory make): runs on the runtime install; writes a bundle."),
                  data: Path = typer.Option(..., help="The reviewed good parts: a dataset --from-history folder (train/good joins the memory, test/good the calibration) or a folder of good images."),
                  out_path: Path = typer.Option(..., "--out", help="The new checkpoint (--checkpoint) or bundle folder (--bundle)."),
                  method: UpdateMethod = typer.Option(DEFAULT_UPDATE_METHOD, help="How the new parts enter the bank: auto = transfer where the model's training images are on this machine, else reselect; reselect = the bank chosen again from old and new patches within the coreset share; extend = the old entries kept, new ones added until the new parts are covered as densely; transfer = the new look (defocus and tone, at the images' own resolution) carried to the model's own training images too, then extend (docs/learn.md)."),
                  quiet: bool = typer.Option(False, help="No progress bars.")) -> None:
    """Reviewed good parts join a memory-bank model, nothing trained: the new parts enter its bank by --method (a
    drifted look is carried to the model's own training images where they are on this machine), then the thresholds
    are calibrated again on the old and new held-out good images. A bundle (--bundle) on the runtime install, or a
    checkpoint (--checkpoint) on the training install."""
    if (checkpoint is None) == (bundle is None):
        raise UserError("give either --checkpoint (a training checkpoint) or --bundle (a fitted bundle), not both")
    if bundle is not None:
        from edge_stpm.runtime.learn.report import print_update

        return print_update(out, bundle, data, out_path, str(method), quiet)
    need_train("update-memory")
    from edge_stpm.training.report import print_memory_update

    print_memory_update(out, checkpoint, data, out_path, quiet, str(method))


@app.command()
@one_line_errors
def teacher(backbone: Backbone = typer.Option("mobilenet_v2", help="The teacher network (its ImageNet weights must be on this machine)."),
            out_dir: Path = typer.Option(..., "--out", help="The teacher pack folder to write."),
            size: int = typer.Option(256, **rng("size"), help="Model input side (pixels), as train --size."),
            input_blur: Optional[float] = typer.Option(None, **rng("input_blur"), help="Gaussian blur of the input before the teacher (sigma, model pixels), as train --input-blur (default: the memory head's, 1 at --size 256, scaled with the size).")) -> None:
    """Write a teacher pack: what a box needs to learn a part without PyTorch (edge-stpm fit) — the frozen teacher's
    patch-feature graph, the memory head's graph with a placeholder bank, and teacher.json (sizes, sha256, the
    weights' source and licence). Needs the training install; any bundle made by fit carries one too."""
    need_train("teacher")
    from edge_stpm.training.export.teacher_pack import write_teacher_pack

    doc = write_teacher_pack(out_dir, str(backbone), size, input_blur=input_blur)
    total = sum((out_dir / f).stat().st_size for f in doc["sha256"]) / 2**20
    out.print(f"teacher pack {out_dir}: {doc['backbone']} {size}², {doc['features']['dims']} feature dims on a "
              f"{doc['features']['grid'][0]}×{doc['features']['grid'][1]} grid, {total:.1f} MB; weights: "
              f"{doc['licence']}", highlight=False, soft_wrap=True)


@app.command()
@one_line_errors
def fit(teacher_pack: Path = typer.Option(..., "--teacher", help="A teacher pack (edge-stpm teacher), or a bundle that carries one (every bundle fit makes)."),
        data: Path = typer.Option(..., help="Good images: an MVTec-layout folder (train/good), a collect folder, or a folder of images."),
        out_dir: Path = typer.Option(..., "--out", help="The bundle folder to write (new or empty)."),
        coreset: float = typer.Option(DEFAULT_CORESET, **rng("coreset"), help="Share of the good patches the memory keeps (as train --coreset)."),
        bank_max_mb: float = typer.Option(DEFAULT_BANK_MAX_MB, **rng("bank_max_mb"), help="The bank's size cap in MB (float32)."),
        coreset_chunk: int = typer.Option(DEFAULT_CORESET_CHUNK, **rng("coreset_chunk"), help="0 = the exact greedy k-center up to --coreset-exact-max patches, the two-stage one above (as train); N > 0 = over chunks of at most N patches (cost linear in the patches)."),
        coreset_exact_max: int = typer.Option(DEFAULT_CORESET_EXACT_MAX, **rng("coreset_exact_max"), help="With --coreset-chunk 0: the exact greedy k-center up to this many patches; above it the two-stage one (chunks keep 10x the entries as candidates, then the exact greedy among them: minutes, not hours, for tiled fits and thousands of images)."),
        tiles: Optional[str] = typer.Option(None, help="Tiled fit for large frames: ROWSxCOLS overlapping tiles (e.g. 2x2), as train --tiles: each tile fitted to the pack's size, the maps stitched back, the frame's score the largest tile's; 1x1 = the whole frame (default: the teacher bundle's own grid, else the whole frame)."),
        tile_overlap: float = typer.Option(0.125, **rng("tile_overlap"), help="With --tiles: the share of a tile's side shared with its neighbour."),
        seed: int = typer.Option(0, **rng("seed"), help="The held-out split and the coreset's start (as train --seed)."),
        threads: Optional[int] = typer.Option(None, **rng("threads"), help="CPU threads for ONNX Runtime (default: all)."),
        precision: str = typer.Option("fp32", help="fp32, plus fp16 and/or int8 (e.g. fp32,fp16,int8): an FP16 graph (the pack's FP16 template: teacher FP16, head FP32) and an INT8 Q/DQ graph (the FP32 graph quantized on the training images), for TensorRT FP16/INT8 engines; each kept only if it passes export's gate against the FP32 graph on the held-out images."),
        quiet: bool = typer.Option(False, help="No progress bars.")) -> None:
    """Learn a part on the box, on the runtime install (no PyTorch): a memory model of good images — the teacher's
    patch features in ONNX Runtime, the coreset in numpy, thresholds from held-out good images, the no-defect check,
    TensorRT's rules, a self-test and a manifest — written as a bundle ready to deploy. The same recipe and split as
    train --head memory, so the two agree. A failed or interrupted fit leaves nothing half-written."""
    from edge_stpm.contract.tiles import parse_tiles
    from edge_stpm.runtime.learn.fit import FitConfig
    from edge_stpm.runtime.learn.report import print_fit

    print_fit(out, FitConfig(teacher_pack, data, out_dir, coreset, bank_max_mb, coreset_chunk, seed, threads=threads,
                             precisions=tuple(p.strip() for p in precision.split(",") if p.strip()),
                             tiles=parse_tiles(tiles, tile_overlap), tiles_from_pack=tiles is None,
                             exact_max=coreset_exact_max), quiet)


config_app = typer.Typer(no_args_is_help=True, help="The station file: check it, show it with its defaults, its JSON Schema.")
app.add_typer(config_app, name="config")


@config_app.command("check")
@one_line_errors
def config_check(file: Path = typer.Argument(..., help="The station file (TOML).")) -> None:
    """Check a station file against its schema and that every model and mask it names exists; one line per
    problem, naming its key path; exit 2 if any."""
    from edge_stpm.runtime.station.config import load

    st = load(file)
    out.print(f"{file}: ok — {len(st.recipes)} recipes ({', '.join(f'{r.index} {r.name}' for r in st.recipes)}), "
              f"{len(st.sources)} sources", highlight=False, markup=False, soft_wrap=True)


@config_app.command("show")
@one_line_errors
def config_show(file: Path = typer.Argument(..., help="The station file (TOML).")) -> None:
    """The effective configuration: every key of the file with the value run will use (the file's, else run's
    default), as TOML — with the recipes created on the box (the model store's recipes.json) after the file's, each
    marked as such."""
    from edge_stpm.runtime.station.config import load
    from edge_stpm.runtime.station.created import show_toml

    defaults = {p.name: p.default for p in typer.main.get_command(app).commands["run"].params}  # type: ignore[attr-defined]
    sys.stdout.write(show_toml(load(file), defaults))


@config_app.command("schema")
@one_line_errors
def config_schema(out_file: Optional[Path] = typer.Option(None, "--out", help="Write it here (default: stdout).")) -> None:
    """The station file's JSON Schema, for editors (completion and checks); docs/station.schema.json is this."""
    from edge_stpm.common.files import write_text
    from edge_stpm.runtime.station.config import schema_json

    if out_file is None:
        sys.stdout.write(schema_json())
    else:
        write_text(out_file, schema_json())


def main() -> None:
    app(prog_name="edge-stpm")


if __name__ == "__main__":
    sys.exit(main())
