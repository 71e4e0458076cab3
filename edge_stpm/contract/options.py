"""Every command-line option's range and choices, in one place (torch-free: the runtime CLI reads it too).

``cli.py`` declares each numeric option with ``**RANGE["name"]`` (typer's ``min``/``max``: click checks the value
before any work starts, and ``--help`` shows the range) and each choice with a ``Literal`` of a tuple below.
``tests/unit/test_options.py`` fails on a numeric or enum option without a declared range or choice, and exercises
both ends of every range. Ranges are what makes sense on a line, not what the code could survive.
"""
from __future__ import annotations

from typing import Any, Literal

from edge_stpm.common.errors import UserError

# choices (the training-side registries are checked against these names by tests/unit/test_options.py)
BACKBONE_NAMES = ("resnet18", "mobilenet_v2", "efficientnet_lite0", "wide_resnet50_2")
FIT_NAMES = ("pad", "stretch", "crop")
THRESHOLD_METHOD_NAMES = ("logsigma", "percentile", "sigma")
DEVICE_NAMES = ("auto", "cpu", "cuda")
LOSS_NAMES = ("mean", "sum", "hard")
CALIB_METHOD_NAMES = ("minmax", "percentile", "entropy")
BACKEND_NAMES = ("auto", "tensorrt", "onnxruntime", "pytorch", "triton")
ENGINE_PRECISION_NAMES = ("fp16", "int8", "fp32")
PRECISION_NAMES = ("fp32", "fp16", "int8")
FRAME_PATH_NAMES = ("auto", "device", "host")
HISTORY_VERDICTS = ("any", "OK", "NG", "REVIEW")
HISTORY_FORMATS = ("table", "csv", "json")
TRIGGER_NAMES = ("free-run", "plc", "http")
LIST_FORMATS = ("table", "json")
MAP_COMBINE_NAMES = ("product", "weighted_sum")
HEAD_NAMES = ("stpm", "memory", "both")
TRAIN_HEAD_NAMES = HEAD_NAMES + ("auto",)  # auto: the head with the best no-defect check (synthetic anomalies)
# the head's defaults live here (torch-free) so the runtime CLI's --help shows them; training reads them too
# won round 3 (benchmarks/results/accuracy/RULE_R3.md, TABLE_R3.md); an old checkpoint keeps its head
DEFAULT_HEAD = "memory"
# the fit each head was chosen with: pad for the student (RULE.md), stretch for the memory bank (RULE_R3.md)
DEFAULT_FIT = {"stpm": "pad", "both": "pad", "memory": "stretch", "auto": "pad"}
DEFAULT_CORESET = 0.01  # memory head: the share of training patches kept (benchmarks/results/accuracy/RULE_R3.md)
DEFAULT_BANK_MAX_MB = 32.0  # memory head: the bank's float32 bytes are capped here, for the edge
# memory head: k-center runs on a random projection to this many dims, 0 = on the features themselves (PatchCore's
# and anomalib's practice): 0 won RULE_R3.md addendum 5 over 32 (+0.0068 on the rule score, 3 seeds; TABLE_R3.md)
DEFAULT_CORESET_DIMS = 0
DEFAULT_CORESET_CHUNK = 0  # 0: exact greedy k-center up to DEFAULT_CORESET_EXACT_MAX patches, two-stage above
DEFAULT_CORESET_EXACT_MAX = 1_000_000  # runtime/learn/coreset.py; benchmarks/results/learn/RULE.md, addendum 3
# how update-memory --bundle puts reviewed good parts into a bank (runtime/learn/update.py); the default by
# benchmarks/results/learn/drift/RULE.md
UPDATE_METHODS = ("auto", "reselect", "extend", "transfer")
DEFAULT_UPDATE_METHOD = "auto"  # transfer where the model's training images are on the box, else reselect
# the image threshold's k (logsigma / sigma) per head: 3 for the student (round 1); 2 for the memory bank, by
# RULE_R3.md addendum 1 (the highest recall whose precision stays >= 0.90: benchmarks/results/r3/threshold_k/);
# the pixel threshold keeps k 3 for every head
DEFAULT_THRESHOLD_K = {"stpm": 3.0, "both": 3.0, "memory": 2.0}
PIXEL_THRESHOLD_K = 3.0
# a Gaussian blur of the model's input (σ in its pixels at a 256² input, scaled with the input side: default_input_blur;
# 0 = none) and the pixel threshold's own method (None: logsigma with PIXEL_THRESHOLD_K) per head: σ 1 and p999 for the
# memory bank by RULE_R4.md addendum 5 (benchmarks/results/r4/I_table.md, measured at 256²); the student was never
# measured with them; auto compares heads on the raw input
DEFAULT_INPUT_BLUR = {"stpm": 0.0, "both": 0.0, "memory": 1.0, "auto": 0.0}
INPUT_BLUR_SIDE = 256  # the input side DEFAULT_INPUT_BLUR's σ is for
DEFAULT_PIXEL_METHOD: dict[str, str | None] = {"stpm": None, "both": None, "memory": "p999", "auto": None}

