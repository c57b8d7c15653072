"""The paper's protocol for users with ImageNet: the 23 Table-1 datasets, the reference probe
draw, the label spaces, and the paper driver end to end on fabricated ImageNet-style trees.

Fabricated images are flat colours: R and G encode the class label in base 32, B the item's
position, so a test reads back which file and label it got.
"""

from __future__ import annotations

import importlib.util
import io
import json
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

import ttabench_test_plugins as plugins
from ttabench import registry
from ttabench.api import SplitSpec, Suite, TrajectoryContext
from ttabench.errors import TTABenchError
from ttabench.runner.config import load_config
from ttabench.runner.execute import CellInputs, run_cell
from ttabench.suites.images import imagenet_wnids
from ttabench.suites.imagefolder import ImageFolderSuite

ROOT = Path(__file__).resolve().parents[1]

#: Table 1 of the paper: (row, number of splits), transcribed from the paper.
TABLE_1 = [
    ("ImageNet-C", 75), ("ImageNet-C-bar", 50), ("ImageNet-3DCC", 60), ("CCC", 27),
    ("Stylized-ImageNet", 1), ("ImageNet-V2", 3), ("ImageNet-Sketch", 1), ("ImageNet-R", 1),
    ("ImageNet-D Real", 1), ("ImageNet-D Painting", 1), ("ImageNet-D Clipart", 1),
    ("ImageNet-D Sketch", 1), ("ImageNet-D Infograph", 1), ("ImageNet-D Quickdraw", 1),
    ("ImageNet-Cartoon & Drawing", 2), ("BG Challenge", 8), ("ImageNet-A", 1),
    ("ImageNet-C Patch", 75), ("ImageNet-Hard", 1), ("Patch-ImageNet", 10),
    ("ImageNet Obfuscations", 3), ("ObjectNet", 1), ("NINCO", 1),
]


