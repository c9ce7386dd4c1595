"""The example's own adapter: what a user's Python code looks like."""

from snakepit_bridge import BaseAdapter, SessionContext, tool


class Greeter(BaseAdapter):
    def setup(self) -> None:
        # Runs once per worker process: load models, open files, ...
        self.greeting = "hello"

    @tool(description="Greet someone")
    def greet(self, name: str, ctx: SessionContext) -> dict:
        return {"message": f"{self.greeting}, {name}", "worker": ctx.worker_id}
