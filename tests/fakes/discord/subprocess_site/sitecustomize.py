"""Imported by Python at start-up when this directory is on ``PYTHONPATH`` (see
``tests.fakes.discord.patching.subprocess_env``): with ``AIPERSONA_FAKE_DISCORD_URL`` set,
discord.py in this process talks to the FakeDiscord at that URL, so a test can run the real
``aipersona run`` in worker subprocesses against its fake. Without the variable: nothing."""

import os

if os.environ.get("AIPERSONA_FAKE_DISCORD_URL"):
    from tests.fakes.discord.patching import FAKE_URL_ENV, point_discord_at

    point_discord_at(os.environ[FAKE_URL_ENV])
