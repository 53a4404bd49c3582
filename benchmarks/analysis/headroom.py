"""Where is the self-improvement loop's headroom capped? Three read-only views of a store.

`eval RUN`: an eval run with several sampled runs per question (`cli.py eval --runs K`).
Prints pass@1 (mean over runs), pass@K (any run exactly right), majority vote (the most
common normalised final answer, ties to the lowest run index, empty answers abstain) and,
with a second run (greedy, `--runs 1`), its accuracy; overall and per question type.
pass@K - pass@1 bounds what distilling best-of-K trajectories can add at this policy; the
last line says how many of those the rule judge can tell (every taken step passed) without
the reference.

`grow RUN [VERSION]`: a grow collection (`cli.py collect --samples K`) ranked by a judge
(`cli.py rank`). Splits its trajectories by whether the final answer is exactly right
(reward.autoeval.exact_match against the question's reference, which the loop never sees)
and counts, per step kind, the steps the build stage would keep
(trainer.examples.examples_from_steps: best sample not marked bad, parseable). If steps of
wrong trajectories are kept about as often as those of right ones, training copies errors.
For answer steps it also says whether the kept sample's answer is itself right, and
last how often the clean trajectories (`improve --trajectories clean`) end right.

`reading RUN [VERSION]`: the summarize steps of a ranked run, by their place in the
trajectory (1st, 2nd, 3rd+ summary), held against the error-free scripted reader as
oracle_agreement.py does (thoughts ignored; also with numbers masked, since the model
miscopies years far more than names): some sample right, the rollout's choice right,
kept, kept and right. Steps where no result is about the entity the plan needs (the
search missed: the reader would write an empty summary) are counted apart, not scored.
Shows whether copying fails more on later hops; `rel:` rows split the readable steps by
the relation the reader's summary states (agent.worlds.pocket.policy.SAY).

    python benchmarks/analysis/headroom.py DB eval EVAL_RUN [GREEDY_EVAL_RUN]
    python benchmarks/analysis/headroom.py DB grow GROW_RUN [VERSION]   # VERSION: rules-v2
    python benchmarks/analysis/headroom.py DB reading GROW_RUN [VERSION]
    python benchmarks/analysis/headroom.py DB answers RUN
    python benchmarks/analysis/headroom.py DB firstbad RUN

`answers RUN`: where the wrong final answers of a run (eval or grow) went wrong. Each
wrong trajectory is put in one of four bins, per question type: the taken answer step
is or is not bad under today's rule judge, and the reference does or does not occur in the
trajectory's taken summaries. "Judged ok, reference in the summaries" is what no rule
catches yet (a grounded answer of the right kind that picks the wrong name); "reference
not in the summaries" failed before the answer step (search or reading).

`firstbad RUN`: which step kind a trajectory first goes wrong at, by today's rule judge on
the sample each step took (right and wrong trajectories apart, per question type), and for
steps with several samples (a grow run), how often all of them are bad, so no choice could
have saved the step. A loop that distils its own judged samples can only fix a step that
has a good sample: the "all bad" share bounds it per step kind.
"""
import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from reward.autoeval import exact_match, normalize_answer
from store.api import Store

db_path, mode, run_name = sys.argv[1:4]
extra = sys.argv[4] if len(sys.argv) > 4 else None
store = Store(db_path)


def questions_of(run_id):
    """question id → (reference, type) for the trajectories of a run."""
    ids = {t.question_id for t in store.trajectories(run_id=run_id)}
    out = {}
    with store.session() as s:
        from store.models import Question
        for q in s.query(Question).filter(Question.id.in_(ids)):
            out[q.id] = (q.answer or "", (q.meta or {}).get("type", "?"))
    return out


def by_question(run_id):
    got = collections.defaultdict(dict)  # qid → {sample_index: final answer}
    for t in store.trajectories(run_id=run_id):
        got[t.question_id][t.sample_index] = (t.final_answer or "") if t.status == "finished" else ""
    return got


def taken_text(step):
    """The text of the sample the rollout continued with (None if it was not stored)."""
    return {x.idx: x.text for x in step.samples}.get(step.chosen_index or 0)


