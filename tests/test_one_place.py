"""One place per concept (issue 30): the methods' post-processing, the model-folder helpers and the parameters
are each defined once, and every user of them reads that one definition."""

import ast
import json
import re

import numpy as np

from tests.conftest import REPO


def _sources():
    for f in sorted((REPO / "nucseg_lib").rglob("*.py")):
        yield f.relative_to(REPO).as_posix(), f.read_text()
    for f in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = json.loads(f.read_text())["cells"]
        yield f.relative_to(REPO).as_posix(), "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def test_each_methods_post_processing_is_called_in_one_place():
    """watershed_boundary and connected_components make a method's instances only in nucseg_lib/methods.py."""
    callers = {
        name: [f for f, text in _sources() if re.search(rf"(?<!def ){name}\(", text) and f != "nucseg_lib/instances.py"]
        for name in ("watershed_boundary", "connected_components", "tune_watershed", "tune_components")
    }
    assert callers == {k: ["nucseg_lib/methods.py"] for k in callers}


def test_the_registry_post_processing_is_the_instances_definitions():
    from nucseg_lib.instances import connected_components, watershed_boundary
    from nucseg_lib.methods import METHODS, combo_loss, get_method

    probs = np.zeros((3, 32, 32), np.float32)
    probs[0] = 1
    probs[:, 4:12, 4:12] = [[[0.0]], [[0.9]], [[0.1]]]
    probs[:, 20:28, 20:28] = [[[0.0]], [[0.9]], [[0.1]]]
    fg = probs[1] + probs[2]
    b, cc = get_method("unet_boundary"), get_method("unet_dice_cc")
    assert np.array_equal(b.instances(probs, {}), watershed_boundary(probs))
    assert np.array_equal(cc.instances(probs, {"threshold": 0.5}), connected_components(fg, 0.5))
    assert cc.instances(probs, {"threshold": 0.5}).max() == 2
    assert [m for m in METHODS if not METHODS[m].is_unet] == ["stardist"]
    assert combo_loss(0.1) == "dice+topk:0.1" and combo_loss(0.1, 2) == "dice+2*topk:0.1"


def test_shared_models_and_learning_curves_train_the_registrys_losses():
    from nucseg_lib.methods import METHODS, combo_loss
    from nucseg_lib.pipeline.jobs import shared_model_loss

    assert shared_model_loss("unet_dice", {}) == METHODS["unet_dice_cc"].loss == "dice"
    assert shared_model_loss("unet_combo", {"combo_k": 0.2}) == combo_loss(0.2)
    assert shared_model_loss("stardist", {}) is None


def test_no_module_imports_privates_of_another():
    """The model-folder helpers live in nucseg_lib/train/model_folder.py: nothing imports a _private name across modules."""
    offenders = []
    for f, text in _sources():
        if not f.endswith(".py"):
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom) and node.level and node.module:
                offenders += [f"{f}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    allowed = {"nucseg_lib/pipeline/runner.py: jobs.read_record", "nucseg_lib/pipeline/book.py: ..."}
    assert [o for o in offenders if o not in allowed] == []


def test_every_notebooks_parameters_cell_holds_the_declared_parameters():
    """The study's parameters and each notebook's extra ones (nucseg_lib.study.parameters.NOTEBOOK_EXTRA) are the
    variables of the notebooks' parameters cells: a parameter declared but missing from a cell fails here."""
    from nucseg_lib.pipeline.jobs import NOTEBOOKS
    from nucseg_lib.study.parameters import NOTEBOOK_EXTRA, OVERRIDES, PARAMETERS, WORKFLOW_PARAMETERS

    declared = {p.name for p in WORKFLOW_PARAMETERS}
    for name in NOTEBOOKS:
        cells = json.loads((REPO / "notebooks" / f"{name}.ipynb").read_text())["cells"]
        [cell] = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        variables = {t.id for node in ast.parse("".join(cell["source"])).body for t in getattr(node, "targets", [])}
        wanted = set(PARAMETERS) | set(OVERRIDES) | set(NOTEBOOK_EXTRA.get(name, ()))
        assert wanted <= variables, f"{name}: parameters cell lacks {sorted(wanted - variables)}"
        assert set(NOTEBOOK_EXTRA.get(name, ())) <= declared