def driver():
    """benchmarks/paper_protocol.py as a module."""
    spec = importlib.util.spec_from_file_location("paper_protocol",
                                                  ROOT / "benchmarks" / "paper_protocol.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["paper_protocol"] = module
    spec.loader.exec_module(module)
    return module


def colour(label: int, position: int) -> tuple[int, int, int]:
    return (label % 32) * 8 + 4, (label // 32) * 8 + 4, position % 256


def png(path: Path, label: int, position: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 16), colour(label, position)).save(path)


def decoded_label(image: torch.Tensor) -> int:
    r, g, _ = image.float().mean(dim=(1, 2)).tolist()
    return round((r - 4) / 8) + 32 * round((g - 4) / 8)


def wnid_tree(folder: Path, classes: list[int], per_class: int, all_folders: bool = True,
              shade: int = 0) -> int:
    """Class folders (all 1000 wnids when ``all_folders``) with ``per_class`` images in each of
    ``classes`` (blue = position + ``shade``); returns the number of files."""
    wnids = imagenet_wnids()
    for i in range(1000) if all_folders else classes:
        (folder / wnids[i]).mkdir(parents=True, exist_ok=True)
    for c in classes:
        for k in range(per_class):
            png(folder / wnids[c] / f"{k}.png", c, k + shade)
    return len(classes) * per_class


# --------------------------------------------------------------------------- defect 7: 23 rows


def test_every_table_1_row_has_a_definition() -> None:
    from ttabench.suites.shifts import SHIFTS

    rows = [(s.row, s.splits) for s in SHIFTS.values()]
    assert rows == TABLE_1
    assert sum(n for _, n in rows) == 326
    for shift in SHIFTS.values():
        assert shift.reader in ("imagenetc", "imagefolder", "ccc")
        assert shift.published.startswith("https://") and shift.convention


# --------------------------------------------------------------------------- defect 1: 50,000


def test_paper_config_reads_every_imagenet_c_image(tmp_path: Path) -> None:
    """The paper definition's ImageNet-C is mode full: every file of a split, not the 5,000."""
    from ttabench import preset as presets

    config = load_config(ROOT / "benchmarks" / "paper_protocol.toml")
    presets.apply(config, presets.chosen(None, config))  # the file names preset wf-table1
    suite_name = config.run["suite"]
    options = config.section("suite", suite_name)
    root = tmp_path / "ImageNet-C" / "fog" / "5"
    n = wnid_tree(root, [3, 999], 5)
    suite = registry.make_suite(suite_name, data_dir=tmp_path,
                                **{**options, "corruptions": "fog", "severities": 5})
    record = suite.record()["reader"]
    assert record["mode"] == "full"
    assert len(suite.dataset(suite.splits()[0])) == n


# --------------------------------------------------------------------------- defect 3: V2


def test_imagenet_v2_labels_are_the_folder_names(tmp_path: Path) -> None:
    for variant in ("a", "b"):
        for name in ("0", "2", "10", "999"):
            png(tmp_path / variant / name / "x.png", int(name), 0)
    suite = ImageFolderSuite(tmp_path, root=".", splits="a,b", class_map="index", image_size=16,
                             resize=None)
    for split in suite.splits():
        dataset = suite.dataset(split)
        assert [dataset[i][1] for i in range(len(dataset))] == [0, 10, 2, 999]  # folder order
        assert all(decoded_label(dataset[i][0]) == dataset[i][1] for i in range(len(dataset)))
    with pytest.raises(TTABenchError, match="class_map=index"):
        ImageFolderSuite(tmp_path, root="a", class_map="sorted")
    insisted = ImageFolderSuite(tmp_path, root="a", class_map="sorted", integer_names="sorted")
    assert insisted.map.label_of == {"0": 0, "10": 1, "2": 2, "999": 3}  # string order


def test_imagenet_v2_is_three_splits_of_one_dataset() -> None:
    from ttabench.suites.shifts import SHIFTS

    v2 = SHIFTS["imagenet-v2"]
    assert v2.options["class_map"] == "index" and len(v2.options["splits"]) == 3
    assert v2.splits == 3 and v2.options["dataset"] == "ImageNet-V2"


# --------------------------------------------------------------------------- defect 4: source val


def test_every_folder_dataset_passes_imagenet_val() -> None:
    from ttabench.suites.shifts import SHIFTS

    for shift in SHIFTS.values():
        if shift.reader == "imagefolder":
            assert shift.options["source_val"] == "ImageNet/val", shift.key


# --------------------------------------------------------------------------- defect 5: subsets


def test_shipped_f_is_accepted_on_a_class_subset_of_the_same_model() -> None:
    from ttabench_enigma.estimator import WeightedFlips

    est = WeightedFlips(faithful=True, calibration="rn50-v1-wf-quadratic")
    logits = torch.randn(1000, 200, generator=torch.Generator().manual_seed(0))
    est.on_snapshot(0, logits)
    est.on_snapshot(990, logits.roll(1, dims=0))

    def context(model: str) -> TrajectoryContext:
        return TrajectoryContext(num_classes=200, steps_run=990, probe_size=1000,
                                 probe_source_logits=logits, dataset_size=5000,
                                 model_id=model, model_num_classes=1000)

    result = est.compute(context("torchvision:resnet50/IMAGENET1K_V1"))
    coefficients = [0.000355553868, -0.321445023, 75.661858]
    expected = sum(c * result.value ** (2 - i) for i, c in enumerate(coefficients)) / 100
    assert result.estimate == pytest.approx(min(max(expected, 0.0), 1.0))
    with pytest.raises(TTABenchError, match="model"):
        est.compute(context("timm:resnet50"))  # another model's f is still refused


# --------------------------------------------------------------------------- defect 6: the probe


class IndexedImages(Suite):
    """``n`` images whose first blue value is their index (for the recording adapter)."""

    name = "indexed"
    num_classes = 4

    def __init__(self, n: int = 200) -> None:
        images = torch.zeros(n, 3, 8, 8, dtype=torch.uint8)
        images[:, 2] = torch.arange(n, dtype=torch.uint8)[:, None, None]
        self.data = list(zip(images, [0] * n))

    def splits(self) -> list[SplitSpec]:
        return [SplitSpec("all", "all", None, "eval")]

    def dataset(self, split: SplitSpec):
        return self.data

    def record(self) -> dict:
        return {}


def _probe_and_stream(draw: str | None, faithful: bool = False) -> tuple[list[int], list[int]]:
    from ttabench_enigma.estimator import WeightedFlips

    plugins.RecordingAdapter.seen = {"probe": [], "stream": []}
    loaded = plugins.fake_rn50()
    loaded.module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 4))
    loaded.num_classes = 4
    params = {"probe_size": 50, "checkpoints": (0, 3)} if not faithful else {}
    est = WeightedFlips(**params, faithful=faithful, probe_draw=draw, small_probe="rescale")
    inputs = CellInputs(suite=IndexedImages(), split=IndexedImages().splits()[0], model=loaded,
                        adapter_cls=plugins.RecordingAdapter, adapter_params={},
                        estimators={"wf": est}, seed=7, batch_size=16, steps=0,
                        device=torch.device("cpu"))
    if faithful:
        with pytest.raises(TTABenchError):  # the reference probe of 1,000 > 200 images
            run_cell(inputs)
        return [], []
    out = run_cell(inputs)
    assert out.adaptation["probe_draw"] == (draw or "stream")
    return plugins.RecordingAdapter.seen["probe"][:50], plugins.RecordingAdapter.seen["stream"]


