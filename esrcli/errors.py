"""Every error esr reports to a user, in one place: the CLI catches EsrError and prints its text.

Each class names what went wrong; library users catch EsrError, or one of these by name
(`from esrcli.errors import WeightsError`). Those that mix in ValueError, TypeError or RuntimeError
are also what Python code would expect for that mistake.
"""

from __future__ import annotations

import os
from typing import Any


class EsrError(Exception):
    """A failure a user can act on; str() is one line naming the file (or flag) and the problem."""


class EsrWarning(UserWarning):
    """Something that works but that the user would want to know: the CLI prints it as one line."""


# --- raised in api.py -----------------------------------------------------------------------------


class InputError(EsrError, TypeError):
    """An image object the API cannot take (its type, dtype or layout)."""


# --- raised in archs/ -----------------------------------------------------------------------------


class UnknownArchitecture(EsrError, ValueError):
    """Weights or a name that match no architecture esr knows."""


# --- raised in bench.py ---------------------------------------------------------------------------


class BenchmarkSetError(EsrError, ValueError):
    """A benchmark or validation set esr cannot score: missing, empty, or with mismatched LR files."""


# --- raised in cli/bench.py -----------------------------------------------------------------------


class NoSuchVariant(EsrError):
    """A model in `esr bench speed` that has no weights at the scale asked for."""


class SpeedError(EsrError):
    """A speed benchmark that cannot run as asked (its sizes, devices or settings)."""


# --- raised in degrade.py -------------------------------------------------------------------------


class DegradationError(EsrError, ValueError):
    """A degradation spec or setting that does not parse."""


# --- raised in denoise.py -------------------------------------------------------------------------


class DenoiseError(EsrError, ValueError):
    """A denoise strength that cannot be used."""


# --- raised in device.py --------------------------------------------------------------------------


class DeviceError(EsrError, ValueError):
    """A device that does not exist here, or a precision it cannot run."""


# --- raised in download.py ------------------------------------------------------------------------


class DownloadError(EsrError):
    """A source that could not be turned into a usable file; `reason` is the cause without the model
    name, so that fetch_first can list several failed sources in one line."""

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(" ".join(str(message).split()))
        self.reason = " ".join(str(reason).split()) if reason is not None else self.args[0]

    def __reduce__(self) -> tuple[Any, ...]:  # keep `reason` across processes
        return (self.__class__, (self.args[0],), {"reason": self.reason})


class ChecksumMismatch(DownloadError):
    """The bytes arrived but are not the pinned ones; the bad file is already deleted."""


class CacheError(EsrError):
    """esr's cache folder cannot be made or written."""


class OfflineError(DownloadError):
    """Offline mode forbids the network and the file is not cached."""


# --- raised in ensemble.py ------------------------------------------------------------------------


class EnsembleError(EsrError, ValueError):
    """--tta (the x8 self-ensemble) set to something other than on or off, or asked where it cannot apply."""


# --- raised in export.py --------------------------------------------------------------------------


class ExportError(EsrError):
    """An export that cannot be written, or that would not reproduce esr's output."""


# --- raised in imagefile/ -----------------------------------------------------------------------


class ImageError(EsrError):
    """A file could not be read or written; str() is one line naming the file and the problem."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = os.fspath(path)
        self.problem = " ".join(str(problem).split())
        super().__init__(f"{self.path}: {self.problem}")


# --- raised in lora.py ----------------------------------------------------------------------------


class LoRAError(EsrError, ValueError):
    """Adapters that cannot be placed on (or merged into) a network."""


# --- raised in paths.py ---------------------------------------------------------------------------


class OutputNameError(EsrError, ValueError):
    """User text that would carry an output out of the folder the user chose."""


# --- raised in publish.py -------------------------------------------------------------------------


class PublishError(EsrError):
    """A push that the Hub refused or that could not reach it."""


# --- raised in raydist.py -------------------------------------------------------------------------


class ClusterError(EsrError):
    """Ray is missing, the cluster cannot be reached, or its workers cannot do the work."""


# --- raised in registry.py ------------------------------------------------------------------------


class RegistryError(EsrError, ValueError):
    """An unknown model name, a missing scale or a malformed models.toml."""


# --- raised in runs.py ----------------------------------------------------------------------------


class RunError(EsrError, ValueError):
    """A folder that is not a usable training run."""


# --- raised in scaling.py -------------------------------------------------------------------------


class ScaleError(EsrError, ValueError):
    """A scale factor no plan can reach."""


# --- raised in sources.py -------------------------------------------------------------------------


class BadReference(EsrError, ValueError):
    """A model reference that does not parse, such as hf://owner."""


# --- raised in tiling.py --------------------------------------------------------------------------


class TilingError(EsrError, ValueError):
    """Tile, overlap or batch settings that cannot work or would only waste time."""


# --- raised in runconfig.py ----------------------------------------------------------------------


class ConfigError(EsrError, ValueError):
    """A training config (file, --set or flag) with an unknown key or a bad value."""


class TrainingError(EsrError, RuntimeError):
    """A run that cannot start or go on: its settings, data, networks or checkpoint."""


# --- raised in train/data.py ----------------------------------------------------------------------


class TrainingDataError(EsrError, ValueError):
    """Training data that cannot be used: a missing folder, no images, none as large as a patch."""


# --- raised in video/ ---------------------------------------------------------------------------


class VideoError(EsrError):
    """A video that cannot be processed; the message is one line naming the file."""


# --- raised in watch.py ---------------------------------------------------------------------------


class WatchError(EsrError, ValueError):
    """Folders that `esr upscale --watch` cannot watch as asked, or a watched folder that went away."""


# --- raised in weights.py -------------------------------------------------------------------------


class WeightsError(EsrError, ValueError):
    """A weight file that cannot be used; the message is one line naming the file."""
