"""The ``selfseg`` argument parser: its commands and their options, in groups (input, method and training,
foreground, output, performance). Parsing only: ``selfseg.cli`` dispatches."""

from __future__ import annotations

import argparse

from selfseg import __version__
from selfseg.benchmark import FOREGROUND_RULES
from selfseg.foreground import FOREGROUNDS, TARGETS
from selfseg.io import IMAGE_SUFFIXES
from selfseg.methods import ALL_METHODS, BASELINE_CLUSTERS, DEFAULT_SIZE, METHODS, PRECISIONS
from selfseg.readout import READOUTS
from selfseg.runner import BACKENDS
from selfseg.study import NETWORKS, StudySettings

__all__ = ["build_parser"]

_SEGMENT_HELP = f"""\
Segment each image on its own, without labels: a fresh network is fitted to the image, its
clusters are kept and the foreground is chosen among them automatically.

inputs: image files ({", ".join(IMAGE_SUFFIXES)}), volumes (DICOM files and series folders, NIfTI
.nii/.nii.gz, multi-frame TIFF; segmented slice by slice along --axis), folders (searched recursively,
all of these by default, or the files matching --glob), and @LIST files (one path per line, relative to
the list file; blank lines and # comments skipped).

files written to DIR, for an input <stem>.png (a volume: <stem>_*.nii.gz, in the source's space):
  <stem>_labels.png   cluster map, clusters 1..n by decreasing area (8-bit, or 16-bit above 255)
  <stem>_mask.png     foreground mask, 0/255
  <stem>_overlay.png  the mask drawn over the image
  results.csv         one row per input: its path, iterations, seconds, labels, foreground pixels, the input's
                      SHA-256 and every parameter; rows of earlier runs into DIR are kept
  failures.csv        image, reason: inputs of this run that could not be segmented (only if any)
  metrics.csv         with --gt: Dice, IoU, HM, XOR, sensitivity, specificity, HD95, ASSD per image
  report.html         with --report: thumbnails, rows, scores, plots and review marks (also: selfseg report DIR)

resume: repeating a command skips the inputs whose results.csv row (same input bytes, same parameters)
and files are complete; a changed input or parameter is fitted again (another --target or --point only
re-chooses the masks). --overwrite fits everything again. An interrupted run leaves complete files only.

exit status: 0 all inputs segmented (and scored), 1 some failed, 2 usage error (e.g. a missing input),
3 an output could not be written (a full or read-only disk: the same command resumes once space is back),
130 interrupted.

example:
  selfseg segment scans/ @more.txt extra/Test_1.bmp --out results --max-iter 30 --seed 1 --workers 2
"""


_EVALUATE_HELP = """\
Score the masks of a 'selfseg segment' output folder (<stem>_mask.png) against ground-truth masks.
Writes PRED_DIR/metrics.csv (one row per image: dice, iou, hm, xor, sensitivity, specificity, hd95,
assd) and prints mean, std and median of each metric (over finite values; an empty mask gives an
infinite HD95). Surface distances are in pixels unless --spacing is given.

--gt is a folder of masks named <stem>.png (or <stem>_segmentation.png, <stem>_lesion.bmp, ...) or a
dataset: images/ + masks/ folders, the PH2 layout, or ISIC challenge naming.

exit status: 0 every mask scored, 1 some could not be scored, 2 usage error, 3 metrics.csv could not be
written (a full or read-only disk).

example:
  selfseg evaluate results --gt ../data/isic2018/masks
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _counts(text: str) -> int | tuple[int, ...]:
    counts = tuple(_positive_int(part) for part in text.split(","))
    return counts[0] if len(counts) == 1 else counts


def _seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _workers(text: str) -> int | str:
    return "auto" if text == "auto" else _positive_int(text)


def _batch_images(text: str) -> int | None:
    return None if text == "auto" else _positive_int(text)


def _size(text: str) -> int | None:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (native) or positive, got {value}")
    return value or None


def _spacing(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"spacing must be positive, got {text!r}")
    return values


def _point(text: str) -> tuple[int, int]:
    parts = text.split(",")
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"expected X,Y pixel coordinates (non-negative integers), got {text!r}")
    return int(parts[0]), int(parts[1])


def _method_defaults(name: str) -> str:
    """``"s3net: 50"``-style list of a ``MethodSpec`` field's value per method, for help texts."""
    return ", ".join(f"{method}: {getattr(spec, name)}" for method, spec in sorted(METHODS.items()))