def test_reference_probe_is_a_separate_shuffled_pass() -> None:
    generator = torch.Generator().manual_seed(7)
    first, second = torch.randperm(200, generator=generator), torch.randperm(200, generator=generator)
    probe, stream = _probe_and_stream("reference")
    assert probe == first[:50].tolist()          # the start of its own shuffled pass
    assert stream == second[:48].tolist()        # adaptation iterates a fresh permutation
    assert probe[:16] != stream[:16]
    probe, stream = _probe_and_stream("stream")
    assert probe == first[:50].tolist() and stream == first[:48].tolist()


def test_faithful_mode_draws_the_reference_probe() -> None:
    from ttabench_enigma.estimator import WeightedFlips

    assert WeightedFlips(faithful=True).plan().probe_draw == "reference"
    assert WeightedFlips().plan().probe_draw == "stream"
    with pytest.raises(TTABenchError, match="probe_draw"):
        WeightedFlips(faithful=True, probe_draw="stream")


# --------------------------------------------------------------------------- label spaces


def test_mapped_objectnet_none_and_per_image_label_spaces(tmp_path: Path) -> None:
    from ttabench.runner.passes import accuracy

    # mapped: model classes 5 and 6 -> label 0 ("a"), 7 -> label 1 ("b"), the rest unmapped
    png(tmp_path / "bg" / "a" / "0.png", 0, 0)
    png(tmp_path / "bg" / "b" / "0.png", 1, 0)
    (tmp_path / "map.json").write_text(json.dumps({"5": 0, "6": 0, "7": 1, "8": -1}))
    bg = ImageFolderSuite(tmp_path, root="bg", class_map="mapped", class_map_file="map.json")
    assert bg.label_sets == [(5, 6), (7,)] and bg.class_subset is None
    logits = torch.full((4, 1000), -5.0)
    for row, top in enumerate([6, 7, 8, 7]):
        logits[row, top] = 5.0
    assert accuracy(logits, torch.tensor([0, 1, 0, 0]), bg.label_sets) == 0.5
    # none: every label -1, never right
    png(tmp_path / "ood" / "x" / "0.png", 0, 0)
    ninco = ImageFolderSuite(tmp_path, root="ood", class_map="none", image_size=16)
    labels = torch.tensor([ninco.dataset(ninco.splits()[0])[0][1]])
    assert labels.tolist() == [-1] and accuracy(torch.eye(1000)[:1], labels) == 0.0
    # per-image: the image's own list
    png(tmp_path / "hard" / "i0.png", 0, 0)
    png(tmp_path / "hard" / "i1.png", 0, 1)
    (tmp_path / "hard" / "labels.json").write_text(json.dumps({"i0.png": [3, 9], "i1.png": [9]}))
    hard = ImageFolderSuite(tmp_path, root="hard", class_map="per-image",
                            labels_file="hard/labels.json", image_size=16)
    ds = hard.dataset(hard.splits()[0])
    assert [hard.label_sets[ds[i][1]] for i in range(2)] == [(3, 9), (9,)]
    # objectnet: folder -> ObjectNet label -> ImageNet names -> model indices
    mappings = tmp_path / "objectnet-1.0" / "mappings"
    mappings.mkdir(parents=True)
    (mappings / "folder_to_objectnet_label.json").write_text(
        json.dumps({"alarm_clock": "Alarm clock", "zzz": "Not in ImageNet"}))
    (mappings / "objectnet_to_imagenet_1k.json").write_text(
        json.dumps({"Alarm clock": "analog clock; digital clock"}))
    (mappings / "imagenet_to_label_2012_v2").write_text("tench\ndigital clock\nanalog clock\n")
    (mappings / "pytorch_to_imagenet_2012_id.json").write_text(json.dumps({"0": 0, "530": 1,
                                                                            "409": 2}))
    for folder in ("alarm_clock", "zzz"):
        png(tmp_path / "objectnet-1.0" / "images" / folder / "0.png", 0, 0)
    objectnet = ImageFolderSuite(tmp_path, root="objectnet-1.0/images", class_map="objectnet",
                                 border=2, image_size=8, resize=None)
    assert objectnet.label_sets == [(409, 530)]
    assert len(objectnet.dataset(objectnet.splits()[0])) == 1  # the non-ImageNet class is out


