"""Microphone and speaker on PortAudio through `sounddevice`, with device lookup and recovery.

Threading rule: the PortAudio callback threads only copy samples in or out of lock-free
`collections.deque`s and wake the event loop with `loop.call_soon_threadsafe`; resampling,
logging and every decision happen on the asyncio side.

PortAudio is process-global and enumerates devices once, at initialisation. To see a USB device
that was unplugged and plugged back, the microphone's recovery re-initialises PortAudio
(`sd._terminate(); sd._initialize()`), which invalidates every open stream: `PortAudioBackend`
first closes the streams of the live speakers (they reopen on their next `play()`).
"""

from appliance.adapters.sounddevice.backend import (
    AudioBackend,
    AudioStream,
    PortAudioBackend,
    StreamRequest,
    default_backoff_s,
)
from appliance.adapters.sounddevice.devices import (
    DeviceInfo,
    DeviceKind,
    DeviceSpec,
    list_devices,
    resolve_device,
)
from appliance.adapters.sounddevice.microphone import SounddeviceMicrophone, StreamState
from appliance.adapters.sounddevice.speaker import SounddeviceSpeaker

__all__ = [
    "AudioBackend",
    "AudioStream",
    "DeviceInfo",
    "DeviceKind",
    "DeviceSpec",
    "PortAudioBackend",
    "SounddeviceMicrophone",
    "SounddeviceSpeaker",
    "StreamRequest",
    "StreamState",
    "default_backoff_s",
    "list_devices",
    "resolve_device",
]