def _groups(command: argparse.ArgumentParser) -> dict[str, argparse._ArgumentGroup]:
    """The option groups of a command that segments: input, method, foreground, output, performance."""
    titles = {
        "input": "input",
        "method": "method and training",
        "foreground": "foreground (how the mask is chosen)",
        "output": "output",
        "performance": "performance",
    }
    return {key: command.add_argument_group(title) for key, title in titles.items()}


def _add_run_options(groups: dict[str, argparse._ArgumentGroup], *, several_seeds: bool = False) -> None:
    """Options shared by the commands that segment, in their ``groups``. With ``several_seeds``, ``--seed``
    takes a comma-separated list (a tuple)."""
    _add_fit_options(groups["method"], several_seeds=several_seeds)
    groups["foreground"].add_argument(
        "--target",
        choices=TARGETS,
        default="auto",
        help="what the mask should be, without ground truth: lesion (one compact blob, e.g. dermoscopy), "
        "lungs (both lungs, CT and chest X-ray), polyp (one compact region of an endoscope's field; far less "
        "reliable) or auto (polyp on endoscope frames, lungs on grey images when found, else lesion) "
        "(default: %(default)s)",
    )
    _add_performance_options(groups["performance"])
    groups["output"].add_argument("--quiet", action="store_true", help="no progress bar")
    groups["output"].add_argument(
        "--report", action="store_true", help="also write DIR/report.html, the page for reviewing the results"
    )


def _add_fit_options(method: argparse._ArgumentGroup, *, several_seeds: bool) -> None:
    """The seed, working size, readout and fits options of the commands that segment."""
    if several_seeds:
        method.add_argument(
            "--seed",
            type=_seeds,
            default=(0,),
            metavar="SEED[,SEED...]",
            help="random seed; several (e.g. 0,1,2) run the benchmark once per seed into OUT/seed-N and write "
            "the mean over the seeds and its standard deviation to OUT/benchmark.md (default: 0)",
        )
    else:
        method.add_argument("--seed", type=int, default=0,
                            help="seed of a network's weights and transforms; k-means and Otsu take none "
                            "(default: %(default)s)")
    method.add_argument(
        "--size",
        type=_size,
        default=DEFAULT_SIZE,
        metavar="PX",
        help="longer image side during training, 0 for native resolution (default: %(default)s)",
    )
    method.add_argument(
        "--readout",
        choices=READOUTS,
        default="kmeans",
        help="how a fitted network's scores become clusters: kmeans (k-means of the score vectors and pixel "
        "colours into --readout-clusters clusters) or argmax (the papers' "
        "per-pixel argmax; kmeans is better on chest X-rays, lung CT and dermoscopy, see docs/results.md; "
        "baselines ignore it) (default: %(default)s)",
    )
    method.add_argument(
        "--readout-clusters",
        type=_counts,
        metavar="K[,K...]",
        help="clusters of the kmeans readout and of --method kmeans; several counts (e.g. 3,4,5) read out once "
        "each and keep the readout whose mask agrees most with colour k-means' under the lesion prior (a referee "
        "that does not depend on the fit), else the one the others agree with most (default: --min-labels, 3, on grey "
        "images such as CT and X-rays; --min-labels to --min-labels + 2, 3,4,5, on colour images such as "
        "dermoscopy)",
    )
    method.add_argument(
        "--fits",
        type=int,
        default=1,
        metavar="N",
        help="networks fitted to each image (seeds s, s+1, ...); the mask they agree on most is kept, for N "
        "times the cost: a vote against a single fit's draw (default: %(default)s)",
    )


