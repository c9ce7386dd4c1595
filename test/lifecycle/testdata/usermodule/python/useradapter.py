"""A user's own adapter, outside the snakepit repository."""

import subprocess
import sys

from snakepit_bridge import BaseAdapter, tool


class UserAdapter(BaseAdapter):
    @tool(description="Say hi")
    def hi(self) -> str:
        return "hi"

    @tool(description="Start a child in this worker's process group; return its pid")
    def child(self) -> dict:
        p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        return {"pid": p.pid}
