"""Where each dataset is published, the checksums published for its files, and where it lands.

Every digest here was copied from a published listing, and its ``provenance`` says which: the
Zenodo record (Zenodo lists an MD5 per file), or, where the authors publish none, a third party
that lists one (named). A file with no published digest has ``digest=None``: ``ttabench fetch``
refuses it unless ``--no-verify`` is given, and then records the SHA-256 it computed in the
fetch record (``<data_dir>/.ttabench-fetch/<key>.json``), so a later copy can be compared.

=================== ============================================ ===================================
key                  published at                                 checksum
=================== ============================================ ===================================
``cifar10c``         Zenodo 2535967, ``CIFAR-10-C.tar``           MD5 (Zenodo)
``cifar100c``        Zenodo 3555552, ``CIFAR-100-C.tar``          MD5 (Zenodo)
``imagenetc``        Zenodo 2235448, 5 tars (noise, blur, ...)    MD5 (Zenodo)
``imagenet-c-bar``   dl.fbaipublicfiles.com (the authors' copy)   none published
``imagenet-r``       people.eecs.berkeley.edu/~hendrycks          MD5 listed by pytorch-ood
``imagenet-a``       people.eecs.berkeley.edu/~hendrycks          MD5 listed by pytorch-ood
``ccc``              the CCC authors' server (webdataset shards)  none published
=================== ============================================ ===================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ttabench.errors import TTABenchError

Algorithm = Literal["md5", "sha256", "sha256-prefix"]


@dataclass(frozen=True)
class Digest:
    """A published checksum: ``algorithm`` of the whole file is ``value`` (``sha256-prefix``:
    the SHA-256 starts with ``value``, as torch.hub names its files); ``provenance`` says who
    publishes it."""

    algorithm: Algorithm
    value: str
    provenance: str

    def matches(self, md5: str, sha256: str) -> bool:
        """Whether a file with these digests is the published one."""
        if self.algorithm == "md5":
            return md5 == self.value
        if self.algorithm == "sha256":
            return sha256 == self.value
        return sha256.startswith(self.value)

    def of(self, md5: str, sha256: str) -> str:
        """The computed digest this one compares with (a prefix as long as the published one)."""
        if self.algorithm == "md5":
            return md5
        return sha256 if self.algorithm == "sha256" else sha256[: len(self.value)]


@dataclass(frozen=True)
class PublishedFile:
    """One published file: ``name`` is its path under a mirror's base URL (``--url``), ``prefix``
    the archive folder whose content lands in the dataset's destination ("" for the whole
    archive), ``part`` the name ``--part`` selects it by."""

    name: str
    url: str
    digest: Digest | None
    prefix: str = ""
    part: str = ""
    size: int | None = None


@dataclass(frozen=True)
class DatasetSource:
    """A dataset ``fetch`` knows: the suite that reads it, its published files and the folder
    under ``data_dir`` they unpack into (the suite's layout)."""

    key: str
    suite: str
    title: str
    page: str
    destination: str
    files: tuple[PublishedFile, ...]
    note: str = ""


def _zenodo(record: str, name: str, md5: str, prefix: str = "", part: str = "",
            size: int | None = None) -> PublishedFile:
    """A file of a Zenodo record, with the MD5 Zenodo lists for it."""
    return PublishedFile(name, f"https://zenodo.org/records/{record}/files/{name}?download=1",
                         Digest("md5", md5, f"Zenodo record {record} (MD5 listed per file)"),
                         prefix=prefix, part=part, size=size)


#: MD5s of Zenodo record 2235448 (ImageNet-C), one tar per corruption family.
IMAGENET_C_TARS: dict[str, str] = {
    "noise": "e80562d7f6c3f8834afb1ecf27252745",
    "blur": "2d8e81fdd8e07fef67b9334fa635e45c",
    "weather": "33ffea4db4d93fe4a428c40a6ce0c25d",
    "digital": "89157860d7b10d5797849337ca2e5c03",
    "extra": "d492dfba5fc162d8ec2c3cd8ee672984",
}
_PYTORCH_OOD = ("pytorch-ood's ImageNetR/ImageNetA dataset classes (the authors publish no "
                "checksum)")
_HENDRYCKS = "https://people.eecs.berkeley.edu/~hendrycks"

DATASETS: dict[str, DatasetSource] = {s.key: s for s in [
    DatasetSource(
        "cifar10c", "cifar10c", "CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019)",
        "https://zenodo.org/records/2535967", "CIFAR-10-C",
        (_zenodo("2535967", "CIFAR-10-C.tar", "56bf5dcef84df0e2308c6dcbcbbd8499",
                 prefix="CIFAR-10-C", size=2_918_471_680),),
        "the clean CIFAR-10 test set (clean.npy) is not part of it"),
    DatasetSource(
        "cifar100c", "cifar100c", "CIFAR-100-C (Hendrycks & Dietterich, ICLR 2019)",
        "https://zenodo.org/records/3555552", "CIFAR-100-C",
        (_zenodo("3555552", "CIFAR-100-C.tar", "11f0ed0f1191edbf9fa23466ae6021d3",
                 prefix="CIFAR-100-C"),)),
    DatasetSource(
        "imagenetc", "imagenetc", "ImageNet-C (Hendrycks & Dietterich, ICLR 2019)",
        "https://zenodo.org/records/2235448", "ImageNet-C",
        tuple(_zenodo("2235448", f"{part}.tar", md5, part=part)
              for part, md5 in IMAGENET_C_TARS.items()),
        "about 67 GB in 5 tars (--part noise,blur,... fetches some); the clean ImageNet val "
        "folder (source validation) needs an image-net.org account and is not fetched"),
    DatasetSource(
        "imagenet-c-bar", "imagenetc", "ImageNet-C-bar (Mintun et al., NeurIPS 2021)",
        "https://github.com/facebookresearch/augmentation-corruption", "ImageNet-C-Bar",
        (PublishedFile("imagenet_c_bar.tar.gz",
                       "https://dl.fbaipublicfiles.com/inc_bar/imagenet_c_bar.tar.gz", None,
                       prefix="cbar_download"),),
        "the preprocessed copy the authors link; no checksum is published (--no-verify)"),
    DatasetSource(
        "imagenet-r", "imagenet-shift", "ImageNet-R (Hendrycks et al., ICCV 2021)",
        "https://github.com/hendrycks/imagenet-r", "imagenet-r",
        (PublishedFile("imagenet-r.tar", f"{_HENDRYCKS}/imagenet-r.tar",
                       Digest("md5", "a61312130a589d0ca1a8fca1f2bd3337", _PYTORCH_OOD),
                       prefix="imagenet-r"),)),
    DatasetSource(
        "imagenet-a", "imagenet-shift", "ImageNet-A (Hendrycks et al., CVPR 2021)",
        "https://github.com/hendrycks/natural-adv-examples", "imagenet-a",
        (PublishedFile("imagenet-a.tar", f"{_HENDRYCKS}/imagenet-a.tar",
                       Digest("md5", "c3e55429088dc681f30d81f4726b6595", _PYTORCH_OOD),
                       prefix="imagenet-a"),)),
]}

#: CCC's webdataset shards as its authors serve them (used by mariodoebler/test-time-adaptation
#: to stream CCC): ``<base>/<stream folder>/serial_<00000>.tar``; no checksum is published.
CCC_BASE = "https://mlcloud.uni-tuebingen.de:7443/datasets/CCC"
CCC_PAGE = "https://github.com/oripress/CCC"

#: Environment variable naming a mirror: its base URL replaces the published location (each
#: file is then read from ``<mirror>/<file name>``); ``--url`` does the same per command.
MIRROR_ENV = "TTABENCH_FETCH_MIRROR"


def dataset(key: str) -> DatasetSource:
    """The dataset ``key``; an unknown key is a one-line error listing the known ones."""
    if key not in DATASETS and key != "ccc":
        from ttabench.registry import unknown_error

        raise unknown_error("dataset", key, [*DATASETS, "ccc"])
    return DATASETS[key]


def select_parts(source: DatasetSource, parts: list[str]) -> tuple[PublishedFile, ...]:
    """The files named by ``--part`` (all when none is given)."""
    if not parts:
        return source.files
    known = [f.part for f in source.files if f.part]
    unknown = [p for p in parts if p not in known]
    if unknown:
        raise TTABenchError(f"{source.key} has no part {', '.join(unknown)}; parts: "
                            f"{', '.join(known) or 'none (one file)'}")
    return tuple(f for f in source.files if f.part in parts)
