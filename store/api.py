"""The store's functions: the only code in restreact that talks SQL.

Everything is transactional: a step, with its samples, LLM call and search calls, is
written in one transaction, so a crash loses at most the step in flight. Trajectories
are claimed per (run, question, sample) with a unique key, so several collectors can
share one question set without duplicates, and a re-run skips what is finished and
takes over what a dead process left behind.
"""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Iterable, Sequence

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload, sessionmaker

from store.records import GenRequest, Generation, SearchCall, Step, action_to_dict
from store.db import open_engine, session_scope
from store.models import (
    Evaluation,
    LLMCall,
    ModelVersion,
    Question,
    QuestionSet,
    Ranking,
    Run,
    SearchCallRow,
    StageStat,
    StepRow,
    StepSample,
    Trajectory,
    utcnow,
)

LEASE = timedelta(seconds=120)  # a claim whose heartbeat is older than this may be taken over


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _pid_dead(worker: str | None) -> bool:
    """True when the claimant ran on this host and its process is gone."""
    if not worker:
        return True
    host, _, rest = worker.partition(":")
    pid_s = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid_s.isdigit():
        return False
    pid = int(pid_s)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _question_key(row: dict) -> str:
    """The row's own id, else a digest of its text (stable across re-imports)."""
    if row.get("id") not in (None, ""):
        return str(row["id"])
    return "sha1:" + hashlib.sha1(row["question"].strip().encode()).hexdigest()[:16]


def _abandoned(worker: str | None, heartbeat_at) -> bool:
    """A claim may be taken over when its process is gone, or (on another host, where we
    cannot look) when its heartbeat is older than the lease. A live process on this host
    keeps its claim however slow its current step is."""
    if _pid_dead(worker):
        return True
    return not _same_host(worker) and heartbeat_at < utcnow() - LEASE


def _same_host(worker: str | None) -> bool:
    return bool(worker) and worker.partition(":")[0] == socket.gethostname()


class ClaimLost(RuntimeError):
    """Another worker took this trajectory over; this one must stop writing to it."""


@dataclass
class Claim:
    trajectory_id: int
    question_id: int | None
    sample_index: int
    question: str
    resumed: bool = False  # taken over from a dead worker with its finished steps kept


