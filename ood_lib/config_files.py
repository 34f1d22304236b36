"""Profiles from TOML config files (``./run_all.sh --config FILE``; a notebook's ``profile``
parameter set to a file's path). A file may declare its own dataset, which is registered with
:mod:`ood_lib.data`, so this module sits above the data layer; :mod:`ood_lib.config` below it
holds the built-in profiles and the settings' types."""
from __future__ import annotations

import tomllib
from pathlib import Path

from . import config
from .config import CONFIG_FILES, Profile, override
from .data import register_dataset


def get_profile(name: str, **overrides) -> Profile:
    """A built-in profile (:func:`ood_lib.config.get_profile`) or the profile a ``.toml``
    config file describes (:func:`load_config`), with ``overrides`` applied (``ood_lib.get_profile``)."""
    if str(name).endswith(".toml"):
        return override(load_config(name), **overrides)
    return config.get_profile(name, **overrides)


def load_config(path) -> Profile:
    """The profile a TOML file describes (``./run_all.sh --config FILE``, or a notebook's
    ``profile`` parameter set to the file's path)::

        name = "shapes"          # the profile's name: results go to results/<name>/
        base = "smoke"           # sizes start from this built-in profile
        [dataset]                # ood_lib.data.register_dataset's arguments
        name = "shapes"
        source = "shapes_data"   # a folder, relative to this file, or "torchvision:<Class>"
        id_classes = ["circle", "square"]
        [data]                   # any profile section: overrides of the base's fields
        n_train_per_class = 40

    Without ``[dataset]``, ``data.dataset`` names an already registered dataset."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"config file {path} not found")
    with open(path, "rb") as fh:
        try:
            spec = tomllib.load(fh)
        except tomllib.TOMLDecodeError as err:   # its message gives the line and column
            raise ValueError(f"config file {path} is not valid TOML: {err}") from None
    base = spec.pop("base", "smoke")
    name = spec.pop("name", path.stem)
    dataset = spec.pop("dataset", None)
    if dataset is not None:
        dataset = dict(dataset)
        if "name" not in dataset or "source" not in dataset:
            raise ValueError(f"{path}: [dataset] needs a name and a source")
        source = dataset.pop("source")
        if not str(source).startswith("torchvision:"):
            source = str((path.parent / source).resolve())
        ds = register_dataset(dataset.pop("name"), source, **dataset)
        spec["data"] = {"dataset": ds.name, **spec.get("data", {})}
        spec["clf"] = {"normalise": "id_train", **spec.get("clf", {})}   # statistics of the user's own images
    CONFIG_FILES[name] = str(path)
    return override(config.get_profile(base), name=name, **spec)
