"""SQLAlchemy ORM tables: everything an agent run, a ranking or a training run leaves behind.

Schema changes go through Alembic migrations in `store/migrations/versions/` — never
edit a released migration; add a new one that says why.
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class QuestionSet(Base):
    __tablename__ = "question_sets"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    source: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    questions: Mapped[list["Question"]] = relationship(back_populates="question_set")


class Question(Base):
    __tablename__ = "questions"
    __table_args__ = (UniqueConstraint("set_id", "ext_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    set_id: Mapped[int] = mapped_column(ForeignKey("question_sets.id", ondelete="CASCADE"), index=True)
    ext_id: Mapped[str] = mapped_column(String(200))  # id within the set (the file's id, else a digest of the text)
    split: Mapped[str] = mapped_column(String(50), default="train", index=True)
    text: Mapped[str] = mapped_column(Text)
    answer: Mapped[str | None] = mapped_column(Text)  # reference; never used for training
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
    question_set: Mapped[QuestionSet] = relationship(back_populates="questions")


class Run(Base):
    """One collect / eval / rank / train / improve invocation, resumable by name."""

    __tablename__ = "runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(300), unique=True)
    kind: Mapped[str] = mapped_column(String(50))
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    state: Mapped[dict] = mapped_column(JSON, default=dict)  # e.g. improve's stage cursor
    status: Mapped[str] = mapped_column(String(20), default="running")
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)


class Trajectory(Base):
    __tablename__ = "trajectories"
    __table_args__ = (UniqueConstraint("run_id", "question_id", "sample_index"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    question_id: Mapped[int | None] = mapped_column(ForeignKey("questions.id"), index=True)
    sample_index: Mapped[int] = mapped_column(Integer, default=0)
    question: Mapped[str] = mapped_column(Text)
    # running | finished | failed | error (backend down: retried) | interrupted (Ctrl-C or
    # SIGTERM: resumed by a re-run). Free text, so a new status needs no migration.
    status: Mapped[str] = mapped_column(String(20), default="running")
    answer: Mapped[str | None] = mapped_column(Text)  # the answer step's answer
    final_answer: Mapped[str | None] = mapped_column(Text)  # after the self-checks
    error: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(500))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    worker: Mapped[str | None] = mapped_column(String(200))  # host:pid:token of the claimant
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime)
    steps: Mapped[list["StepRow"]] = relationship(
        back_populates="trajectory", order_by="StepRow.idx", cascade="all, delete-orphan"
    )
    searches: Mapped[list["SearchCallRow"]] = relationship(
        back_populates="trajectory", order_by="SearchCallRow.id", cascade="all, delete-orphan"
    )


class StepRow(Base):
    __tablename__ = "steps"
    __table_args__ = (UniqueConstraint("trajectory_id", "idx"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    trajectory_id: Mapped[int] = mapped_column(ForeignKey("trajectories.id", ondelete="CASCADE"), index=True)
    idx: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(20), index=True)
    prompt: Mapped[str] = mapped_column(Text)  # verbatim model input
    chosen_index: Mapped[int | None] = mapped_column(Integer)
    action: Mapped[dict | None] = mapped_column(JSON)  # parsed chosen action
    status: Mapped[str] = mapped_column(String(20), default="ok")  # ok|unparseable
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    latency_s: Mapped[float] = mapped_column(Float, default=0.0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    trajectory: Mapped[Trajectory] = relationship(back_populates="steps")
    samples: Mapped[list["StepSample"]] = relationship(
        back_populates="step", order_by="StepSample.idx", cascade="all, delete-orphan"
    )
    rankings: Mapped[list["Ranking"]] = relationship(back_populates="step", cascade="all, delete-orphan")


class StepSample(Base):
    __tablename__ = "step_samples"
    __table_args__ = (UniqueConstraint("step_id", "idx"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    step_id: Mapped[int] = mapped_column(ForeignKey("steps.id", ondelete="CASCADE"), index=True)
    idx: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    n_tokens: Mapped[int] = mapped_column(Integer, default=0)
    logprob: Mapped[float | None] = mapped_column(Float)
    perplexity: Mapped[float | None] = mapped_column(Float)
    action: Mapped[dict | None] = mapped_column(JSON)
    parse_error: Mapped[str | None] = mapped_column(Text)
    step: Mapped[StepRow] = relationship(back_populates="samples")


class SearchCallRow(Base):
    __tablename__ = "search_calls"
    id: Mapped[int] = mapped_column(primary_key=True)
    trajectory_id: Mapped[int | None] = mapped_column(
        ForeignKey("trajectories.id", ondelete="CASCADE"), index=True
    )
    step_id: Mapped[int | None] = mapped_column(ForeignKey("steps.id", ondelete="SET NULL"))
    query: Mapped[str] = mapped_column(Text, index=True)
    backend: Mapped[str] = mapped_column(String(100))
    k: Mapped[int] = mapped_column(Integer, default=3)
    results: Mapped[list] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    latency_s: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    trajectory: Mapped[Trajectory | None] = relationship(back_populates="searches")


class LLMCall(Base):
    """Every call to every model, like `llm logs`: browse with `cli.py logs`."""

    __tablename__ = "llm_calls"
    id: Mapped[int] = mapped_column(primary_key=True)
    trajectory_id: Mapped[int | None] = mapped_column(
        ForeignKey("trajectories.id", ondelete="CASCADE"), index=True
    )
    step_id: Mapped[int | None] = mapped_column(ForeignKey("steps.id", ondelete="SET NULL"))
    purpose: Mapped[str] = mapped_column(String(50), default="")
    model: Mapped[str] = mapped_column(String(500))
    prompt: Mapped[str] = mapped_column(Text)
    response: Mapped[str] = mapped_column(Text)  # first completion; all of them in `responses`
    responses: Mapped[list] = mapped_column(JSON, default=list)
    options: Mapped[dict] = mapped_column(JSON, default=dict)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    duration_s: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class Ranking(Base):
    __tablename__ = "rankings"
    __table_args__ = (UniqueConstraint("step_id", "judge", "prompt_version"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    step_id: Mapped[int] = mapped_column(ForeignKey("steps.id", ondelete="CASCADE"), index=True)
    judge: Mapped[str] = mapped_column(String(300))
    prompt_version: Mapped[str] = mapped_column(String(50))
    status: Mapped[str] = mapped_column(String(20))  # ok|unparseable|error
    best_index: Mapped[int | None] = mapped_column(Integer)  # 0-based sample index
    order: Mapped[list] = mapped_column(JSON, default=list)  # 0-based, best first
    bad: Mapped[list] = mapped_column(JSON, default=list)  # 0-based indices judged bad
    explanation: Mapped[str | None] = mapped_column(Text)
    raw: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    step: Mapped[StepRow] = relationship(back_populates="rankings")


class ModelVersion(Base):
    __tablename__ = "model_versions"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(300), unique=True)
    base: Mapped[str] = mapped_column(String(500))
    adapter_path: Mapped[str | None] = mapped_column(Text)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    iteration: Mapped[int] = mapped_column(Integer, default=0)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", use_alter=True))
    step_ids: Mapped[list] = mapped_column(JSON, default=list)  # training-data lineage
    config: Mapped[dict] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    promoted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Evaluation(Base):
    __tablename__ = "evaluations"
    __table_args__ = (UniqueConstraint("run_id", "question_id", "run_index"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
    question_id: Mapped[int] = mapped_column(ForeignKey("questions.id"))
    trajectory_id: Mapped[int | None] = mapped_column(ForeignKey("trajectories.id", ondelete="SET NULL"))
    run_index: Mapped[int] = mapped_column(Integer, default=0)
    prediction: Mapped[str | None] = mapped_column(Text)
    reference: Mapped[str | None] = mapped_column(Text)
    exact: Mapped[float] = mapped_column(Float, default=0.0)
    f1: Mapped[float] = mapped_column(Float, default=0.0)
    judge_verdict: Mapped[bool | None] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class StageStat(Base):
    """Wall time and peak memory of one attempt at one improve stage (trainer/stage_stats.py)."""

    __tablename__ = "stage_stats"
    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    iteration: Mapped[int] = mapped_column(Integer)
    stage: Mapped[str] = mapped_column(String(50))
    wall_s: Mapped[float] = mapped_column(Float)
    peak_gpu_bytes: Mapped[int | None] = mapped_column(BigInteger)  # None without CUDA
    peak_rss_bytes: Mapped[int | None] = mapped_column(BigInteger)
    device: Mapped[str] = mapped_column(String(200), default="cpu")
    error: Mapped[str | None] = mapped_column(Text)  # the stage raised this (one line)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
