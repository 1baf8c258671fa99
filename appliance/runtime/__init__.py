"""The asyncio shell around the core: composition, the event loop, effects, timers."""
