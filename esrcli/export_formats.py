"""The formats `esr export` writes: one table, read without importing torch (the CLI's --format).

Each row names its file suffixes, the suffixes that choose it when --format is not given, who reads
it, and its writer and checker in esrcli.export (by name, as esrcli.archs names its classes, so this
table stays light). A new format is one row here and its two functions there.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffixes: tuple[str, ...]  # what a file of this format may be called
    implied_by: tuple[str, ...]  # suffixes that choose this format when none is asked for
    readers: str  # who loads it (--help)
    writer: str  # esrcli.export function: (network, path, *, fp16, metadata) -> None
    checker: str  # esrcli.export function: (path, network, images, fp16) -> list[Agreement], comparing with esr


EXPORT_FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat("safetensors", (".safetensors",), (".safetensors",), "esr's fused layout (-m)", "write_esr", "check_reload"),
        ExportFormat("onnx", (".onnx",), (".onnx",), "ONNX Runtime, TensorRT, ncnn", "write_onnx", "check_onnx"),
        ExportFormat("spandrel", (".pth", ".pt", ".safetensors"), (".pth", ".pt"), "chaiNNer, ComfyUI", "write_spandrel", "check_reload"),
    )
}
