"""``segloop export --format bioimageio``: a segloop model as a bioimage.io model package.

The package (a zip, model format 0.5) holds ``rdf.yaml``; the network as
``pytorch_state_dict`` weights with a standalone architecture file
(``segloop_network.py``, :mod:`segloop.bioimageio_network`) and as TorchScript weights
(no ONNX: see ``docs/bioimageio.md``); test input and
output tensors (``.npy``); a cover image; the model card (``README.md``) with the
licence and citations of the training data; and the original segloop model file, which
``segloop predict --model package.zip`` runs without bioimageio installed.

Writing a package needs only segloop's own dependencies; when ``bioimageio.spec`` is
installed the written package is validated (``pip install "napari-segloop[bioimageio]"``).
Docs: ``docs/bioimageio.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import warnings
import zipfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .bioimageio_docs import FINE_TUNED, SHIPPED, UNET_CITE, data_licence, model_card

if TYPE_CHECKING:  # numpy, torch and the core load only when a package is written
    import numpy as np

FORMAT_VERSION = "0.5.4"
NETWORK_FILE = "segloop_network.py"


class ExportError(ValueError):
    """A model that cannot be exported, or a package that failed its own checks."""


@dataclass
class ExportReport:
    """What :func:`export_bioimageio` wrote."""

    path: Path
    files: dict[str, int]  # name in the zip -> bytes
    weights: list[str]
    max_abs_difference: float  # package network vs segloop's prediction, test input
    validation: str | None = None  # bioimageio.spec status; None if not installed

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def _lineage(metadata: dict[str, Any], name: str) -> str | None:
    """The shipped model a model is, or was fine-tuned from (None if unknown)."""
    candidates = [name, metadata.get("name"), metadata.get("parent")]
    candidates.append((metadata.get("finetune") or {}).get("base"))
    for value in candidates:
        stem = Path(str(value)).name.split(".")[0] if value else ""
        if stem in SHIPPED:
            return stem
    return None


def network_kwargs(config) -> dict[str, Any]:
    """Keyword arguments of :class:`~segloop.bioimageio_network.SegloopNetwork`."""
    if config.padding != "same":
        raise ExportError("only same-padded networks can be exported (not unet-classic)")
    kwargs = {
        "arch": config.arch,
        "depth": config.depth,
        "base_channels": config.base_channels,
        "batch_norm": config.batch_norm,
        "in_channels": config.in_channels,
        "n_classes": config.n_classes,
        "distance_head": config.distance_head,
    }
    if config.convs_per_level is not None:
        kwargs["convs_per_level"] = list(config.convs_per_level)
    return kwargs


def package_network(bundle):
    """The bundle's weights in the standalone :class:`SegloopNetwork` (eval mode)."""
    from .bioimageio_network import SegloopNetwork

    network = SegloopNetwork(**network_kwargs(bundle.config))
    network.net.load_state_dict({k: v.float() for k, v in bundle.network.state_dict().items()})
    return network.eval()


def _channel_names(bundle) -> list[str]:
    if bundle.target == "instances":
        names = ["background", "interior", "border"][: bundle.config.n_classes]
    else:
        names = [entry.name for entry in bundle.legend[1:]]
    names = [
        re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_") or f"c{i}" for i, name in enumerate(names)
    ]
    return names + (["distance"] if bundle.config.distance_head else [])


def _normalise(bundle, raw: np.ndarray) -> np.ndarray:
    """The package's preprocessing: percentile scaling, then the inversion if 'always'."""
    from .core.imageio import normalize_percentile

    low, high = bundle.preprocess["percentiles"]
    image = normalize_percentile(raw, low, high)
    return 1.0 - image if bundle.preprocess["invert"] == "always" else image