# --------------------------------------------------------------------------- CCC


def ccc_stream(folder: Path, n: int) -> None:
    """One webdataset shard of ``n`` samples (input.jpg, output.cls)."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(folder / "serial_00000.tar", "w") as tar:
        for i in range(n):
            for suffix, data in ((".input.jpg", _jpeg(i % 7, i)), (".output.cls", str(i % 7).encode())):
                info = tarfile.TarInfo(f"sample_{i}{suffix}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _jpeg(label: int, position: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), colour(label, position)).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def test_ccc_reads_the_first_images_of_each_stream(tmp_path: Path) -> None:
    from ttabench.suites.ccc import CCC

    ccc_stream(tmp_path / "CCC" / "baseline_20.0_transition+speed_1000_seed_43", 30)
    ccc_stream(tmp_path / "CCC" / "baseline_0_transition+speed_5000_seed_45", 30)
    suite = CCC(tmp_path, max_images=20)
    assert [s.name for s in suite.splits()] == ["baseline0-speed5000-seed45",
                                                "baseline20-speed1000-seed43"]
    dataset = suite.dataset(suite.splits()[1])
    assert len(dataset) == 20
    assert [dataset[i][1] for i in range(20)] == [i % 7 for i in range(20)]
    assert all(decoded_label(dataset[i][0]) == i % 7 for i in range(20))
    with pytest.raises(TTABenchError, match="CCC not found"):
        CCC(tmp_path / "elsewhere")


# --------------------------------------------------------------------------- end to end


PAPER_TEST_CONFIG = """
[run]
suite = "imagenet-shift"
model = "fake-rn50"
adapter = "rdumb"
estimators = ["enigma"]
baselines = ["ac", "doc", "atc-mc"]
seeds = [0]
batch_size = 8
threads = 1
jobs = 1
[suite.imagenet-shift]
shift = "imagenet-c"
[adapter.rdumb]
lr = 2.0
d_margin = 1.0
[estimator.enigma]
probe_size = 32
checkpoints = [0, 6]
probe_draw = "reference"
small_probe = "rescale"
"""


@pytest.fixture()
def paper_data(tmp_path: Path) -> Path:
    """One dataset of every layout: ImageNet-C (+ holdouts, val), V2, R (200), BG (mapped),
    NINCO (none), ImageNet-Hard (per-image), CCC (tars)."""
    from ttabench.suites.npy_layout import CORRUPTIONS, HOLDOUT

    data = tmp_path / "data"
    wnid_tree(data / "ImageNet" / "val", [1, 2, 3, 4], 5)
    for shade, corruption in enumerate((*CORRUPTIONS, *HOLDOUT)):
        base = data / "ImageNet-C" / ("extra" if corruption in HOLDOUT else "") / corruption
        wnid_tree(base / "1", list(range(1, 9)), 4, shade=12 * shade)
    for variant in ("matched-frequency", "threshold0.7", "top-images"):
        for c in (1, 2, 3, 10):
            for k in range(4):
                png(data / "ImageNetV2" / f"imagenetv2-{variant}-format-val" / str(c) / f"{k}.png",
                    c, k)
    wnid_tree(data / "imagenet-r", [1, 2, 3, 4], 4, all_folders=False)
    for variant in ("original", "only_bg_b", "only_bg_t", "no_fg", "only_fg", "mixed_same",
                    "mixed_rand", "mixed_next"):
        for label, name in enumerate(("00_dog", "01_bird")):
            for k in range(8):
                png(data / "bg_challenge" / variant / "val" / name / f"{k}.png", label + 1, k)
    (data / "bg_challenge" / "in_to_in9.json").write_text(json.dumps({"1": 0, "2": 1}))
    for k in range(16):
        png(data / "NINCO" / "NINCO_OOD_classes" / f"c{k % 2}" / f"{k}.png", 1, k)
        png(data / "ImageNet-Hard" / f"{k}.png", 1 + k % 3, k)
    (data / "ImageNet-Hard" / "labels.json").write_text(
        json.dumps({f"{k}.png": [1 + k % 3, 7] for k in range(16)}))
    ccc_stream(data / "CCC" / "baseline_40_transition+speed_2000_seed_44", 40)
    (tmp_path / "paper.toml").write_text(PAPER_TEST_CONFIG)
    return data


def folder_name_accuracy(folder: Path) -> float:
    """Top-1 accuracy of fake-rn50 on a folder of integer-named class folders, the label being
    the folder's name, with the imagefolder preprocessing."""
    from ttabench.suites.images import ImageTransform, list_images

    model, transform, right, total = plugins.fake_rn50().module, ImageTransform(), 0, 0
    for name in sorted(p.name for p in folder.iterdir()):
        for path in list_images(folder / name):
            with Image.open(path) as image:
                x = transform(image).float()[None] / 255
            right += int(model(x).argmax(1).item() == int(name))
            total += 1
    assert right > total / 2  # the model reads the colour: a wrong label would show
    return right / total


