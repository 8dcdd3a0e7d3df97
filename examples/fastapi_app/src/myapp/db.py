# db.py
import os
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker, Session
import agentexec as ax

DATABASE_URL = os.getenv("DATABASE_URL", "sqlite:///agents.db")

engine = create_engine(DATABASE_URL)
SessionLocal = sessionmaker(bind=engine)

# Create tables
ax.Base.metadata.create_all(engine)