def pct(a, n):
    return f"{a / n:.1%} ({a}/{n})" if n else "-"


if mode == "eval":
    run = store.get_run(run_name)
    qs, got = questions_of(run.id), by_question(run.id)
    greedy = by_question(store.get_run(extra).id) if extra else {}
    rows = collections.defaultdict(lambda: [0, 0.0, 0, 0, 0, 0])  # n, pass@1, pass@K, maj, greedy, K
    for qid, answers in got.items():
        ref, typ = qs[qid]
        ok = [exact_match(a, ref) if a else False for _, a in sorted(answers.items())]
        votes = collections.Counter(normalize_answer(a) for _, a in sorted(answers.items())
                                    if normalize_answer(a))
        maj = votes.most_common(1)[0][0] if votes else ""  # Counter keeps first-seen order on ties
        g = greedy.get(qid, {}).get(0, "")
        for key in (typ, "all"):
            r = rows[key]
            r[0] += 1; r[1] += sum(ok) / len(ok); r[2] += any(ok)
            r[3] += bool(maj) and exact_match(maj, ref); r[4] += bool(g) and exact_match(g, ref)
            r[5] = max(r[5], len(ok))
    print("type | questions | greedy | pass@1 (sampled) | pass@K | majority | K")
    for key, (n, p1, pk, mj, gr, k) in sorted(rows.items(), key=lambda kv: kv[0] == "all"):
        print(f"{key} | {n} | {gr / n:.1%} | {p1 / n:.1%} | {pk / n:.1%} | {mj / n:.1%} | {k}"
              + ("" if extra else " (no greedy run given)"))
    # What rejection sampling over these runs could keep: trajectories whose every taken step
    # today's rule judge passes ("clean", as `improve --trajectories clean` would keep them).
    from reward.rules import judge_step
    ok = {}
    for st in store.steps_of_run(run.id, status="finished", min_samples=1):
        taken = taken_text(st)
        good = taken is not None and not judge_step(st.kind, st.prompt, [taken]).bad
        ok[st.trajectory_id] = ok.get(st.trajectory_id, True) and good
    clean = collections.defaultdict(list)  # qid → [clean trajectory right?]
    for t in store.trajectories(run_id=run.id, status="finished"):
        if ok.get(t.id):
            clean[t.question_id].append(exact_match(t.final_answer or "", qs[t.question_id][0]))
    n_clean = sum(len(v) for v in clean.values())
    print(f"clean trajectories: {n_clean}, right {pct(sum(sum(v) for v in clean.values()), n_clean)};"
          f" questions with a clean right one: {pct(sum(any(v) for v in clean.values()), len(got))},"
          f" with only clean wrong ones: {sum(not any(v) for v in clean.values())}")
