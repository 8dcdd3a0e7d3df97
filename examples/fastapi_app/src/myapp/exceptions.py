# exceptions.py
class TaskNotFoundError(Exception):
    def __init__(self, agent_id: str):
        self.agent_id = agent_id
        super().__init__(f"Task {agent_id} not found")

class TaskTimeoutError(Exception):
    def __init__(self, agent_id: str, timeout: int):
        self.agent_id = agent_id
        self.timeout = timeout
        super().__init__(f"Task {agent_id} did not complete within {timeout}s")