def make_test_tensors(bundle, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Test input (1, 1, H, W), test output (1, C, H, W) of the package network, and their
    largest difference from segloop's own float32 prediction of the same image."""
    import numpy as np
    import torch

    from .core.device import ComputeSettings
    from .core.predict import predict_probabilities

    image = _normalise(bundle, raw)
    with torch.inference_mode():
        output = package_network(bundle)(torch.from_numpy(image)[None, None]).numpy()
    fp32 = ComputeSettings(torch.device("cpu"), False, None)
    reference = predict_probabilities(bundle, image, settings=fp32)
    difference = float(np.abs(output[0] - reference).max())
    return raw[None, None].astype(np.float32), output.astype(np.float32), difference


def _sample_image(bundle, sample: str | Path | None) -> tuple[np.ndarray, str]:
    """A grey float32 test image: ``sample``, else the shipped sample of its lineage."""
    import numpy as np

    from .core.imageio import read_image, to_grayscale, validate_image

    if sample is None:
        root = _lineage(bundle.metadata, bundle.name)
        if root is None:
            raise ExportError("give a test image with --sample (model of unknown lineage)")
        sample = Path(__file__).resolve().parent / "data" / SHIPPED[root]["sample"]
    image = read_image(sample)
    validate_image(image, str(sample))
    gray = to_grayscale(image, colour=bundle.preprocess["colour"])
    if gray.ndim != 2:
        raise ExportError(f"{sample}: the test image must be one 2-D image, got {gray.shape}")
    return gray[:512, :512].astype(np.float32), Path(sample).name


def _cover(bundle, image: np.ndarray, raw: np.ndarray) -> bytes:
    """PNG, 2:1: the normalised input; its segloop segmentation outlined in colour."""
    import numpy as np
    from PIL import Image
    from skimage.segmentation import find_boundaries

    from .core.segment import segment

    grey = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    result = segment(bundle, raw, device="cpu")
    labels = result.instances if bundle.target == "instances" else result.classes
    right = np.repeat(grey[..., None], 3, axis=2)
    edges = find_boundaries(labels, mode="inner")
    hues = np.random.default_rng(0).integers(80, 256, (int(labels.max()) + 1, 3), dtype=np.uint8)
    right[edges] = hues[labels[edges]]
    both = np.concatenate([np.repeat(grey[..., None], 3, axis=2), right], axis=1)
    picture = Image.fromarray(both)
    if picture.width < 512:
        picture = picture.resize((512, 512 * picture.height // picture.width), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    """``.npy`` file bytes (no pickles)."""
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _weights(network, example) -> tuple[bytes, bytes]:
    """``pytorch_state_dict`` bytes and TorchScript bytes, checked to agree."""
    import torch

    state = io.BytesIO()
    torch.save(network.state_dict(), state)
    script = io.BytesIO()
    with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; deepImageJ needs it
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(network)
        torch.jit.save(scripted, script)
    with torch.inference_mode():
        if not torch.allclose(network(example), scripted(example), atol=1e-5):
            raise ExportError("the TorchScript network does not reproduce the network")
    return state.getvalue(), script.getvalue()


def _file(name: str, files: dict[str, bytes]) -> dict[str, str]:
    return {"source": name, "sha256": hashlib.sha256(files[name]).hexdigest()}


def _yaml_scalar(value: Any) -> str:
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)  # YAML 1.1 readers need a dot before an exponent
        return re.sub(r"^(-?\d+)e", r"\1.0e", text)
    text = str(value)
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_./-]*", text) and text.lower() not in {
        "true", "false", "null", "yes", "no", "on", "off", "y", "n", "none",
    }:  # fmt: skip
        return text
    return json.dumps(text, ensure_ascii=False)


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for nested dicts, lists and scalars (strings JSON-quoted)."""
    pad = " " * indent
    lines = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{key}:\n{to_yaml(item, indent + 2)}")
            else:
                empty = "{}" if isinstance(item, dict) else "[]"
                lines.append(f"{pad}{key}: {empty if item in ({}, []) else _yaml_scalar(item)}")
    else:
        for item in value:
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}- {to_yaml(item, indent + 2).lstrip()}")
            else:
                lines.append(f"{pad}- {_yaml_scalar(item)}")
    return "\n".join(lines)


def _preprocessing(bundle) -> list[dict[str, Any]]:
    """segloop's input normalisation as bioimage.io pre-processing steps."""
    low, high = (float(p) for p in bundle.preprocess["percentiles"])
    scale = {"axes": ["y", "x"], "min_percentile": low, "max_percentile": high, "eps": 1e-12}
    steps = [
        {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
        {"id": "scale_range", "kwargs": scale},
    ]
    if bundle.preprocess["invert"] == "always":
        steps.append({"id": "scale_linear", "kwargs": {"gain": -1.0, "offset": 1.0}})
    return steps


def _tensors(bundle, files) -> dict[str, list[dict[str, Any]]]:
    """The ``inputs`` and ``outputs`` of the description."""
    space = [{"type": "space", "id": axis, "size": {"min": 16, "step": 1}} for axis in "yx"]
    same = [{"type": "space", "id": a, "size": {"tensor_id": "raw", "axis_id": a}} for a in "yx"]
    channels = {"type": "channel", "channel_names": _channel_names(bundle)}
    described = "softmax class probabilities"
    if bundle.config.distance_head:
        described += ", then the predicted normalised distance (sigmoid)"
    raw = {
        "id": "raw",
        "description": "one grey channel (segloop converts RGB with "
        + (
            "the hematoxylin channel of skimage.color.rgb2hed)"
            if bundle.preprocess["colour"] == "hematoxylin"
            else "BT.601 luma weights)"
        ),
        "axes": [{"type": "batch"}, {"type": "channel", "channel_names": ["grey"]}, *space],
        "test_tensor": _file("test_input.npy", files),
        "data": {"type": "float32"},
        "preprocessing": _preprocessing(bundle),
    }
    output = {
        "id": "output",
        "description": described,
        "axes": [{"type": "batch"}, channels, *same],
        "test_tensor": _file("test_output.npy", files),
        "data": {"type": "float32", "range": [0.0, 1.0]},
    }
    return {"inputs": [raw], "outputs": [output]}


def _weights_descr(bundle, files) -> dict[str, Any]:
    """The ``weights`` of the description: state dict with architecture, TorchScript."""
    import torch

    version = torch.__version__.split("+")[0]
    architecture = {
        **_file(NETWORK_FILE, files),
        "callable": "SegloopNetwork",
        "kwargs": network_kwargs(bundle.config),
    }
    return {
        "pytorch_state_dict": {
            **_file("weights.pt", files),
            "architecture": architecture,
            "pytorch_version": version,
        },
        "torchscript": {
            **_file("weights_torchscript.pt", files),
            "pytorch_version": version,
            "parent": "pytorch_state_dict",
        },
    }


def _rdf(bundle, files, authors, license_id, root) -> dict[str, Any]:
    """The bioimage.io model description (format 0.5) of the package's files."""
    shipped = SHIPPED.get(root or "")
    created = bundle.metadata.get("created")
    segloop = {
        "model_file": bundle_file_name(bundle),
        "target": bundle.target,
        "preprocess": bundle.preprocess,
        "postprocess": bundle.postprocess,
        "predict": bundle.predict_defaults,
        "diameter": bundle.diameter,
    }
    tags = ["segloop", "unet", "2d", "pytorch", "segmentation", "instance-segmentation"]
    rdf: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "type": "model",
        "name": re.sub(r"[^A-Za-z0-9_+\- ()]+", "_", f"segloop {bundle.name}"),
        "description": str(bundle.metadata.get("description") or f"segloop {bundle.target} model"),
        "authors": [{"name": name} for name in authors],
        "cite": [UNET_CITE, *(shipped["data"]["cite"] if shipped else [])],
        "license": license_id,
        "tags": tags + (shipped["tags"] if shipped else []),
        "version": f"{int(bundle.metadata.get('version', 1))}.0.0",
        "timestamp": str(created or datetime.now(timezone.utc).isoformat(timespec="seconds")),
        "documentation": "README.md",
        "covers": ["cover.png"],
        "attachments": [_file(n, files) for n in (bundle_file_name(bundle), "LICENSE_DATA.md")],
        **_tensors(bundle, files),
        "weights": _weights_descr(bundle, files),
        "config": {"segloop": segloop},
    }
    if shipped:
        data = {"type": "dataset", "format_version": "0.3.0", **shipped["data"]}
        if bundle.name != root:
            data["description"] = FINE_TUNED + data["description"]
        rdf["training_data"] = data
    return rdf


