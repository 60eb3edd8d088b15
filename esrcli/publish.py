"""Fused weights and a model card, as a folder and as a commit on the Hugging Face Hub.

The folder is exactly what is pushed; huggingface_hub does the upload (LFS for the weights), and
the commit it returns is what a registry entry pins.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import atomic_write
from .download import sha256_file
from .errors import PublishError as PublishError
from .export import ExportSource
from .version import __version__

if TYPE_CHECKING:
    from .bench import SetScore

CARD = "README.md"
# The Hub's licence identifiers for the licences models.toml names.
HUB_LICENCES = {
    "mit": "mit",
    "apache-2.0": "apache-2.0",
    "cc-by-4.0": "cc-by-4.0",
    "cc-by-nc-4.0": "cc-by-nc-4.0",
    "bsd-3-clause": "bsd-3-clause",
}


@dataclass
class Published:
    repo_id: str
    revision: str
    commit: str
    url: str
    filename: str
    sha256: str
    size: int

    def registry_entry(self, source: ExportSource) -> str:
        """A models.toml entry that makes `-m NAME` download exactly this commit, checked by SHA-256."""
        title = source.title or f"{source.name}, published with esr export"
        return (
            f'[{source.name}]\ntitle = {_toml(title)}\narch = "{source.network.arch}"\nlicence = {_toml(source.licence or "not stated")}\n'
            f"paper = {_toml(source.paper)}\n\n"
            f'[[{source.name}.weights]]\nscale = {source.network.scale}\nfile = "{self.filename}"\nsha256 = "{self.sha256}"\n'
            f'size = {self.size}\nsources = [{{ hub = "{self.repo_id}", path = "{self.filename}", revision = "{self.commit}" }}]\n'
        )


def _toml(text: str) -> str:
    """A TOML basic string (JSON's escaping is valid TOML for these)."""
    import json

    return json.dumps(text, ensure_ascii=False)


def weights_name(source: ExportSource) -> str:
    """The weight file's name in the repo and in --to-folder: the model name with anything that could
    name a folder (a separator, "..") replaced, since registry names come from a user-editable file."""
    safe = re.sub(r"[^\w.+-]+", "-", source.name).replace("..", "-").strip(".-") or "model"
    return f"{safe}-x{source.network.scale}.safetensors"


def model_card(
    source: ExportSource,
    filename: str,
    sha256: str,
    size: int,
    *,
    repo_id: str,
    revision: str,
    scores: Mapping[str, SetScore] | None = None,
) -> str:
    """The README.md the Hub shows: what the model is, where it came from, its figures, how to run it."""
    lines = [
        *_card_header(source),
        *_card_facts(source, filename, sha256, size),
        *_card_quality(scores),
        *_card_usage(source, filename, sha256, size, repo_id=repo_id, revision=revision),
    ]
    return "\n".join(lines)


def _card_header(source: ExportSource) -> list[str]:
    """The Hub's YAML front matter (licence, library, tags: what its search filters on), the title and a line on what it is."""
    network = source.network
    hub_licence = HUB_LICENCES.get((source.licence or "not stated").lower(), "other")
    default = f"A {type(network).title} x{network.scale} super-resolution network, fused for inference by esr."
    return [
        "---",
        f"license: {hub_licence}",
        "library_name: esr",
        "pipeline_tag: image-to-image",
        "tags:",
        *(f"- {t}" for t in ("super-resolution", "esr", network.arch, f"x{network.scale}")),
        "---",
        "",
        f"# {source.name} x{network.scale}",
        "",
        (source.title + "." if source.title else default),
        "",
    ]


def _card_facts(source: ExportSource, filename: str, sha256: str, size: int) -> list[str]:
    """The table of facts: architecture and settings, size, licence, the file and its provenance."""
    network = source.network
    arch = type(network).title
    params = sum(p.numel() for p in network.parameters())
    settings = ", ".join(f"{k}={v}" for k, v in sorted(network.config.items()) if v is not None)
    lines = [
        "| | |",
        "|---|---|",
        f"| Architecture | {arch} (`{network.arch}`, {settings}) |",
        f"| Scale | x{network.scale} |",
        f"| Parameters | {params:,} |",
        f"| Licence | {source.licence or 'not stated'} |",
    ]
    if source.paper:
        lines.append(f"| Paper | {source.paper} |")
    lines += [f"| File | `{filename}`, {size:,} bytes, inference form (re-parameterised branches fused) |", f"| SHA-256 | `{sha256}` |"]
    if "esr.sha256" in source.metadata:
        lines.append(f"| Fused from | the release with SHA-256 `{source.metadata['esr.sha256']}` |")
    if "esr.trained_steps" in source.metadata:
        lines.append(f"| Training | {source.metadata['esr.trained_steps']} steps with `esr train` (config in the file's metadata) |")
    lines.append(f"| Exported by | esr {__version__} |")
    return lines


def _card_quality(scores: Mapping[str, SetScore] | None) -> list[str]:
    """The quality section, a row per benchmark set (none without scores)."""
    if not scores:
        return []
    lines = [
        "",
        "## Quality",
        "",
        "PSNR / SSIM on the Y channel, borders of `scale` pixels cropped, MATLAB-bicubic inputs (`esr bench quality`):",
        "",
        "| Set | Images | PSNR (dB) | SSIM |",
        "|---|---|---|---|",
    ]
    for name, score in scores.items():
        ssim = "" if math.isnan(score.ssim) else f"{score.ssim:.4f}"
        lines.append(f"| {name} | {score.images} | {score.psnr:.2f} | {ssim} |")
    return lines


def _card_usage(source: ExportSource, filename: str, sha256: str, size: int, *, repo_id: str, revision: str) -> list[str]:
    """How to run it (esr, Python), pin it in a registry, and convert it: commands that name this repo and file."""
    network = source.network
    at = "" if revision == "main" else f"@{revision}"
    return [
        "",
        "## Use it",
        "",
        "With esr:",
        "",
        "```bash",
        f"esr upscale photo.jpg -m hf://{repo_id}/{filename}{at}",
        f"esr video in.mp4 out.mp4 -m hf://{repo_id}/{filename}{at}",
        "```",
        "",
        "or from Python:",
        "",
        "```python",
        "import esrcli",
        f'model = esrcli.load_model("hf://{repo_id}/{filename}{at}")',
        "big = model.upscale(image)  # a PIL image, a numpy array or a tensor",
        "```",
        "",
        "To pin it in a models.toml registry, use the commit `esr export --push-to-hub` printed and the SHA-256 above:",
        "",
        "```toml",
        f"[[{source.name}.weights]]",
        f"scale = {network.scale}",
        f'file = "{filename}"',
        f'sha256 = "{sha256}"',
        f"size = {size}",
        f'sources = [{{ hub = "{repo_id}", path = "{filename}", revision = "COMMIT" }}]',
        "```",
        "",
        f"The file is safetensors with the network's layout in its metadata (`esr.arch`, `esr.config`). For ONNX Runtime, "
        f"TensorRT or chaiNNer, convert it with `esr export hf://{repo_id}/{filename}{at} --out model.onnx` "
        + ("(or `--out model.pth` for spandrel)." if network.arch == "span" else "."),
        "",
    ]


def write_folder(
    source: ExportSource,
    folder: str | Path,
    *,
    repo_id: str,
    revision: str = "main",
    fp16: bool = False,
    scores: Mapping[str, SetScore] | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Write exactly what a push uploads: the fused safetensors and README.md."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise PublishError(f"{folder}: exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    filename = weights_name(source)
    weights = source.export(folder / filename, fmt="safetensors", fp16=fp16, overwrite=overwrite).path
    card = folder / CARD
    if card.exists() and not overwrite:
        raise PublishError(f"{card}: already exists (pass --overwrite to replace it)")
    text = model_card(source, filename, sha256_file(weights), weights.stat().st_size, repo_id=repo_id, revision=revision, scores=scores)
    with atomic_write(card) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return [weights, card]


def push_folder(folder: str | Path, repo_id: str, *, revision: str = "main", private: bool = False, message: str = "") -> str:
    """Create the repository (and branch) if needed and commit the folder; the commit's id."""
    from huggingface_hub import HfApi, constants, errors

    api = HfApi(library_name="esr", library_version=__version__)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        if revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.upload_folder(
            folder_path=str(folder), repo_id=repo_id, repo_type="model", revision=revision, commit_message=message or None
        )
    except errors.HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        advice = {401: "not logged in: run hf auth login or set HF_TOKEN", 403: "this token may not write to that repository"}.get(
            status or 0, ""
        )
        text = advice or " ".join(str(exc).split())[:200]
        raise PublishError(f"push to {repo_id} failed: {text}") from None
    except Exception as exc:  # the client's transport raises its own types (httpx), not OSError
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise PublishError(f"push to {repo_id} at {constants.ENDPOINT} failed: {type(exc).__name__}: {reason}") from None
    return info.oid


def publish(
    source: ExportSource,
    folder: str | Path,
    repo_id: str,
    *,
    revision: str = "main",
    private: bool = False,
    fp16: bool = False,
    scores: Mapping[str, SetScore] | None = None,
) -> Published:
    files = write_folder(source, folder, repo_id=repo_id, revision=revision, fp16=fp16, scores=scores, overwrite=True)
    message = f"esr export {source.name} x{source.network.scale}"
    commit = push_folder(folder, repo_id, revision=revision, private=private, message=message)
    from huggingface_hub import constants

    weights = files[0]
    return Published(
        repo_id,
        revision,
        commit,
        f"{constants.ENDPOINT}/{repo_id}/tree/{revision}",
        weights.name,
        sha256_file(weights),
        weights.stat().st_size,
    )