@pytest.mark.slow
def test_paper_definition_end_to_end(paper_data: Path, tmp_path: Path) -> None:
    from ttabench.calibration import Calibration
    from ttabench.scoring.leaderboard import load_cells

    registry.add_plugin("models", "ttabench_test_plugins:fake_rn50", name="fake-rn50")
    paper = driver()
    out = tmp_path / "runs"
    protocol = paper.Protocol(paper_data, out, config=tmp_path / "paper.toml",
                              plugins=["models=ttabench_test_plugins:fake_rn50"],
                              shift_sets={"imagenet-c": ["suite.imagenet-shift.severities=[1]"]})
    keys = ("imagenet-c", "imagenet-v2", "imagenet-r", "bg-challenge", "ninco", "imagenet-hard")
    assert paper.table1(protocol, keys=keys) == list(keys)
    protocol.run_shift("ccc", out / "ccc", ["suite.imagenet-shift.max_images=24"], ("enigma",))

    f = Calibration.load(out / "f.json")
    assert f.target == "source" and f.input == "weighted_flips"  # fitted against the frozen model
    calibration = load_cells([out / "calibration"])
    assert sorted(c.split["name"] for c in calibration) == sorted(
        [f"{h}-1" for h in ("speckle_noise", "gaussian_blur", "spatter", "saturate")] + ["clean"])
    cells = {key: load_cells([out / key]) for key in (*keys, "ccc")}
    assert all(c.status == "ok" for group in cells.values() for c in group)
    for cell in cells["imagenet-c"]:  # every file of the split, in mode full
        assert cell.protocol["suite"]["record"]["reader"]["mode"] == "full"
        assert cell.n_examples == 32 and cell.split["dataset"] == "ImageNet-C"
    assert len(cells["imagenet-c"]) == 15
    v2 = cells["imagenet-v2"]
    assert len(v2) == 3 and {c.split["dataset"] for c in v2} == {"ImageNet-V2"}
    for cell in v2:  # label == folder name: the accuracy of an independent count
        folder = paper_data / "ImageNetV2" / cell.split["name"]
        assert cell.targets["source"] == pytest.approx(folder_name_accuracy(folder))
    for key in ("imagenet-v2", "imagenet-r", "bg-challenge", "ninco", "imagenet-hard"):
        for cell in cells[key]:
            for name in ("doc", "atc-mc"):
                assert cell.estimators[name].skipped is None, (key, name)
                assert cell.estimators[name].views["source"].value is not None
            assert cell.estimators["enigma"].result.estimate is not None  # the fitted f
            assert cell.adaptation["probe_draw"] == "reference"
    assert all(c.targets["source"] == 0.0 for c in cells["ninco"])
    assert len(cells["bg-challenge"]) == 8
    r = cells["imagenet-r"][0].protocol["suite"]["record"]["reader"]
    assert r["class_subset"] == [1, 2, 3, 4]
    (ccc,) = cells["ccc"]
    assert ccc.n_examples == 24 and ccc.protocol["suite"]["record"]["reader"]["max_images"] == 24
    assert (out / "all" / "leaderboard.json").is_file()