def bundle_file_name(bundle) -> str:
    """Name of the segloop model file inside the package."""
    return (re.sub(r"[^A-Za-z0-9_.-]+", "_", bundle.name).strip("._") or "model") + ".safetensors"


def _model_file_bytes(bundle) -> bytes:
    from .core.package import is_package, package_model

    if bundle.path is None:
        raise ExportError("the model has no file to package")
    return package_model(bundle.path)[1] if is_package(bundle.path) else bundle.path.read_bytes()


def export_bioimageio(
    model: str | Path,
    out: str | Path,
    sample: str | Path | None = None,
    authors: list[str] | None = None,
    license_id: str = "BSD-3-Clause",
    validate: bool = True,
) -> ExportReport:
    """Write a bioimage.io model package (zip) of a segloop model.

    Parameters
    ----------
    model : str or Path
        Shipped model name, ``.safetensors`` model file or segloop-exported package.
    out : str or Path
        The ``.zip`` to write (atomically).
    sample : str or Path, optional
        Image for the test tensors and the cover; default: the sample image of the
        shipped model the model is (or was fine-tuned from).
    authors : list of str, optional
        Model authors; default ``["napari-segloop developers"]``.
    license_id : str
        SPDX licence identifier of the model (weights).
    validate : bool
        Validate the written package with ``bioimageio.spec`` when it is installed.
    """
    import torch

    from .core.imageio import atomic_output
    from .core.modelio import load_model

    out = Path(out)
    if out.suffix.lower() != ".zip":
        raise ExportError(f"--out must be a .zip file, got {out}")
    bundle = load_model(model)
    root = _lineage(bundle.metadata, bundle.name)
    raw, sample_name = _sample_image(bundle, sample)
    test_in, test_out, difference = make_test_tensors(bundle, raw)
    if difference > 1e-4:
        raise ExportError(f"package network differs from segloop's by {difference:.3g}")
    network = package_network(bundle)
    example = torch.from_numpy(_normalise(bundle, raw[:64, :64]))[None, None]
    state, script = _weights(network, example)
    files = {
        NETWORK_FILE: (Path(__file__).parent / "bioimageio_network.py").read_bytes(),
        "weights.pt": state,
        "weights_torchscript.pt": script,
        "test_input.npy": _npy(test_in),
        "test_output.npy": _npy(test_out),
        "cover.png": _cover(bundle, _normalise(bundle, raw), raw),
        bundle_file_name(bundle): _model_file_bytes(bundle),
        "LICENSE_DATA.md": data_licence(root, root is not None and bundle.name != root).encode(),
    }
    weights = ["pytorch_state_dict", "torchscript"]
    files["README.md"] = model_card(
        bundle, root, sample_name, weights, bundle_file_name(bundle)
    ).encode()
    authors = authors or ["napari-segloop developers"]
    rdf = _rdf(bundle, files, authors, license_id, root)
    files = {"rdf.yaml": (to_yaml(rdf) + "\n").encode(), **files}
    report = ExportReport(out, {k: len(v) for k, v in files.items()}, weights, difference)
    with atomic_output(out, suffix=".zip") as tmp:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            stamp = datetime.now().timetuple()[:6]
            for name, data in files.items():
                info = zipfile.ZipInfo(name, date_time=stamp)
                info.external_attr, info.compress_type = 0o644 << 16, zipfile.ZIP_DEFLATED
                archive.writestr(info, data)
        if validate:  # before the move: a package that fails never replaces ``out``
            report.validation = validate_package(tmp)
            if report.validation is not None and report.validation.startswith("failed"):
                raise ExportError(f"{out}: bioimageio.spec validation {report.validation}")
    return report


