"""The world's WebSocket fast path. codec.py and messages.py are compiled (setup.py):
refuse a build older than its source (zones/__init__.py)."""

from pathlib import Path

from zones import refuse_stale_builds

refuse_stale_builds(Path(__file__).parent)