@pytest.mark.slow
def test_shipped_f_on_imagenet_r_subset_end_to_end(tmp_path: Path) -> None:
    """The faithful protocol (probe 1,000 from a separate pass, 990 steps, batch 64) with the
    shipped rn50-v1-wf-quadratic on a 200-class-style subset of the 1000-class model."""
    registry.add_plugin("models", "ttabench_test_plugins:fake_rn50", name="fake-rn50")
    data = tmp_path / "data"
    wnid_tree(data / "imagenet-r", list(range(0, 400, 2)), 6, all_folders=False)
    wnid_tree(data / "ImageNet" / "val", [0, 2], 2, all_folders=False)
    paper = driver()
    protocol = paper.Protocol(data, tmp_path / "runs", model="fake-rn50",
                              plugins=["models=ttabench_test_plugins:fake_rn50"],
                              extra=["--no-baselines", "--set", "suite.imagenet-shift.image_size=16",
                                     "--set", "suite.imagenet-shift.resize=0"])
    assert paper.table1(protocol, shipped_f=True, keys=("imagenet-r",)) == ["imagenet-r"]
    from ttabench.scoring.leaderboard import load_cells

    (cell,) = load_cells([tmp_path / "runs" / "imagenet-r"])
    assert cell.status == "ok", cell.error
    enigma = cell.estimators["enigma"]
    assert enigma.params["calibration"] == "rn50-v1-wf-quadratic"
    result = enigma.result
    assert result.extras["calibration"]["forced"] is False and result.estimate is not None
    assert cell.adaptation["probe_draw"] == "reference" and cell.adaptation["steps"] == 990
    assert len(cell.protocol["suite"]["record"]["reader"]["class_subset"]) == 200


def test_driver_fits_against_the_source_target_and_the_script_uses_it() -> None:
    paper = driver()
    calls: list[list[str]] = []
    protocol = paper.Protocol(Path("/data"), Path("out"), run=lambda a, p: calls.append(a) or 0)
    protocol.fit(Path("out/calibration"), Path("out/f.json"))
    assert calls[0][:2] == ["fit", "out/calibration"]
    assert calls[0][calls[0].index("--target") + 1] == "source"
    script = (ROOT / "benchmarks" / "paper_protocol.sh").read_text()
    assert "benchmarks/paper_protocol.py" in script


def test_ablations_are_defined() -> None:
    paper = driver()
    stop = paper.ablation_variants("stop-step")
    assert [s for s in stop[0].scores] == ["wf@50", "wf@100", "wf@250", "wf@500", "wf@1000"]
    assert [v.name for v in paper.ablation_variants("probe-size")] == [
        "probe-50", "probe-100", "probe-250", "probe-500", "probe-1000"]
    (memory,) = paper.ablation_variants("limited-memory")
    assert "estimator.enigma.flip_scale=10" in memory.sets and not memory.refit
    assert paper.ablation_variants("tent")[0].adapter == "tent"
    assert paper.ablation_variants("temperature")[0].estimators == ("enigma", "enigma+ts")


def test_dry_run_prints_the_protocol_and_runs_nothing(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ttabench.cli import main

    out = tmp_path / "never"
    args = ["run", "-s", "tiny", "-m", "tiny-cnn", "-e", "enigma", "--no-baselines", "-o",
            str(out), "--batch-size", "32", "--seed", "3",
            "--set", "estimator.enigma.checkpoints=[0, 16]", "--set",
            "estimator.enigma.probe_size=64", "--set", "estimator.enigma.probe_draw=reference",
            "--set", "estimator.enigma.estimate_at=16",
            "--set", "adapter.rdumb.lr=0.001", "--dry-run"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    text = result.output
    assert "probe: 64 images, draw ['reference']" in text
    assert "batch size 32, seeds [3], steps 16" in text
    assert "adapter rdumb: lr=0.001" in text and "d_margin_rule" in text
    assert "estimator enigma (target bn, score)" in text
    cells = [line for line in text.splitlines() if " | rdumb | 3 | " in line]
    assert len(cells) == 6 and all(line.endswith("| 256 | 2.00") for line in cells)  # 16*32/256
    assert not out.exists()
