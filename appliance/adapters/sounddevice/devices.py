"""Device lookup: what PortAudio sees, and the index for a configured name or number."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import sounddevice as sd

from appliance.errors import AudioDeviceError

_LOGGER = logging.getLogger(__name__)

DeviceKind = Literal["input", "output"]
DeviceSpec = str | int | None

HINT = {
    "input": "is a microphone plugged in? `appliance devices` lists what PortAudio sees",
    "output": "is a speaker plugged in? `appliance devices` lists what PortAudio sees",
}

# PortAudio calls (query, open, close, re-initialise) are serialised; callbacks never take it.
PA_LOCK = threading.RLock()


@dataclass(frozen=True)
class DeviceInfo:
    """One device as PortAudio reports it."""

    index: int
    name: str
    max_input_channels: int
    max_output_channels: int
    default_sample_rate_hz: float
    host_api: str

    def channels(self, kind: DeviceKind) -> int:
        return self.max_input_channels if kind == "input" else self.max_output_channels

    def describe(self) -> str:
        return (
            f"[{self.index}] {self.name} ({self.host_api}, {self.max_input_channels} in, "
            f"{self.max_output_channels} out, {self.default_sample_rate_hz:g} Hz)"
        )


def list_devices() -> list[DeviceInfo]:
    """Every device PortAudio sees right now (empty without a sound card)."""
    with PA_LOCK:
        devices = sd.query_devices()
        host_apis = sd.query_hostapis()
    return [device_info(d, host_apis) for d in devices]


def device_info(device: dict[str, Any], host_apis: Any) -> DeviceInfo:
    host_index = int(device.get("hostapi", -1))
    host_api = str(host_apis[host_index]["name"]) if 0 <= host_index < len(host_apis) else "?"
    return DeviceInfo(
        index=int(device["index"]),
        name=str(device["name"]),
        max_input_channels=int(device["max_input_channels"]),
        max_output_channels=int(device["max_output_channels"]),
        default_sample_rate_hz=float(device["default_samplerate"]),
        host_api=host_api,
    )


def resolve_device(
    spec: DeviceSpec, kind: DeviceKind, devices: Iterable[DeviceInfo] | None = None
) -> int | None:
    """The PortAudio index for a config value: None (the default device), an index, or a name.

    A name matches case-insensitively, exactly or as a substring; with several matches the
    exact one wins, else the lowest index. Raises `AudioDeviceError` listing the candidates.
    """
    candidates = [d for d in (list_devices() if devices is None else devices) if d.channels(kind) > 0]
    if not candidates:
        raise AudioDeviceError(f"no audio {kind} devices found ({HINT[kind]})")
    if spec is None:
        return None
    if isinstance(spec, str) and spec.strip().isdigit():
        spec = int(spec.strip())
    if isinstance(spec, int):
        if any(d.index == spec for d in candidates):
            return spec
        raise _not_found(f"no audio {kind} device has index {spec}", kind, candidates)
    wanted = spec.strip().casefold()
    exact = [d for d in candidates if d.name.casefold() == wanted]
    matches = exact or [d for d in candidates if wanted in d.name.casefold()]
    if not matches:
        raise _not_found(f"no audio {kind} device matches {spec!r}", kind, candidates)
    if len(matches) > 1:
        _LOGGER.info(
            "audio %s device %r matches %d devices; using %s",
            kind,
            spec,
            len(matches),
            matches[0].describe(),
        )
    return matches[0].index


def _not_found(head: str, kind: DeviceKind, candidates: list[DeviceInfo]) -> AudioDeviceError:
    listing = "\n".join(f"  {d.describe()}" for d in candidates)
    return AudioDeviceError(f"{head}; available {kind} devices:\n{listing}")