def validate_package(path: str | Path) -> str | None:
    """``bioimageio.spec`` validation status of a package ("valid-format" or the
    errors), or None when bioimageio.spec is not installed."""
    try:
        from bioimageio.spec import load_description
    except ImportError:
        return None
    descr = load_description(Path(path), format_version="discover")
    summary = descr.validation_summary
    if summary.status == "failed":
        errors = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in summary.errors)
        return f"failed: {errors}"
    return str(summary.status)


def add_export_command(sub) -> None:
    """The ``export`` sub-command of the ``segloop`` parser."""
    export = sub.add_parser("export", help="write a model as a bioimage.io model package (zip)")
    export.add_argument("model", help="shipped model name or model file path")
    export.add_argument("--format", required=True, choices=["bioimageio"])
    export.add_argument("--out", required=True, help="package to write (.zip)")
    export.add_argument("--sample", default=None, help="test image (default: the model's sample)")
    export.add_argument("--author", action="append", default=None, help="model author (repeatable)")
    export.add_argument("--license", default="BSD-3-Clause", help="SPDX id of the model licence")
    export.add_argument(
        "--no-validate", action="store_true", help="skip the bioimageio.spec validation"
    )
    export.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    """Run ``segloop export`` and print a JSON summary."""
    from . import cli_checks as checks

    checks.check_output_file(args.out, "--out")
    report = export_bioimageio(
        args.model, args.out, args.sample, args.author, args.license, not args.no_validate
    )
    summary = {
        "package": str(report.path),
        "bytes": report.size,
        "weights": report.weights,
        "max_abs_difference": report.max_abs_difference,
        "validation": report.validation or "not run (bioimageio.spec is not installed)",
    }
    print(json.dumps(summary, indent=2))
    return 0