# the choices as types for typer and pydantic: a Literal of a tuple is valid at runtime (the same type as the names
# written out) but not a static type to mypy, hence each ignore
Backbone = Literal[BACKBONE_NAMES]  # type: ignore[valid-type]
Fit = Literal[FIT_NAMES]  # type: ignore[valid-type]
ThresholdMethod = Literal[THRESHOLD_METHOD_NAMES]  # type: ignore[valid-type]
DeviceName = Literal[DEVICE_NAMES]  # type: ignore[valid-type]
Loss = Literal[LOSS_NAMES]  # type: ignore[valid-type]
CalibMethod = Literal[CALIB_METHOD_NAMES]  # type: ignore[valid-type]
BackendName = Literal[BACKEND_NAMES]  # type: ignore[valid-type]
EnginePrecision = Literal[ENGINE_PRECISION_NAMES]  # type: ignore[valid-type]
Precision = Literal[PRECISION_NAMES]  # type: ignore[valid-type]
FramePath = Literal[FRAME_PATH_NAMES]  # type: ignore[valid-type]
HistoryVerdict = Literal[HISTORY_VERDICTS]  # type: ignore[valid-type]
HistoryFormat = Literal[HISTORY_FORMATS]  # type: ignore[valid-type]
UpdateMethod = Literal[UPDATE_METHODS]  # type: ignore[valid-type]
Trigger = Literal[TRIGGER_NAMES]  # type: ignore[valid-type]
ListFormat = Literal[LIST_FORMATS]  # type: ignore[valid-type]
MapCombine = Literal[MAP_COMBINE_NAMES]  # type: ignore[valid-type]
HeadName = Literal[HEAD_NAMES]  # type: ignore[valid-type]
TrainHeadName = Literal[TRAIN_HEAD_NAMES]  # type: ignore[valid-type]

# numeric ranges, closed at both ends: name → (min, max)
RANGES: dict[str, tuple[float, float]] = {
    "threads": (1, 256),
    "camera": (0, 63),
    "source_frames": (10, 1_000_000),
    "triton_max_batch": (1, 256),
    "triton_queue_delay_us": (0, 1_000_000),
    "triton_instances": (1, 64),
    "triton_threads": (0, 256),
    "source_index": (0, 63),
    "seed": (0, 2**31 - 1),
    "epochs": (1, 10_000),
    "lr": (1e-6, 10.0),
    "momentum": (0.0, 0.999),
    "weight_decay": (0.0, 1.0),
    "batch_size": (1, 4096),
    "batch": (1, 256),
    "val_fraction": (0.05, 0.5),
    "size": (32, 2048),
    "smoothing": (0.0, 64.0),
    "input_blur": (0.0, 4.0),
    "score_top": (0.0, 10.0),
    "threshold_k": (1.0, 6.0),
    "tile_overlap": (0.0, 0.5),
    "coreset_dims": (0, 4096),
    "coreset_chunk": (0, 100_000_000),
    "coreset_exact_max": (0, 1_000_000_000),
    "coreset": (0.0001, 1.0),
    "held_out": (0.0, 0.95),
    "bank_max_mb": (0.1, 4096.0),
    "n_images": (1, 1_000_000),
    "video_frames": (1, 1_000_000),
    "n_test_defect": (0, 100_000),
    "calib_count": (20, 100_000),
    "workspace_mib": (64, 1_048_576),
    "threshold": (0.01, 100.0),
    "anomaly_interval": (0.0, 86_400.0),
    "max_frames": (1, 10**12),
    "reconnect": (0.0, 86_400.0),
    "record_segment": (0.0, 86_400.0),
    "alpha": (0.0, 1.0),
    "http_fps": (0.1, 120.0),
    "iters": (3, 1_000_000),
    "warmup": (0, 1_000_000),
    "queue": (1, 10_000),
    "workers": (1, 64),
    "record_keep_days": (0.0, 36_500.0),
    "record_max_mb": (1.0, 1_048_576.0),
    "outbox_max": (10, 10_000_000),
    "limit": (1, 10_000_000),
    "timeout": (0.1, 3600.0),
    "collect_count": (1, 1_000_000),
    "min_change": (0.0, 255.0),
}


