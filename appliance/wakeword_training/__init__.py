"""Train, measure and load custom wake words on the device (`appliance wakeword ...`).

Not imported by the idle loop: only the `appliance wakeword` commands and the benchmarks use it.
Positive takes are synthesized (Piper and espeak-ng), augmented with numpy (noise, gain,
reverberation by a synthetic impulse response, clipping), turned into openWakeWord's shared
features by the same melspectrogram and embedding models the detector runs, and fed to a small
numpy MLP exported as an ONNX classifier ([batch, 16, 96] → [batch, 1]).
"""
