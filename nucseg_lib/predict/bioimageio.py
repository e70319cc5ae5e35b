"""Package an exported nucseg U-Net as a bioimage.io model (format 0.5) and test it.

`bioimage.io <https://bioimage.io>`_ packages run in tools that know nothing of nucseg (ilastik,
deepImageJ, QuPath, ``bioimageio predict``). A package holds the network only: what goes in is one
grey image at the model's training scale, normalized by the 1st and 99.8th percentiles (declared as
the package's ``scale_range`` preprocessing), and what comes out is the per-pixel probability of each
class (1 channel ``foreground``, or 3 channels ``background``, ``interior``, ``boundary``). The
study's post-processing (seeded watershed, thresholds tuned on validation images) and the rescaling
to the training nucleus size stay with ``nucseg predict``; the package's description says both.

Needs the optional ``bioimageio.core`` (``pip install -e '.[bioimageio]'``). Works offline: the
test input is an image of the synthetic dataset, and nothing is downloaded.

Example::

    python -m nucseg_lib.predict.bioimageio models/unet_boundary-coelho2009 runs/bioimageio
    bioimageio test runs/bioimageio/unet_boundary-coelho2009/rdf.yaml
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from .. import model as model_module
from ..data import synthetic
from ..data.common import normalize_percentile
from ..train.model_folder import model_with_weights
from .segmenter import read_settings

CLASS_NAMES = {1: ["foreground"], 3: ["background", "interior", "boundary"]}

# the architecture file of a package must stand alone: nucseg's model.py (torch and torchvision only)
# plus this wrapper, which turns logits into the probabilities a package user expects
WRAPPER = '''

class UNetProbabilities(UNet):
    """The nucseg U-Net returning class probabilities (sigmoid for 1 class, softmax for 3)."""

    def forward(self, x):
        return self.probabilities(super().forward(x))
'''


def export_bioimageio(folder, out, test_image: np.ndarray | None = None) -> Path:
    """Write a bioimage.io package of the nucseg model ``folder`` to ``out/<folder name>/``; its ``rdf.yaml``.

    ``test_image`` (2-D, at the model's training scale) becomes the package's test input; a 128x128
    image of the synthetic dataset when not given. The weights are stored in float32 whatever the folder holds.
    """
    from bioimageio.spec import save_bioimageio_yaml_only
    from bioimageio.spec.model import v0_5 as spec

    folder = Path(folder)
    settings = read_settings(folder)
    if settings["method"] not in ("unet_boundary", "unet_dice_cc"):
        raise ValueError(f"{folder}: only U-Net models can be packaged for bioimage.io, not {settings['method']!r}")
    net, config = model_with_weights(folder, folder / "weights.pt", torch.device("cpu"))
    kwargs = {
        "in_channels": 1,
        "out_channels": int(config["out_channels"]),
        "depth": int(config["depth"]),
        "decoder_base": int(config["decoder_base"]),
    }
    package = Path(out) / folder.name
    package.mkdir(parents=True, exist_ok=True)
    source = package / "nucseg_unet.py"
    source.write_text(Path(model_module.__file__).read_text() + WRAPPER)
    torch.save({k: v.contiguous() for k, v in net.state_dict().items()}, package / "weights.pt")  # fp32

    norm = settings["normalization"]
    if test_image is None:
        test_image = synthetic.load(n_train=1, n_test=0, size=128, seed=0)[0].image
    image = np.asarray(test_image, np.float32)
    if image.ndim != 2:
        raise ValueError(f"test_image must be 2-D (y, x), got shape {image.shape}")
    with torch.no_grad():
        x = torch.from_numpy(normalize_percentile(image, norm["pmin"], norm["pmax"]))[None, None]
        probs = net.probabilities(net(x)).numpy()
    np.save(package / "test_input.npy", image[None, None])
    np.save(package / "test_output.npy", probs)
    card = folder / "README.md"
    (package / "README.md").write_text(card.read_text() if card.is_file() else f"# {folder.name}\n")

    stride = 2 ** kwargs["depth"]
    names = CLASS_NAMES[kwargs["out_channels"]]
    scale = settings.get("scale") or 1
    diameter = settings.get("nucleus_diameter_px")
    at_scale = f" (median nucleus diameter {diameter:.1f} px)" if diameter else ""
    inputs = spec.InputTensorDescr(
        id=spec.TensorId("image"),
        description=f"grey image (DNA stain) at the training scale{at_scale}",
        axes=[
            spec.BatchAxis(),
            spec.ChannelAxis(channel_names=[spec.Identifier("dna")]),
            spec.SpaceInputAxis(id=spec.AxisId("y"), size=spec.ParameterizedSize(min=stride, step=stride)),
            spec.SpaceInputAxis(id=spec.AxisId("x"), size=spec.ParameterizedSize(min=stride, step=stride)),
        ],
        test_tensor=spec.FileDescr(source=package / "test_input.npy"),
        preprocessing=[
            spec.ScaleRangeDescr(
                kwargs=spec.ScaleRangeKwargs(
                    axes=[spec.AxisId("y"), spec.AxisId("x")],
                    min_percentile=norm["pmin"],
                    max_percentile=norm["pmax"],
                )
            )
        ],
    )
    outputs = spec.OutputTensorDescr(
        id=spec.TensorId("probabilities"),
        description="per-pixel probability of each class",
        axes=[
            spec.BatchAxis(),
            spec.ChannelAxis(channel_names=[spec.Identifier(n) for n in names]),
            spec.SpaceOutputAxis(id=spec.AxisId("y"), size=spec.SizeReference(tensor_id=inputs.id, axis_id="y")),
            spec.SpaceOutputAxis(id=spec.AxisId("x"), size=spec.SizeReference(tensor_id=inputs.id, axis_id="x")),
        ],
        test_tensor=spec.FileDescr(source=package / "test_output.npy"),
    )
    description = (
        f"U-Net with a ResNet-18 encoder ({settings['method']}) for cell nuclei in 2-D fluorescence images, "
        f"from the nucseg study. Trained on images downscaled {scale:g}x{at_scale}: rescale your images so "
        "that nuclei have about that size. Instances need the study's post-processing "
        f"({json.dumps(settings['postprocess'])}); `nucseg predict` does both."
    )
    descr = spec.ModelDescr(
        name=f"nucseg {folder.name}",
        description=description[:1024],
        authors=[spec.Author(name="nucseg contributors")],
        cite=[
            spec.CiteEntry(
                text="Coelho, Shariff, Murphy (2009): Nuclear segmentation in microscope cell images: "
                "a hand-segmented dataset and comparison of algorithms. ISBI 2009",
                doi=spec.Doi("10.1109/ISBI.2009.5193098"),
            )
        ],
        license=spec.LicenseId("MIT"),
        documentation=spec.FileDescr(source=package / "README.md"),
        tags=["nuclei", "segmentation", "fluorescence-light-microscopy", "2d", "unet", "pytorch"],
        inputs=[inputs],
        outputs=[outputs],
        weights=spec.WeightsDescr(
            pytorch_state_dict=spec.PytorchStateDictWeightsDescr(
                source=package / "weights.pt",
                architecture=spec.ArchitectureFromFileDescr(
                    source=source, callable=spec.Identifier("UNetProbabilities"), kwargs=kwargs
                ),
                pytorch_version=spec.Version(torch.__version__.split("+")[0]),
            )
        ),
    )
    rdf = package / "rdf.yaml"
    save_bioimageio_yaml_only(descr, file=rdf)
    return rdf


def test_package(rdf) -> dict:
    """Run bioimage.io's own test of a package (loads it, predicts the test input, compares); its summary."""
    from bioimageio.core import test_model

    summary = test_model(str(rdf))
    return {"status": summary.status, "details": [(d.name, d.status) for d in summary.details]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="an exported nucseg model folder (nucseg-model.json, weights.pt)")
    parser.add_argument("out", help="folder to write the package into")
    args = parser.parse_args(argv)
    rdf = export_bioimageio(args.model, args.out)
    result = test_package(rdf)
    print(f"{rdf}: bioimage.io test {result['status']}")
    for name, status in result["details"]:
        print(f"  {status:>7}  {name}")
    return 0 if result["status"] == "passed" else 1


if __name__ == "__main__":
    raise SystemExit(main())
