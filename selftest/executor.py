"""ComfyUI's own PromptExecutor without its web server: how smoke.py (and the test suite's harness) run an API
prompt headless, exactly as ComfyUI's queue would."""
import asyncio
import uuid


class HeadlessServer:
    """What ComfyUI's executor and the pack's live chart touch of the web server, which a headless run does not
    start: events are kept, not sent."""
    client_id = None
    last_node_id = None
    last_prompt_id = None
    sockets_metadata = {}

    def __init__(self):
        self.events = []

    def send_sync(self, event, data, sid=None):
        self.events.append((event, data))

    def queue_updated(self):
        pass


def validate(prompt: dict):
    """(prompt id, ComfyUI's validation result: ok, error, outputs to execute, node errors)."""
    import execution
    prompt_id = str(uuid.uuid4())
    return prompt_id, asyncio.run(execution.validate_prompt(prompt_id, prompt, None))


def run_validated(prompt: dict, prompt_id: str, outputs, server=None):
    """Runs a validated prompt; returns the executor (its ``success``, ``status_messages``, ``history_result``)."""
    import execution
    executor = execution.PromptExecutor(server or HeadlessServer(), cache_type=execution.CacheType.CLASSIC,
                                        cache_args={"lru": 0, "ram": 0, "ram_inactive": 0})  # ram_inactive: v0.33+
    executor.execute(prompt, prompt_id, extra_data={}, execute_outputs=outputs)
    return executor
