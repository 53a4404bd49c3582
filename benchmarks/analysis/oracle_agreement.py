"""How often do the ranker's picks agree with the error-free scripted reader?

Reads a pocket benchmark store and one iteration's examples file; for every ranked step of
that iteration's grow run, asks the scripted reader at error rate 0 for the right action and
compares it (thoughts ignored) with each sample, the ranker's best, and the kept examples.
Decide steps under-count: the reader picks one of several equally good query variants.

    python benchmarks/analysis/oracle_agreement.py DB EXAMPLES.jsonl GROW_RUN_NAME [VERSION]

EXAMPLES "-" keeps what the build stage would (best not marked bad), so a run ranked twice
(say rules-v1 and rules-v2) can be compared without training; VERSION then picks the
rankings. The last column is the rule's false alarms: samples equal to the reader's that
the judge marked bad.
"""
import collections
import json
import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from agent.worlds.pocket.assets import pocket_assets
from agent.worlds.pocket.policy import ScriptedPolicy
from store.records import GenRequest
from agent.parsing import parse_action

db_path, examples_path, grow_run = sys.argv[1:4]
version = sys.argv[4] if len(sys.argv) > 4 else None
db = sqlite3.connect(db_path)
oracle = get_world("pocket").oracle()
kept = None if examples_path == "-" else {json.loads(l)['step_id'] for l in open(examples_path)}
run = db.execute("select id from runs where name=?", (grow_run,)).fetchone()[0]
rows = db.execute("""select s.id, s.kind, s.prompt, r.best_index, r.bad from steps s join trajectories t on t.id=s.trajectory_id
  join rankings r on r.step_id=s.id where t.run_id=? and coalesce(?, r.prompt_version)=r.prompt_version""",
  (run, version)).fetchall()
def key(kind, text):
    a, _ = parse_action(kind, text)
    if a is None: return None
    d = {k: v for k, v in vars(a).items() if k != 'thoughts'} if hasattr(a, '__dict__') else a
    return (type(a).__name__, json.dumps(d, sort_keys=True, default=str))
stats = collections.defaultdict(lambda: [0] * 7)  # any agrees, best agrees, kept, kept agrees, steps, right, right bad
for sid, kind, prompt, best, bad in rows:
    try:
        want = key(kind, oracle.generate(GenRequest(prompt=prompt)).completions[0].text)
    except ValueError:  # a prompt the reader cannot parse back
        continue
    samples = {i: t for i, t in db.execute("select idx, text from step_samples where step_id=?", (sid,))}
    agree = {i: key(kind, t) == want for i, t in samples.items()}
    st = stats[kind]; st[4] += 1
    st[0] += any(agree.values())
    bad = set(json.loads(bad or "[]"))
    st[5] += sum(agree.values()); st[6] += sum(ok for i, ok in agree.items() if i in bad)
    if best is not None: st[1] += agree.get(best, False)
    if (sid in kept) if kept is not None else (best is not None and best not in bad):
        st[2] += 1; st[3] += agree.get(best, False)
print("kind: steps | some sample = oracle | ranker's best = oracle | kept | kept = oracle"
      " | samples = oracle marked bad")
for k, (anyok, bestok, nk, keptok, n, right, right_bad) in sorted(stats.items()):
    print(f"{k}: {n} | {anyok/n:.0%} | {bestok/n:.0%} | {nk} | {keptok/max(nk,1):.0%} ({keptok})"
          f" | {right_bad}/{right}")
