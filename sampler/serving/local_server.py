"""A local vLLM OpenAI-compatible server as a child process: start on a free loopback port, wait
for /health, stop (process group, TERM then KILL). Used by `negrl run` and by the tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from negrl_operator.reconcile.serving import CPU_VLLM_ARGS, QUIET_ENV, VLLM_MODULE


class ServerStartError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def vllm_command(model_dir: str, port: int, max_model_len: int, served_name: str) -> list[str]:
    # the same module and CPU flags as the operator's sampler Deployment (reconcile/serving.py)
    return [
        sys.executable, "-m", VLLM_MODULE,
        "--model", model_dir, "--served-model-name", served_name, "--max-model-len", str(max_model_len),
        "--host", "127.0.0.1", "--port", str(port),
        "--enable-prefix-caching", "--disable-log-stats", "--seed", "0", *CPU_VLLM_ARGS,
    ]


def vllm_environment(kv_cache_gb: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        VLLM_CPU_KVCACHE_SPACE=str(kv_cache_gb), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
        VLLM_LOGGING_LEVEL="WARNING", **QUIET_ENV,
    )
    return env


@dataclass
class LocalServer:
    """A running server: `base_url` ends in /v1; `model` is the name requests must send."""

    base_url: str
    model: str
    process: subprocess.Popen
    log_path: Path
    started_s: float = 0.0

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace_s: float = 15.0) -> None:
        stop_process_group(self.process, grace_s)

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def stop_process_group(process: subprocess.Popen, grace_s: float = 15.0) -> None:
    if process.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_healthy(server: LocalServer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    health = server.base_url.removesuffix("/v1") + "/health"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerStartError(
                f"vLLM server exited with code {server.process.returncode} during start-up; log tail:\n"
                + server.log_tail()
            )
        try:
            with urllib.request.urlopen(health, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    server.stop()
    raise ServerStartError(f"vLLM server not healthy after {timeout_s:.0f}s; log tail:\n" + server.log_tail())


def start_vllm(
    model_dir: str | Path, *, served_name: str = "policy", max_model_len: int = 512, kv_cache_gb: int = 1,
    timeout_s: float = 300.0, log_dir: str | Path | None = None,
) -> LocalServer:
    """Start `vllm.entrypoints.openai.api_server` for `model_dir` and return once /health answers."""
    port = free_port()
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="negrl-vllm-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"vllm-{served_name}-{port}.log"
    begin = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            vllm_command(str(model_dir), port, max_model_len, served_name), env=vllm_environment(kv_cache_gb),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )
    server = LocalServer(f"http://127.0.0.1:{port}/v1", served_name, process, log_path)
    wait_healthy(server, timeout_s)
    server.started_s = time.monotonic() - begin
    return server


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
    except Exception:
        return False
    return True