def default_input_blur(head: str, size: int) -> float:
    """The input blur's σ (pixels of a ``size``² input) for ``head``: DEFAULT_INPUT_BLUR's, which was chosen at 256²,
    scaled with the side so that it blurs the same share of the part (σ 0.5 at 128², 1.5 at 384²)."""
    return DEFAULT_INPUT_BLUR.get(head, 0.0) * size / INPUT_BLUR_SIDE


def parse_ints(text: str, what: str, minimum: int = 1) -> list[int]:
    """A comma list of integers, each at least ``minimum`` (``--batch 1,8``); one UserError otherwise."""
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{what} must be a comma list of integers, not {text!r}") from None
    if not vals or min(vals) < minimum:
        raise UserError(f"{what} must be integers of at least {minimum}")
    return vals


def rng(name: str) -> dict[str, Any]:
    """``typer.Option(..., **rng("epochs"))``: the declared range as typer's min/max (ints for integer options)."""
    lo, hi = RANGES[name]
    return {"min": lo, "max": hi}


# free-text options and who parses them (one line each, exit 2, on a bad value)
FREE_TEXT: dict[str, str] = {
    "--precision": "contract.artifacts.parse_precisions (comma list of fp32, fp16, int8)",
    "--frame-size": "contract.artifacts.parse_frame_size (WxH, comma list)",
    "--batch": "contract.options.parse_ints (comma list of integers ≥ 1) in bench; a number in export",
    "--workers": "contract.options.parse_ints (comma list of worker counts ≥ 1, or auto) in bench; a number in run",
    "--backend": "bench: comma list checked against onnxruntime, pytorch, tensorrt",
    "--int8-float-stages": "contract.options.parse_ints (stage numbers 0, 1, 2)",
    "--roi": "runtime.station.app.parse_roi (x,y,w,h)",
    "--tiles": "contract.tiles.parse_tiles (ROWSxCOLS, each 1..8)",
    "--http": "common.bind.parse_bind (HOST:PORT)",
    "--http-token": "any text",
    "--source": "runtime.loop.sources.describe (file, folder, URL, GStreamer pipeline, basler:// via "
                "runtime.loop.basler.parse_spec)",
    "--teacher-weights": "a file, or 'random'",
    "--mqtt": "runtime.loop.sinks.mqtt.parse_url (mqtt[s]://[user:pass@]host[:port])",
    "--mqtt-topic": "runtime.loop.sinks.mqtt.check_topic (no wildcards; {host} and {source} filled in)",
    "--modbus": "common.bind.parse_bind (HOST:PORT)",
    "--opcua": "common.bind.parse_bind (HOST:PORT)",
    "--opcua-user": "runtime.line.opcua.parse_user (USER:PASSWORD)",
    "--since": "runtime.loop.sinks.record.parse_time (a duration such as 2h, or an ISO time)",
    "--name": "cli.triton_repo (letters, digits, '_' and '-')",
    "--recipe": "history: a recipe's name or index, matched as text against the record (no match: no rows); "
                "deploy / rollback: the station answers 422 for an unknown one",
    "--station": "runtime.station.client.call (http[s]://HOST[:PORT], port 1–65535)",
    "--token": "any text (the engineer token)",
    "--user": "service: a user name for systemd's User= (any text)",
    "--exe": "service: the edge-stpm executable's path (any text)",
}


def small_int(text: str, default: int = -1) -> int:
    """A number from a URL path (a source, a thumbnail): plain ASCII digits, at most 18 of them; anything else
    ``default`` ('²' passes ``str.isdigit`` but not ``int``; 5,000 digits pass both checks' first half)."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else default