elif mode == "grow":
    from reward.ranker import RULES_JUDGE, prompt_version
    from trainer.examples import clean_trajectories, examples_from_steps

    run = store.get_run(run_name)
    qs = questions_of(run.id)
    version = extra or prompt_version(RULES_JUDGE)
    right = {t.id: exact_match(t.final_answer or "", qs[t.question_id][0]) if t.final_answer else False
             for t in store.trajectories(run_id=run.id, status="finished")}
    steps = store.steps_of_run(run.id, status="finished", min_samples=1)
    kept = {ex.step_id: ex for ex in examples_from_steps(steps, RULES_JUDGE, version)}
    ref_of = {t.id: qs[t.question_id][0] for t in store.trajectories(run_id=run.id, status="finished")}
    c = collections.defaultdict(lambda: [0, 0, 0, 0])  # right: steps, kept; wrong: steps, kept
    ans = collections.Counter()  # kept answer steps by (trajectory right, kept answer right)
    anyright = collections.Counter()
    for st in steps:
        ok = right[st.trajectory_id]
        cell = c[st.kind]; cell[0 if ok else 2] += 1
        if st.id in kept:
            cell[1 if ok else 3] += 1
        if st.kind == "answer":
            ref = ref_of[st.trajectory_id]
            texts = [(s.action or {}).get("answer", "") for s in st.samples]
            anyright[ok] += any(exact_match(a, ref) for a in texts if a)
            if st.id in kept:
                best = next(s for s in st.samples if s.text == kept[st.id].completion)
                ans[(ok, exact_match((best.action or {}).get("answer", ""), ref))] += 1
    n_right, n = sum(right.values()), len(right)
    print(f"trajectories: {n} finished, {pct(n_right, n)} exactly right; rankings {version}")
    print("kind | right traj: steps | kept | kept share | wrong traj: steps | kept | kept share"
          " | kept from wrong traj")
    tot = [0, 0, 0, 0]
    for kind, v in sorted(c.items()):
        tot = [a + b for a, b in zip(tot, v)]
        print(f"{kind} | {v[0]} | {v[1]} | {pct(v[1], v[0])} | {v[2]} | {v[3]} | {pct(v[3], v[2])}"
              f" | {pct(v[3], v[1] + v[3])}")
    print(f"all | {tot[0]} | {tot[1]} | {pct(tot[1], tot[0])} | {tot[2]} | {tot[3]} |"
          f" {pct(tot[3], tot[2])} | {pct(tot[3], tot[1] + tot[3])}")
    print("answer steps: some sample's answer exactly right — in right traj "
          f"{anyright[True]}, in wrong traj {anyright[False]}")
    print("kept answer steps (traj right, kept answer right): "
          + ", ".join(f"{k}: {v}" for k, v in sorted(ans.items())))
    clean = clean_trajectories(steps, RULES_JUDGE, version)  # what --trajectories clean keeps
    print(f"clean trajectories (every taken step passed): {pct(len(clean), n)}, of which right "
          f"{pct(sum(right[t] for t in clean), len(clean))}; the others right "
          f"{pct(n_right - sum(right[t] for t in clean), n - len(clean))}")
elif mode == "reading":
    import json
    import re
    from store.records import GenRequest
    from agent.parsing import parse_action
    from agent.worlds import get_world
    from agent.worlds.pocket.policy import SAY
    from reward.ranker import RULES_JUDGE, prompt_version
    from trainer.examples import examples_from_steps

    SAID = sorted(((len(re.sub(r"\{\w+\}", "", t)), g, re.compile(re.sub(r"\\\{\w+\\\}", "[^.]+", re.escape(t))))
                   for g, t in SAY.items()), reverse=True)  # most literal text first

    def relation(summary):  # the reader's first sentence names what the lookup reads
        first = summary.split("], ", 1)[-1].split(". ")[0].rstrip(".") + "."
        return next((g for _, g, rx in SAID if rx.fullmatch(first)), "?")

    def key(text, loose=False):  # as oracle_agreement.py; loose: numbers (years) masked
        a, _ = parse_action("summarize", text)
        if a is None: return None
        d = {k: v for k, v in vars(a).items() if k != 'thoughts'}
        if loose: d["summary"] = re.sub(r"\d+", "#", d["summary"])
        return json.dumps(d, sort_keys=True, default=str)

    oracle = get_world("pocket").oracle()
    run = store.get_run(run_name)
    steps = store.steps_of_run(run.id, status="finished", min_samples=1)
    kept = {ex.step_id: ex.completion for ex in
            examples_from_steps(steps, RULES_JUDGE, extra or prompt_version(RULES_JUDGE))}
    seen, missed = collections.Counter(), collections.Counter()
    # per (position, strict|loose): steps, any right, chosen right, kept, kept right
    c = collections.defaultdict(lambda: [0] * 5)
    for st in steps:  # ordered by id, so by position within each trajectory
        if st.kind != "summarize":
            continue
        seen[st.trajectory_id] += 1
        try:
            want_text = oracle.generate(GenRequest(prompt=st.prompt)).completions[0].text
        except ValueError:
            continue
        if 'summary=""' in want_text:  # no result is about the entity: the search missed
            missed[str(min(seen[st.trajectory_id], 3))] += 1; missed["all"] += 1
            continue
        for loose in (False, True):
            want = key(want_text, loose)
            ok = {s.idx: key(s.text, loose) == want for s in st.samples}
            text_ok = {s.text: ok[s.idx] for s in st.samples}
            rel = relation(parse_action("summarize", want_text)[0].summary)
            for pos in (str(min(seen[st.trajectory_id], 3)), "all", f"rel:{rel}"):
                v = c[(pos, "years masked" if loose else "strict")]
                v[0] += 1; v[1] += any(ok.values()); v[2] += ok.get(st.chosen_index, False)
                if st.id in kept:
                    v[3] += 1; v[4] += text_ok.get(kept[st.id], False)
    print("summary # (3 = 3rd or later) | match | readable steps | some sample = oracle"
          " | chosen = oracle | kept | kept = oracle | steps whose results miss the entity")
    for (pos, m), (n, a, ch, k, kr) in sorted(c.items()):
        print(f"{pos} | {m} | {n} | {pct(a, n)} | {pct(ch, n)} | {k} | {pct(kr, k)} | {missed.get(pos, '')}")
