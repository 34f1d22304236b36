"""JupyterLab is part of the environment: its server starts headless, lists the notebooks through
its contents API, starts a kernel through its kernels API and runs a cell that imports ood_lib."""
import asyncio
import json
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TOKEN = uuid.uuid4().hex


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(port: int, path: str, method: str = "GET", body: dict | None = None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/{path}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"null")


async def _execute(port: int, kernel_id: str, code: str) -> str:
    """Run ``code`` on the kernel through the server's websocket; return what it printed."""
    from tornado.websocket import websocket_connect

    ws = await websocket_connect(f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels?token={TOKEN}")
    msg_id = uuid.uuid4().hex
    await ws.write_message(json.dumps({
        "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex, "msg_type": "execute_request",
                   "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True}}))
    printed = []
    while True:
        msg = json.loads(await asyncio.wait_for(ws.read_message(), timeout=120))
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            printed.append(msg["content"]["text"])
        if msg["msg_type"] == "error":
            raise AssertionError("\n".join(msg["content"]["traceback"]))
        if msg["msg_type"] == "execute_reply":
            ws.close()
            return "".join(printed)


def test_jupyterlab_serves_the_notebooks_and_runs_ood_lib(tmp_path):
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={REPO / 'notebooks'}",
         "--allow-root"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "w"), cwd=tmp_path)
    try:
        for _ in range(120):
            try:
                _api(port, "status")
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError("JupyterLab did not start:\n" + (tmp_path / "server.log").read_text()[-3000:])
        listed = {item["name"] for item in _api(port, "contents")["content"]}
        assert {p.name for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")} <= listed
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/lab?token={TOKEN}", timeout=30) as page:
            assert page.status == 200 and b"JupyterLab" in page.read()
        kernel = _api(port, "kernels", "POST", {"name": "python3"})
        out = asyncio.run(_execute(port, kernel["id"], "import ood_lib\nprint(ood_lib.get_profile('smoke').name)"))
        assert out.strip() == "smoke"
        _api(port, f"kernels/{kernel['id']}", "DELETE")
    finally:
        server.terminate()
        server.wait(timeout=60)
