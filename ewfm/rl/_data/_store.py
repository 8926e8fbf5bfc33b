"""Where Minari keeps datasets on this machine, and their raw metadata.

The lowest layer of the dataset code: `_names` (to find a local dataset's environment and
references) and `_minari_io` (to read and write datasets) both stand on it.
"""

import json
from pathlib import Path
from typing import Any

from ._deps import minari


def datasets_root() -> Path:
    """Minari's local datasets directory (``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``)."""
    minari()
    from minari.storage import get_dataset_path

    return Path(get_dataset_path())


def dataset_path(dataset_id: str) -> Path:
    """Where Minari keeps a dataset locally (it is complete when `is_local` says so)."""
    return datasets_root() / dataset_id


def is_local(dataset_id: str) -> bool:
    """Whether a complete dataset of this id is on this machine."""
    return (dataset_path(dataset_id) / "data" / "metadata.json").exists()


def read_metadata(path: Path) -> dict[str, Any]:
    """The raw ``metadata.json`` of a local dataset directory."""
    return json.loads((Path(path) / "data" / "metadata.json").read_text())


def local_metadata(dataset_id: str) -> dict[str, Any] | None:
    """The raw metadata of a local dataset, or None when it is not on this machine."""
    return read_metadata(dataset_path(dataset_id)) if is_local(dataset_id) else None
