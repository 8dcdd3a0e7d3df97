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

# --- The research pipeline (docs/pipelines.md): plan -> 5 researchers -> writer ---------------
# Each step runs on a worker as a run of its own; POST /api/secure/pipelines/research starts it.

class ResearchPlan(BaseModel):
    company: str
    questions: list[str]

class QuestionContext(BaseModel):
    company: str
    question: str

class Finding(BaseModel):
    company: str
    question: str
    answer: str

class Report(BaseModel):
    company: str
    report: str
    findings: list[Finding]

@pool.task("research_question")
async def research_question(agent_id: UUID, context: QuestionContext) -> Finding:
    runner = ax.OpenAIRunner(agent_id=agent_id)
    agent = Agent(
        name="Researcher",
        instructions=f"""Answer one question about {context.company}, briefly and with sources.
        {runner.prompts.report_status}""",
        tools=[runner.tools.report_status],
        model="gpt-4o",
    )
    result = await runner.run(agent, input=context.question, max_turns=10)
    return Finding(company=context.company, question=context.question,
                   answer=result.final_output)

research_pipeline = ax.Pipeline(pool, name="research_pipeline")

class ResearchPipeline(research_pipeline.Base):
    @research_pipeline.step(0)
    async def plan(self, context: ResearchContext) -> ResearchPlan:
        runner = ax.OpenAIRunner(agent_id=self.agent_id)
        planner = Agent(
            name="Planner",
            instructions=f"""Write exactly 5 research questions about {context.company}.
            Focus on: {', '.join(context.focus_areas) or 'general info'}""",
            output_type=list[str],
            model="gpt-4o",
        )
        result = await runner.run(planner, input=f"Plan research on {context.company}")
        return ResearchPlan(company=context.company, questions=result.final_output[:5])

    @research_pipeline.step(1)
    async def research(self, plan: ResearchPlan) -> ax.Group[Finding]:
        return ax.group(*(
            ax.call("research_question", QuestionContext(company=plan.company, question=q))
            for q in plan.questions
        ))

    @research_pipeline.step(2)
    async def write(self, findings: list[Finding]) -> Report:
        runner = ax.OpenAIRunner(agent_id=self.agent_id)
        writer = Agent(
            name="Writer",
            instructions="Write a short research report from these findings.",
            model="gpt-4o",
        )
        notes = "\n\n".join(f"Q: {f.question}\nA: {f.answer}" for f in findings)
        result = await runner.run(writer, input=notes)
        return Report(company=findings[0].company, report=result.final_output, findings=findings)

if __name__ == "__main__":
    pool.run()