class Store:
    def __init__(self, db: str | None = None):
        self.engine = open_engine(db)
        self.Session = sessionmaker(self.engine, expire_on_commit=False)
        self.worker = worker_id()

    def session(self):
        return session_scope(self.Session)

    def close(self) -> None:
        self.engine.dispose()

    # --- question sets --------------------------------------------------------------

    def import_questions(self, set_name: str, rows: Sequence[dict], split: str = "train",
                         source: str | None = None) -> int:
        """Add rows ({question, answer?, id?, split?, meta?}) to a set, all or nothing.

        Rows whose id is already in the set are left as they are, so importing the same
        file twice adds nothing. A row without an id is known by its text, so a second,
        different file adds its questions instead of colliding on row numbers. An empty
        question raises ValueError and nothing is written. Returns the number of new questions.
        """
        for attempt in range(3):
            try:
                return self._import_questions_once(set_name, rows, split, source)
            except IntegrityError:
                # Another process (collectors started together) imported the same set at
                # the same moment; this transaction was rolled back whole, and a retry sees
                # and skips what the other one added.
                if attempt == 2:
                    raise
        return 0

    def _import_questions_once(self, set_name: str, rows: Sequence[dict], split: str,
                               source: str | None) -> int:
        with self.session() as s:
            qs = s.scalar(select(QuestionSet).where(QuestionSet.name == set_name))
            if qs is None:
                qs = QuestionSet(name=set_name, source=source)
                s.add(qs)
                s.flush()
            have = set(s.scalars(select(Question.ext_id).where(Question.set_id == qs.id)))
            added = 0
            for i, row in enumerate(rows):
                text = row["question"]
                if not isinstance(text, str) or not text.strip():
                    raise ValueError(f"row {i + 1}: empty question")
                ext = _question_key(row)
                if ext in have:
                    continue
                have.add(ext)
                s.add(Question(set_id=qs.id, ext_id=ext, split=row.get("split") or split,
                               text=text, answer=row.get("answer"),
                               meta=row.get("meta") or {}))
                added += 1
            return added

    def question_sets(self) -> list[tuple[str, int]]:
        with self.session() as s:
            q = (select(QuestionSet.name, func.count(Question.id))
                 .join(Question, isouter=True).group_by(QuestionSet.name).order_by(QuestionSet.name))
            return [(n, c) for n, c in s.execute(q)]

    def questions(self, set_name: str, split: str | None = None, limit: int | None = None) -> list[Question]:
        with self.session() as s:
            q = (select(Question).join(QuestionSet).where(QuestionSet.name == set_name)
                 .order_by(Question.id))
            if split:
                q = q.where(Question.split == split)
            if limit:
                q = q.limit(limit)
            return list(s.scalars(q))

    def has_question_set(self, set_name: str) -> bool:
        with self.session() as s:
            return s.scalar(select(QuestionSet.id).where(QuestionSet.name == set_name)) is not None

    # --- runs -----------------------------------------------------------------------

    def get_or_create_run(self, name: str, kind: str, config: dict | None = None) -> Run:
        with self.session() as s:
            run = s.scalar(select(Run).where(Run.name == name))
            if run is not None:
                return run
        try:
            with self.session() as s:
                run = Run(name=name, kind=kind, config=config or {}, state={})
                s.add(run)
                s.flush()
                return run
        except IntegrityError:  # another process created it first
            with self.session() as s:
                return s.scalar(select(Run).where(Run.name == name))

    def get_run(self, name_or_id: str | int) -> Run | None:
        with self.session() as s:
            if isinstance(name_or_id, int) or str(name_or_id).isdigit():
                run = s.get(Run, int(name_or_id))
                if run is not None:
                    return run
            return s.scalar(select(Run).where(Run.name == str(name_or_id)))

    def set_run_state(self, run_id: int, **state) -> None:
        with self.session() as s:
            run = s.get(Run, run_id)
            run.state = {**(run.state or {}), **state}

    def finish_run(self, run_id: int, status: str = "finished") -> None:
        with self.session() as s:
            s.execute(update(Run).where(Run.id == run_id).values(status=status, finished_at=utcnow()))

    def runs(self, kind: str | None = None) -> list[Run]:
        with self.session() as s:
            q = select(Run).order_by(Run.id)
            if kind:
                q = q.where(Run.kind == kind)
            return list(s.scalars(q))

    # --- trajectories: claim, write steps, finish -------------------------------------

    def claim(self, run_id: int, question_id: int | None, question: str, sample_index: int = 0,
              model: str | None = None, model_version_id: int | None = None) -> Claim | None:
        """Claim one (question, sample) of a run; None if finished or held by a live worker.

        A claim left by a dead worker (same host, process gone) or with a stale heartbeat
        is taken over. Its stored steps are kept (`resumed`), so the agent continues after
        the last finished step; if the model differs, they are deleted and it starts afresh.
        """
        try:
            with self.session() as s:
                t = Trajectory(run_id=run_id, question_id=question_id, sample_index=sample_index,
                               question=question, status="running", worker=self.worker,
                               model=model, model_version_id=model_version_id)
                s.add(t)
                s.flush()
                return Claim(t.id, question_id, sample_index, question)
        except IntegrityError:
            pass
        with self.session() as s:
            t = s.scalar(select(Trajectory).where(
                Trajectory.run_id == run_id, Trajectory.question_id == question_id,
                Trajectory.sample_index == sample_index).with_for_update())
            if t is None:
                return None
            if t.status == "error":  # a backend outage ended it: try again from scratch
                s.execute(update(Trajectory).where(Trajectory.id == t.id).values(
                    status="running", error=None, worker=self.worker, heartbeat_at=utcnow(),
                    model=model, model_version_id=model_version_id))
                self._reset_trajectory(s, t.id)
                return Claim(t.id, question_id, sample_index, question)
            # An interrupted one (Ctrl-C, SIGTERM) is resumed like a dead worker's.
            if t.status == "running" and not _abandoned(t.worker, t.heartbeat_at):
                return None
            if t.status not in ("running", "interrupted"):
                return None
            same_policy = t.model == model and t.model_version_id == model_version_id
            # Take over atomically: only one of several racing collectors wins this update.
            won = s.execute(update(Trajectory).where(
                Trajectory.id == t.id, Trajectory.worker == t.worker,
                Trajectory.status == t.status).values(
                status="running", error=None, worker=self.worker, heartbeat_at=utcnow(),
                model=model, model_version_id=model_version_id)).rowcount
            if not won:
                return None
            if not same_policy:
                self._reset_trajectory(s, t.id)
            return Claim(t.id, question_id, sample_index, question, resumed=same_policy)

    @staticmethod
    def _reset_trajectory(s, trajectory_id: int) -> None:
        step_ids = select(StepRow.id).where(StepRow.trajectory_id == trajectory_id)
        s.execute(delete(Ranking).where(Ranking.step_id.in_(step_ids)))
        s.execute(delete(StepSample).where(StepSample.step_id.in_(step_ids)))
        s.execute(delete(LLMCall).where(LLMCall.trajectory_id == trajectory_id))
        s.execute(delete(SearchCallRow).where(SearchCallRow.trajectory_id == trajectory_id))
        s.execute(delete(StepRow).where(StepRow.trajectory_id == trajectory_id))

    def start_trajectory(self, run_id: int, question: str, question_id: int | None = None,
                         model: str | None = None) -> int:
        """A one-off trajectory (ask): a fresh sample index, no claim contention."""
        with self.session() as s:
            n = s.scalar(select(func.count(Trajectory.id)).where(Trajectory.run_id == run_id)) or 0
            t = Trajectory(run_id=run_id, question_id=question_id, sample_index=n,
                           question=question, worker=self.worker, model=model)
            s.add(t)
            s.flush()
            return t.id

    def add_step(self, trajectory_id: int, step: Step, generation: Generation | None = None,
                 request: GenRequest | None = None, searches: Iterable[SearchCall] = ()) -> int:
        """Write one step with its samples, its LLM call and the searches it triggered."""
        with self.session() as s:
            row = StepRow(trajectory_id=trajectory_id, idx=step.index, kind=step.kind,
                          prompt=step.prompt, chosen_index=step.chosen,
                          action=action_to_dict(step.action),
                          status="ok" if step.chosen is not None else "unparseable",
                          attempt=step.attempt, latency_s=step.latency_s,
                          prompt_tokens=step.prompt_tokens,
                          completion_tokens=step.completion_tokens)
            for i, smp in enumerate(step.samples):
                row.samples.append(StepSample(idx=i, text=smp.text, n_tokens=smp.n_tokens,
                                              logprob=smp.logprob, perplexity=smp.perplexity,
                                              action=action_to_dict(smp.action),
                                              parse_error=smp.parse_error))
            s.add(row)
            s.flush()
            if generation is not None:
                s.add(self._llm_row(generation, request, trajectory_id, row.id, step.kind))
            for call in searches:
                s.add(self._search_row(call, trajectory_id, row.id))
            owned = s.execute(update(Trajectory).where(
                Trajectory.id == trajectory_id, Trajectory.worker == self.worker)
                .values(heartbeat_at=utcnow())).rowcount
            if not owned:  # rolled back with the step: the new owner's rows stay whole
                raise ClaimLost(f"trajectory {trajectory_id} was taken over by another worker")
            return row.id

    def add_search(self, call: SearchCall, trajectory_id: int | None = None, k: int = 3) -> None:
        with self.session() as s:
            s.add(self._search_row(call, trajectory_id, None, k))

    def log_llm_call(self, generation: Generation, request: GenRequest | None = None,
                     trajectory_id: int | None = None, step_id: int | None = None,
                     purpose: str = "") -> int:
        with self.session() as s:
            row = self._llm_row(generation, request, trajectory_id, step_id, purpose)
            s.add(row)
            s.flush()
            return row.id

    @staticmethod
    def _llm_row(gen: Generation, req: GenRequest | None, trajectory_id, step_id, purpose) -> LLMCall:
        texts = [c.text for c in gen.completions]
        options = dict(gen.options)
        if req is not None:
            options.update(n=req.n, temperature=req.temperature, max_new_tokens=req.max_new_tokens)
        return LLMCall(trajectory_id=trajectory_id, step_id=step_id,
                       purpose=purpose or (req.purpose if req else ""), model=gen.model,
                       prompt=gen.rendered_prompt, response=texts[0] if texts else "",
                       responses=texts, options=options, prompt_tokens=gen.prompt_tokens,
                       completion_tokens=sum(c.n_tokens for c in gen.completions),
                       duration_s=gen.duration_s)

    @staticmethod
    def _search_row(call: SearchCall, trajectory_id, step_id, k: int = 3) -> SearchCallRow:
        return SearchCallRow(trajectory_id=trajectory_id, step_id=step_id, query=call.query,
                             backend=call.backend, k=k,
                             results=[r.to_dict() for r in call.results], error=call.error,
                             latency_s=call.latency_s)

    def finish_trajectory(self, trajectory_id: int, status: str, answer: str | None = None,
                          final_answer: str | None = None, error: str | None = None) -> None:
        with self.session() as s:
            owned = s.execute(update(Trajectory).where(
                Trajectory.id == trajectory_id, Trajectory.worker == self.worker).values(
                status=status, answer=answer, final_answer=final_answer, error=error,
                finished_at=utcnow(), heartbeat_at=utcnow())).rowcount
            if not owned:
                raise ClaimLost(f"trajectory {trajectory_id} was taken over by another worker")

    def interrupt_trajectory(self, trajectory_id: int, reason: str = "interrupted") -> None:
        """Mark a trajectory stopped by a signal: its steps stay, a re-run resumes it."""
        with self.session() as s:
            s.execute(update(Trajectory).where(
                Trajectory.id == trajectory_id, Trajectory.worker == self.worker,
                Trajectory.status == "running").values(
                status="interrupted", error=reason, heartbeat_at=utcnow()))

    def resume_interrupted(self, run_id: int, question: str, model: str | None = None) -> int | None:
        """Take over the newest interrupted trajectory of this run, question and model (ask's
        re-run); its id, or None when there is none."""
        with self.session() as s:
            ids = s.scalars(select(Trajectory.id).where(
                Trajectory.run_id == run_id, Trajectory.question == question,
                Trajectory.model == model, Trajectory.status == "interrupted")
                .order_by(Trajectory.id.desc()))
            for tid in ids:
                won = s.execute(update(Trajectory).where(
                    Trajectory.id == tid, Trajectory.status == "interrupted").values(
                    status="running", error=None, worker=self.worker,
                    heartbeat_at=utcnow())).rowcount
                if won:
                    return tid
        return None

    def trajectory(self, trajectory_id: int) -> Trajectory | None:
        with self.session() as s:
            return s.scalar(select(Trajectory).where(Trajectory.id == trajectory_id).options(
                selectinload(Trajectory.steps).selectinload(StepRow.samples),
                selectinload(Trajectory.steps).selectinload(StepRow.rankings),
                selectinload(Trajectory.searches)))

    def latest_trajectory_id(self) -> int | None:
        """The newest trajectory (what `show` with no id shows)."""
        with self.session() as s:
            return s.scalar(select(func.max(Trajectory.id)))

    def trajectories(self, run_id: int | None = None, status: str | None = None,
                     question_id: int | None = None) -> list[Trajectory]:
        with self.session() as s:
            q = select(Trajectory).order_by(Trajectory.id)
            if run_id is not None:
                q = q.where(Trajectory.run_id == run_id)
            if status:
                q = q.where(Trajectory.status == status)
            if question_id is not None:
                q = q.where(Trajectory.question_id == question_id)
            return list(s.scalars(q))

    def finished_keys(self, run_id: int) -> set[tuple[int | None, int]]:
        with self.session() as s:
            q = select(Trajectory.question_id, Trajectory.sample_index).where(
                Trajectory.run_id == run_id, Trajectory.status.in_(("finished", "failed")))
            return {(a, b) for a, b in s.execute(q)}

    def search_cache(self, query: str) -> list[dict] | None:
        """The newest stored successful results for this exact query (frozen search)."""
        with self.session() as s:
            row = s.scalar(select(SearchCallRow).where(
                SearchCallRow.query == query, SearchCallRow.error.is_(None),
                SearchCallRow.backend != "frozen")  # a frozen replay is not new evidence
                .order_by(SearchCallRow.id.desc()).limit(1))
            return None if row is None else list(row.results)

    # --- steps for ranking and training ---------------------------------------------

    def steps_of_run(self, run_id: int, status: str | None = "finished",
                     min_samples: int = 1) -> list[StepRow]:
        with self.session() as s:
            q = (select(StepRow).join(Trajectory).where(Trajectory.run_id == run_id)
                 .options(selectinload(StepRow.samples), selectinload(StepRow.rankings))
                 .order_by(StepRow.id))
            if status:
                q = q.where(Trajectory.status == status)
            steps = list(s.scalars(q))
        return [st for st in steps if len(st.samples) >= min_samples]

    def add_ranking(self, step_id: int, judge: str, prompt_version: str, status: str,
                    best_index: int | None = None, order: list[int] | None = None,
                    bad: list[int] | None = None, explanation: str | None = None,
                    raw: str | None = None) -> bool:
        """Store one ranking; False when this judge already ranked the step (resume)."""
        try:
            with self.session() as s:
                s.add(Ranking(step_id=step_id, judge=judge, prompt_version=prompt_version,
                              status=status, best_index=best_index, order=order or [],
                              bad=bad or [], explanation=explanation, raw=raw))
            return True
        except IntegrityError:
            return False

    def ranked_step_ids(self, judge: str, prompt_version: str) -> set[int]:
        with self.session() as s:
            return set(s.scalars(select(Ranking.step_id).where(
                Ranking.judge == judge, Ranking.prompt_version == prompt_version)))

    # --- model versions -------------------------------------------------------------

    def add_model_version(self, name: str, base: str, adapter_path: str | None = None,
                          parent_id: int | None = None, iteration: int = 0,
                          run_id: int | None = None, step_ids: list[int] | None = None,
                          config: dict | None = None, metrics: dict | None = None) -> ModelVersion:
        with self.session() as s:
            mv = ModelVersion(name=name, base=base, adapter_path=adapter_path, parent_id=parent_id,
                              iteration=iteration, run_id=run_id, step_ids=step_ids or [],
                              config=config or {}, metrics=metrics or {})
            s.add(mv)
            s.flush()
            return mv

    def model_version(self, name_or_id: str | int) -> ModelVersion | None:
        with self.session() as s:
            if isinstance(name_or_id, int) or str(name_or_id).isdigit():
                return s.get(ModelVersion, int(name_or_id))
            return s.scalar(select(ModelVersion).where(ModelVersion.name == name_or_id))

    def model_versions(self) -> list[ModelVersion]:
        with self.session() as s:
            return list(s.scalars(select(ModelVersion).order_by(ModelVersion.id)))

    def update_model_version(self, mv_id: int, metrics: dict | None = None,
                             promoted: bool | None = None) -> None:
        with self.session() as s:
            mv = s.get(ModelVersion, mv_id)
            if metrics:
                mv.metrics = {**(mv.metrics or {}), **metrics}
            if promoted is not None:
                mv.promoted = promoted

    # --- improve stage timings ------------------------------------------------------

    def add_stage_stat(self, run_id: int, iteration: int, stage: str, wall_s: float,
                       peak_gpu_bytes: int | None, peak_rss_bytes: int | None, device: str,
                       error: str | None = None) -> None:
        with self.session() as s:
            s.add(StageStat(run_id=run_id, iteration=iteration, stage=stage, wall_s=float(wall_s),
                            peak_gpu_bytes=peak_gpu_bytes, peak_rss_bytes=peak_rss_bytes,
                            device=device, error=error))

    def stage_stats(self, run_id: int) -> list[StageStat]:
        """Every recorded stage attempt of an improve run, in the order they ran."""
        with self.session() as s:
            return list(s.scalars(select(StageStat).where(StageStat.run_id == run_id)
                                  .order_by(StageStat.id)))

    # --- evaluations ----------------------------------------------------------------

    def add_evaluation(self, run_id: int, question_id: int, run_index: int, prediction: str | None,
                       reference: str | None, exact: float, f1: float,
                       judge_verdict: bool | None = None, trajectory_id: int | None = None,
                       model_version_id: int | None = None) -> None:
        try:
            with self.session() as s:
                s.add(Evaluation(run_id=run_id, question_id=question_id, run_index=run_index,
                                 prediction=prediction, reference=reference, exact=exact, f1=f1,
                                 judge_verdict=judge_verdict, trajectory_id=trajectory_id,
                                 model_version_id=model_version_id))
        except IntegrityError:
            pass  # already evaluated in an earlier, interrupted attempt

    def evaluations(self, run_id: int) -> list[Evaluation]:
        with self.session() as s:
            return list(s.scalars(select(Evaluation).where(Evaluation.run_id == run_id)
                                  .order_by(Evaluation.question_id, Evaluation.run_index)))

    # --- logs -----------------------------------------------------------------------

    def llm_calls(self, limit: int = 3, query: str | None = None,
                  trajectory_id: int | None = None) -> list[LLMCall]:
        with self.session() as s:
            q = select(LLMCall).order_by(LLMCall.id.desc())
            if query:
                like = f"%{query}%"
                q = q.where(or_(LLMCall.prompt.ilike(like), LLMCall.response.ilike(like)))
            if trajectory_id is not None:
                q = q.where(LLMCall.trajectory_id == trajectory_id)
            if limit:
                q = q.limit(limit)
            return list(s.scalars(q))