elif mode == "answers":
    from reward.rules import judge_step
    run = store.get_run(run_name)
    qs = questions_of(run.id)
    taken = collections.defaultdict(list)  # trajectory id → [(kind, prompt, taken text)]
    for st in store.steps_of_run(run.id, status=None):
        chosen = taken_text(st)
        if chosen is not None:
            taken[st.trajectory_id].append((st.kind, st.prompt, chosen))
    bins = collections.Counter()
    for t in store.trajectories(run_id=run.id):
        ref, typ = qs[t.question_id]
        steps = taken.get(t.id, [])
        if t.status == "finished" and exact_match(t.final_answer or "", ref):
            label = "right"
        else:
            answers = [(p, x) for k, p, x in steps if k == "answer"]
            summaries = normalize_answer(" ".join(x for k, _, x in steps if k == "summarize"))
            where = "in" if normalize_answer(ref) in summaries else "not in"
            if not answers:
                label = "wrong, no answer step"
            else:
                prompt, text = answers[-1]
                bad = judge_step("answer", prompt, [text]).bad
                label = f"wrong, answer judged {'bad' if bad else 'ok'}, reference {where} the summaries"
        for key in (typ, "all"):
            bins[key, label] += 1
    print("type | outcome | trajectories")
    for (typ, label), n in sorted(bins.items(), key=lambda kv: (kv[0][0] == "all", kv[0])):
        print(f"{typ} | {label} | {n}")
elif mode == "firstbad":
    from reward.rules import judge_step
    run = store.get_run(run_name)
    qs = questions_of(run.id)
    steps = collections.defaultdict(list)  # trajectory id → its steps, in order
    for st in store.steps_of_run(run.id, status="finished", min_samples=1):
        steps[st.trajectory_id].append(st)
    first = collections.Counter()
    every_bad = collections.defaultdict(lambda: [0, 0, 0])  # kind → steps, all bad, some bad
    for t in store.trajectories(run_id=run.id, status="finished"):
        ref, typ = qs[t.question_id]
        outcome = "right" if exact_match(t.final_answer or "", ref) else "wrong"
        kind = "none"
        for st in steps[t.id]:
            texts = [x.text for x in st.samples]
            bad = set(judge_step(st.kind, st.prompt, texts).bad)
            if len(texts) > 1:
                cell = every_bad[st.kind]
                cell[0] += 1; cell[1] += len(bad) == len(texts); cell[2] += 0 < len(bad) < len(texts)
            taken = [x.idx for x in st.samples].index(st.chosen_index or 0)
            if kind == "none" and taken in bad:
                kind = st.kind
        for key in (typ, "all"):
            first[key, outcome, kind] += 1
    print("type | outcome | first step judged bad | trajectories")
    for (typ, outcome, kind), n in sorted(first.items(), key=lambda kv: (kv[0][0] == "all", kv[0])):
        print(f"{typ} | {outcome} | {kind} | {n}")
    if every_bad:
        print("kind | steps with several samples | every sample bad | some bad, some good")
        for kind, (n, allbad, mixed) in sorted(every_bad.items()):
            print(f"{kind} | {n} | {pct(allbad, n)} | {pct(mixed, n)}")
else:
    sys.exit(__doc__)