def _add_performance_options(performance: argparse._ArgumentGroup) -> None:
    """Where and how fast the fits run: device, precision, workers, threads, batching, Ray."""
    performance.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default: %(default)s)")
    performance.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="bfloat16 runs the network under autocast: faster for msformer on CPUs with AVX512-BF16, slower "
        "for s3net, whose depthwise and deformable convolutions lack fast bfloat16 kernels (default: %(default)s)",
    )
    performance.add_argument(
        "--workers",
        type=_workers,
        default="auto",
        metavar="N",
        help="inputs fitted at once, each in its own process; auto: as many as the CPU cores (divided by "
        "--threads), the free memory and the inputs allow, 1 on a GPU (default: %(default)s)",
    )
    performance.add_argument(
        "--threads",
        type=_positive_int,
        default=1,
        metavar="T",
        help="torch threads per fit; CPU results depend on T, not on --workers (default: %(default)s)",
    )
    performance.add_argument(
        "--batch-images",
        type=_batch_images,
        default="auto",
        metavar="N",
        help="networks fitted at once in one pass, each on its own image (the same results up to rounding); "
        "auto: 1 on the CPU, where batching does not pay, as many as half the free memory holds on a GPU "
        "(default: %(default)s)",
    )
    performance.add_argument(
        "--backend",
        choices=BACKENDS,
        default="local",
        help="local: worker processes on this machine (--workers); ray: one Ray task per input, on the cluster "
        "at --ray-address or a local Ray (needs selfseg[ray]) (default: %(default)s)",
    )
    performance.add_argument(
        "--ray-address", metavar="ADDR",
        help="Ray cluster to join: auto, HOST:PORT (with RAY_AUTH_MODE=token where it uses token authentication) or "
        "ray://head:10001",
    )
    performance.add_argument(
        "--ray-cpus", type=float, default=1.0, metavar="C", help="CPUs per Ray task (default: %(default)s)"
    )
    performance.add_argument(
        "--ray-gpus", type=float, default=0.0, metavar="G",
        help="GPUs per Ray task; a fraction lets several fits share a GPU (default: %(default)s)",
    )


def _described(commands: argparse._SubParsersAction, name: str, summary: str, text: str) -> argparse.ArgumentParser:
    """A command whose ``--help`` shows ``text`` as written (examples, tables)."""
    return commands.add_parser(name, help=summary, description=text, formatter_class=argparse.RawDescriptionHelpFormatter)


def _add_segment(commands: argparse._SubParsersAction) -> None:
    """The ``segment`` command."""
    seg = _described(commands, "segment", "segment image files or folders", _SEGMENT_HELP)
    groups = _groups(seg)
    source = groups["input"]
    source.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="image or volume file, folder (recursive), DICOM series folder or @LIST"
    )
    source.add_argument(
        "--glob",
        metavar="PATTERN",
        help="in folders, segment the files matching PATTERN (e.g. '*.png', 'CT/*.dcm'; default: every image and "
        "volume suffix, and DICOM files by their header)",
    )
    source.add_argument(
        "--axis",
        type=int,
        choices=(0, 1, 2),
        help="volumes: axis of the stored array to slice along (default: 2 for NIfTI, 0 for DICOM and TIFF)",
    )
    method = groups["method"]
    method.add_argument(
        "--method",
        choices=ALL_METHODS,
        default="s3net",
        help="network (s3net, msformer, dfc = Kim & Kanezaki 2020) or classical baseline (otsu; kmeans of the "
        "colours with the --readout-clusters counts) "
        "(default: %(default)s)",
    )
    method.add_argument(
        "--max-iter", type=_positive_int, metavar="N", help=f"most training iterations (default: {_method_defaults('max_iter')})"
    )
    method.add_argument(
        "--min-labels",
        type=_positive_int,
        metavar="K",
        help=f"stop once at most K clusters remain; kmeans: its fewest clusters (default: "
        f"{_method_defaults('min_labels')}, kmeans: {BASELINE_CLUSTERS['kmeans']})",
    )
    output = groups["output"]
    output.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    output.add_argument("--gt", metavar="DIR", help="ground-truth masks or dataset: score the masks after segmenting "
                        "(and the ground truth of --foreground oracle)")
    output.add_argument("--overwrite", action="store_true", help="fit every input again, even if its outputs are complete")
    _add_run_options(groups)
    _add_rule_options(groups["foreground"])
    _add_study_options(seg.add_argument_group("study (learn from the whole folder)"))


