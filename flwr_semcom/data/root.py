"""Where the data lives: the ``paths.data_root`` setting and its default.

The offline default is ``<project_root>/../shared/data`` (real MNIST test-set IDX files in
``mnist/`` and CIFAR-10 test JPEGs in ``cifar10-test/``); users point ``paths.data_root``
at their own copies. See ``docs/datasets.md``.
"""

from __future__ import annotations

from pathlib import Path

from flwr_semcom.data.errors import DataNotFoundError

DEFAULT_RELATIVE_ROOT = Path("..") / "shared" / "data"
SETTING = "paths.data_root"


def resolve_data_root(setting: str | Path | None, project_root: str | Path) -> Path:
    """Return the data folder to read from.

    Parameters
    ----------
    setting
        The ``paths.data_root`` setting. A relative path is taken relative to
        ``project_root`` (Flower may run the app from another working directory). ``None``
        or ``""`` selects the default.
    project_root
        The project checkout (the folder holding ``pyproject.toml``).

    Returns
    -------
    Path
        The setting when given (it must exist), else ``<project_root>/../shared/data`` when
        that folder exists.

    Raises
    ------
    DataNotFoundError
        When the given folder does not exist, or no setting is given and the default folder
        is missing; the message says what to put where.
    """
    project = Path(project_root).expanduser()
    if setting is not None and str(setting) != "":
        path = Path(setting).expanduser()
        if not path.is_absolute():
            path = project / path
        if not path.is_dir():
            raise DataNotFoundError(
                f"{SETTING}={str(setting)!r} resolves to {path}, which is not an existing folder; "
                "expected a folder holding mnist/, cifar10-test/ and/or nyu_depth_v2/"
            )
        return path.resolve()
    default = project / DEFAULT_RELATIVE_ROOT
    if default.is_dir():
        return default.resolve()
    raise DataNotFoundError(
        f"{SETTING} is not set and the default {default} does not exist; set {SETTING} to a "
        "folder holding mnist/t10k-images-idx3-ubyte.gz + t10k-labels-idx1-ubyte.gz and/or "
        "cifar10-test/<class>/*.jpg (see docs/datasets.md)"
    )
