# worker.py
from uuid import UUID
from pydantic import BaseModel
from agents import Agent
import agentexec as ax

from .db import engine, DATABASE_URL

# Create worker pool
pool = ax.WorkerPool(engine=engine, database_url=DATABASE_URL)

class ResearchContext(BaseModel):
    company: str
    focus_areas: list[str] = []

@pool.task("research_company")
async def research_company(agent_id: UUID, context: ResearchContext) -> dict:
    runner = ax.OpenAIRunner(agent_id=agent_id, max_turns_recovery=True)

    agent = Agent(
        name="Research Agent",
        instructions=f"""Research {context.company}.
        Focus on: {', '.join(context.focus_areas) or 'general info'}
        {runner.prompts.report_status}""",
        tools=[runner.tools.report_status],
        model="gpt-4o",
    )

    result = await runner.run(agent, input=f"Research {context.company}", max_turns=15)
    return {"company": context.company, "findings": result.final_output}

if __name__ == "__main__":
    pool.run()