def _add_study_options(study: argparse._ArgumentGroup) -> None:
    """The study stage: one network trained on the folder's per-image masks, or a stored one applied."""
    study.add_argument(
        "--study", action="store_true",
        help="after the per-image masks, train one network on all the folder's masks, weighted by their "
        "confidence, and give every "
        "image its study mask in DIR/study/ (with the model, DIR/study/study_model.pt): a folder of one kind "
        "teaches what a single image cannot",
    )
    study.add_argument(
        "--study-network", choices=NETWORKS, default=StudySettings.network,
        help="pretrained: a small decoder on the frozen features of an ImageNet-trained EfficientNet-Lite0 "
        "(its weights come with selfseg); unet: a small U-Net trained from scratch, which scores lower "
        "(default: %(default)s)",
    )
    study.add_argument(
        "--study-members", metavar="N", type=_positive_int,
        help="train N study networks, each with its own seed, and average their probabilities: the masks depend "
        "less on the seed (default: 3 narrow decoders for the pretrained network, 1 U-Net)",
    )
    study.add_argument(
        "--study-model", metavar="FILE",
        help="segment the inputs with a stored study model (a forward pass and the target prior per image, no "
        "per-image fit); masks and results.csv into DIR",
    )


def _add_rule_options(rule: argparse._ArgumentGroup) -> None:
    """How ``segment`` chooses the mask: the papers' oracle, a point, the oracle's crop."""
    rule.add_argument(
        "--foreground",
        choices=FOREGROUNDS,
        default="auto",
        help="auto: choose the mask without ground truth; oracle: the papers' protocol, the cluster that "
        "overlaps the --gt mask most (for reproducing their figures only; marked 'oracle' in results.csv "
        "and on screen) (default: %(default)s)",
    )
    rule.add_argument(
        "--point",
        type=_point,
        metavar="X,Y",
        help="take the region of the cluster under this pixel (column X, row Y) as the mask, in every image",
    )
    rule.add_argument("--oracle-crop", action="store_true", help="with --foreground oracle: also crop the "
                      "mask with the dilated ground truth, as the released code does")


def _add_evaluate(commands: argparse._SubParsersAction) -> None:
    """The ``evaluate`` command."""
    ev = _described(commands, "evaluate", "score output masks against ground truth", _EVALUATE_HELP)
    ev.add_argument("pred_dir", metavar="PRED_DIR", help="output folder of 'selfseg segment'")
    ev.add_argument("--gt", required=True, metavar="DIR", help="ground-truth masks folder or dataset")
    ev.add_argument("--spacing", type=_spacing, metavar="SY,SX", help="pixel size per axis, e.g. 0.7,0.7 (mm)")


def _add_benchmark(commands: argparse._SubParsersAction) -> None:
    """The ``benchmark`` command."""
    bench = commands.add_parser(
        "benchmark",
        help="every method on every dataset, masks chosen without and with the ground truth",
        description="Segment every image of each DATASET (images/ + masks/, PH2 or ISIC layout) with each "
        "method once, score the ground-truth-free masks (auto) and the papers' oracle masks derived from "
        "the same clusters, and write OUT/benchmark.csv and OUT/benchmark.md (Dice, HM, XOR, HD95, "
        "seconds per image). Repeating the command skips finished images.",
    )
    groups = _groups(bench)
    groups["input"].add_argument("datasets", nargs="+", metavar="DATASET")
    groups["method"].add_argument("--methods", default=",".join(ALL_METHODS), help="comma-separated (default: %(default)s)")
    groups["foreground"].add_argument(
        "--foreground", default=",".join(FOREGROUND_RULES), help="comma-separated rules (default: %(default)s)"
    )
    groups["output"].add_argument("--out", required=True, metavar="DIR")
    _add_run_options(groups, several_seeds=True)


def _add_report(commands: argparse._SubParsersAction) -> None:
    """The ``report`` command."""
    rep = commands.add_parser(
        "report",
        help="write DIR/report.html: thumbnails, scores, plots and review marks of an output folder",
        description="Write DIR/report.html, a self-contained page (thumbnails in DIR/report_files/) of every "
        "input of the output folder DIR and of the runs below it (selfseg benchmark folders): image, cluster "
        "map and overlay, its results.csv row and metrics.csv scores, sortable, filterable, in pages, with "
        "summary plots and accepted / rejected / needs-edit marks saved as qc.csv.",
    )
    rep.add_argument("out", metavar="DIR", help="output folder of 'selfseg segment' or 'selfseg benchmark'")


def build_parser() -> argparse.ArgumentParser:
    """The ``selfseg`` argument parser with its ``segment``, ``evaluate`` and ``benchmark`` commands."""
    parser = argparse.ArgumentParser(
        prog="selfseg",
        description="Label-free, per-image medical image segmentation.",
        epilog="Run 'selfseg segment --help' for the options and the files written.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_segment(commands)
    _add_evaluate(commands)
    _add_benchmark(commands)
    _add_report(commands)
    return parser
