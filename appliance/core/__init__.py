"""The sans-I/O core: pure, synchronous, deterministic. Standard library only.

Nothing here reads a clock, touches a device or a socket, or starts a thread: time arrives
as `now` (seconds on the appliance clock) or as audio duration.
"""
