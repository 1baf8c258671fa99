"""Models: the manifest (`manifest.py`), the on-disk store (`store.py`), downloads and
registry-package extraction (`fetch.py`), and the `appliance models ...` commands (`commands.py`)."""
