"""Property tests for every parser of model output: they never raise, whatever comes in.

Parsers: `agent.parsing.parse_action` (all five step kinds), `reward.verdicts.parse_ranking`
and `reward.verdicts.parse_verdict`. Inputs: empty and blank text, truncated valid
outputs, 100k-character outputs, wrong types (int, None, list, bytes, ...), broken quoting,
nested parentheses, invalid UTF-8 bytes, valid calls with wrong argument types, and
noise. The property: no exception, and the result is either a valid action / verdict or
a recorded one-line error. Well-formed inputs must also parse to exactly what they say.

Every generated case is counted; the last test checks that at least 10,000 ran.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.parsing import ALLOWED, parse_action
from agent.prompts import render_action
from store.records import (
    ACTION_TYPES,
    STEP_KINDS,
    Answer,
    CheckAnswer,
    ReviseAnswer,
    Search,
    SelectLink,
    Terminate,
)
from reward.verdicts import RankingVerdict, parse_ranking, parse_verdict

CASES: Counter = Counter()
MIN_CASES = 10_000


def fuzz(n: int):
    """Hypothesis settings for one property: n examples, no deadline, no example database."""
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])


# --- strategies -----------------------------------------------------------------------------

texts = st.text(max_size=40)
clean = st.text(min_size=1, max_size=30).map(str.strip).filter(bool)
link_ids = st.lists(st.integers(0, 10_000), max_size=5).map(tuple)

actions = st.one_of(
    st.builds(Search, query=clean, thoughts=clean),
    st.builds(Terminate, thoughts=clean),
    st.builds(SelectLink, summary=clean, thoughts=clean, selected_link_ids=link_ids),
    st.builds(Answer, thoughts=clean, answer=clean),
    st.builds(CheckAnswer, passed=st.booleans()),
    st.builds(ReviseAnswer, thoughts=clean, revised_answer=clean),
)
valid_outputs = actions.map(render_action)
WRONG_VALUES = st.one_of(st.integers(), st.floats(allow_nan=True), st.none(), st.booleans(),
                         st.lists(st.integers(), max_size=3), st.dictionaries(texts, st.integers(), max_size=2),
                         st.just(b"bytes"), st.text(max_size=10))


@st.composite
def truncated(draw):
    s = draw(valid_outputs)
    return s[: draw(st.integers(0, len(s)))]


@st.composite
def broken_quoting(draw):
    s = draw(valid_outputs)
    i = draw(st.integers(0, len(s)))
    op = draw(st.sampled_from(["insert", "delete", "swap"]))
    q = draw(st.sampled_from(['"', "'", '\\', '"""', "\\\"", "`"]))
    if op == "insert":
        return s[:i] + q + s[i:]
    if op == "delete":
        return s.replace('"', "", draw(st.integers(1, 3)))
    return s.replace('"', "'")


@st.composite
def nested_parens(draw):
    name = draw(st.sampled_from(list(ACTION_TYPES) + ["LinkSelection", "f", ""]))
    depth = draw(st.integers(1, 3000))
    opener = draw(st.sampled_from(["(", "[", "{", "(query=", "(summary=[", "(x="]))
    closer = draw(st.sampled_from([")", "]", "}", ""]))
    return name + opener * depth + draw(texts) + closer * draw(st.integers(0, depth + 2))


@st.composite
def over_long(draw):
    body = draw(st.sampled_from(["x", " ", "(", '"', "Search(", "\\", "é", "\n", "#1 > "]))
    call = draw(valid_outputs)
    where = draw(st.sampled_from(["pad_before", "pad_after", "alone", "inside"]))
    pad = body * (100_000 // len(body))
    if where == "pad_before":
        return pad + call
    if where == "pad_after":
        return call + pad
    if where == "inside":
        return call[:-1] + pad + call[-1:]
    return pad


@st.composite
def wrong_argument_types(draw):
    cls = draw(st.sampled_from(sorted(ACTION_TYPES)))
    names = draw(st.lists(st.sampled_from(["query", "thoughts", "summary", "answer", "revised_answer",
                                           "passed", "selected_link_ids", "grounded_summarization",
                                           "bogus"]), min_size=1, max_size=4, unique=True))
    args = ", ".join(f"{n}={draw(WRONG_VALUES)!r}" for n in names)
    positional = draw(st.sampled_from(["", "1, ", "'x', ", "*a, ", "**{'a': 1}, "]))
    return f"{cls}({positional}{args})"


@st.composite
def invalid_utf8(draw):
    s = draw(valid_outputs).encode()
    i = draw(st.integers(0, len(s)))
    junk = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80", b"\x00", b"\xf4\x90\x80\x80"]))
    return draw(st.one_of(st.just(s[:i] + junk + s[i:]), st.binary(max_size=200)))


wrong_types = st.one_of(st.integers(), st.none(), st.lists(texts, max_size=3), st.floats(),
                        st.binary(max_size=50), st.dictionaries(texts, texts, max_size=2),
                        st.booleans(), st.tuples(texts), st.just(object()), st.just(bytearray(b"Search(")))

any_output = st.one_of(
    st.just(""), st.text(alphabet=" \t\n\r", max_size=20), texts, valid_outputs, truncated(),
    broken_quoting(), nested_parens(), over_long(), wrong_types, wrong_argument_types(),
    invalid_utf8(), st.text(max_size=300),
)
kinds = st.one_of(st.sampled_from(STEP_KINDS), st.sampled_from(["", "Decide", "rank", None, 3]))


# --- parse_action -----------------------------------------------------------------------------

TEXT_FIELDS = {"query", "thoughts", "summary", "answer", "revised_answer"}


def check_action_result(kind, result) -> None:
    assert isinstance(result, tuple) and len(result) == 2
    action, error = result
    assert (action is None) != (error is None)
    if action is None:
        assert isinstance(error, str) and error.strip() and "\n" not in error
        return
    allowed = {ACTION_TYPES["SelectLink" if n == "LinkSelection" else n] for n in ALLOWED[kind]}
    assert type(action) in allowed
    for name, value in vars(action).items():
        if name in TEXT_FIELDS:
            assert isinstance(value, str)
    if isinstance(action, SelectLink):
        assert all(type(i) is int for i in action.selected_link_ids)
    if isinstance(action, CheckAnswer):
        assert type(action.passed) is bool
    render_action(action)  # a parsed action can always be written back into a prompt


@fuzz(3_500)
@given(kind=kinds, text=any_output)
def test_parse_action_never_raises(kind, text):
    CASES["parse_action"] += 1
    check_action_result(kind, parse_action(kind, text))


@fuzz(1_500)
@given(action=actions)
def test_parse_action_reads_every_rendered_action_back(action):
    CASES["parse_action"] += 1
    kind = next(k for k in STEP_KINDS if action.name in ALLOWED[k])
    noise = "Some thinking first.\nNEXT_ACTION = "
    assert parse_action(kind, noise + render_action(action) + "\nand trailing text") == (action, None)


def test_parse_action_named_hazards():
    """Hand-picked inputs that must come back as errors, not exceptions."""
    hazards = ["Search(" * 50_000, "Search(query=" + "[" * 5_000 + "]" * 5_000 + ")",
               "Search(query=" + "1+" * 10_000 + "1)", 'Search(query="x", thoughts=f"{1}")',
               "Search(query=__import__('os').system('true'))", "Search(query='x'" + " " * 100_000 + ")",
               "Search(query=9**9**9)", "Search(query=" + "9" * 5_000 + ")", "Search(query=-)",
               'SelectLink(summary="s", selected_link_ids=[1.5, True])', "Check_Answer(passed=1)",
               "Answer(thoughts='t', answer='\ud800')"]
    for kind in STEP_KINDS:
        for text in hazards:
            check_action_result(kind, parse_action(kind, text))
    assert parse_action("decide", 'Search(query="cut off') == (None, "unterminated call: no matching ')'")
    assert parse_action("decide", "Hmm.") == (None, "no Search or Terminate(...) call found")


# --- parse_ranking ----------------------------------------------------------------------------


def check_ranking(result, k) -> None:
    assert isinstance(result, RankingVerdict)
    if result.ok:
        assert result.error is None
        assert sorted(result.order) == list(range(k)) and result.best == result.order[0]
        assert all(type(i) is int and 0 <= i < k for i in result.bad)
        assert len(set(result.bad)) == len(result.bad)
    else:
        assert isinstance(result.error, str) and result.error.strip() and "\n" not in result.error
        assert result.best is None and result.order == []


@st.composite
def ranking_replies(draw):
    """A well-formed reply in one of many spellings, with the verdict it encodes."""
    k = draw(st.integers(1, 8))
    order = draw(st.permutations(list(range(k))))
    bad = sorted(draw(st.sets(st.integers(0, k - 1))))
    item = draw(st.sampled_from(["#{}", "{}", "Output #{}", "Model Output #{}", "# {}", "**#{}**"]))
    sep = draw(st.sampled_from([" > ", ">", "  >  ", " >"]))
    label = draw(st.sampled_from(["{}:", "{}: ", "**{}:**", "{}:\n", "- {}: "]))
    case = draw(st.sampled_from([str, str.lower, str.upper]))

    def lab(name):
        return label.format(case(name))

    lines = [lab("Explanation") + draw(st.text(max_size=60).filter(lambda s: ":" not in s))]
    if draw(st.booleans()):
        lines.append(lab("Answer") + item.format(order[0] + 1))
    lines.append(lab("Ranking") + sep.join(item.format(i + 1) for i in order) + draw(st.sampled_from(["", "."])))
    if bad or draw(st.booleans()):
        lines.append(lab("Bad") + (", ".join(item.format(i + 1) for i in bad) if bad else "none"))
    return "\n".join(lines), k, order, bad


@st.composite
def mutated_replies(draw):
    reply, k, _, _ = draw(ranking_replies())
    op = draw(st.sampled_from(["truncate", "drop_item", "dup_item", "out_of_range", "flip_answer", "noise"]))
    if op == "truncate":
        reply = reply[: draw(st.integers(0, len(reply)))]
    elif op == "drop_item":
        reply = reply.replace("1", "", 1)
    elif op == "dup_item":
        reply = reply.replace(str(k), "1")
    elif op == "out_of_range":
        reply = reply + f"\nRanking: #{k + 1}"
    elif op == "flip_answer":
        reply = reply + f"\nAnswer: #{draw(st.integers(-2, k + 2))}"
    else:
        i = draw(st.integers(0, len(reply)))
        reply = reply[:i] + draw(st.text(max_size=20)) + reply[i:]
    return reply, draw(st.one_of(st.just(k), st.integers(-3, 12)))


any_k = st.one_of(st.integers(-5, 20), st.none(), st.booleans(), st.floats(), st.text(max_size=3))


@fuzz(1_500)
@given(case=ranking_replies())
def test_parse_ranking_reads_well_formed_replies_exactly(case):
    CASES["parse_ranking"] += 1
    reply, k, order, bad = case
    v = parse_ranking(reply, k)
    assert v.ok, (v.error, reply)
    assert (v.order, v.best, v.bad) == (order, order[0], bad)


@fuzz(1_500)
@given(case=mutated_replies())
def test_parse_ranking_never_raises_on_damaged_replies(case):
    CASES["parse_ranking"] += 1
    reply, k = case
    check_ranking(parse_ranking(reply, k), k)


@fuzz(1_000)
@given(reply=any_output, k=any_k)
def test_parse_ranking_never_raises_on_anything(reply, k):
    CASES["parse_ranking"] += 1
    v = parse_ranking(reply, k)
    if v.ok:
        check_ranking(v, k)
    else:
        assert isinstance(v.error, str) and v.error.strip()


def test_parse_ranking_huge_and_hostile_replies():
    for reply in ["Ranking: " + "#1 > " * 100_000, "Ranking:" + "\n" * 100_000 + "#1 > #2",
                  "Answer: #" + "9" * 100_000, ("Explanation: " + "x" * 200_000 + "\nRanking: #2 > #1"),
                  b"Ranking: #2 > #1\xff\xfe", "Ranking: #1 > #2".encode("utf-16"),
                  "Ranking: #1 > #\ud800", "Ranking: " + ">" * 100_000]:
        for k in (2, 1, 0, 10_000):
            v = parse_ranking(reply, k)
            if v.ok:
                check_ranking(v, k)
            else:
                assert v.error


# --- parse_verdict ----------------------------------------------------------------------------


@st.composite
def verdict_replies(draw):
    value = draw(st.booleans())
    word = draw(st.sampled_from([str, str.lower, str.upper]))(str(value))
    form = draw(st.sampled_from(["{}", "{}.", "**{}**", " {}\n", "Answer: {}", "Verdict: {}", "{}. Because",
                                 "Reasoning first.\nAnswer: {}", "`{}`", "IMPLIES = {}"]))
    # Trailing prose drawn from letters that cannot spell true, false, not, or, and.
    tail = draw(st.text(alphabet="abcdxyz ,.;\n", max_size=40).map(lambda t: " " + t if t else t))
    return form.format(word) + tail, value


@fuzz(1_000)
@given(case=verdict_replies())
def test_parse_verdict_reads_clear_replies(case):
    CASES["parse_verdict"] += 1
    reply, value = case
    assert parse_verdict(reply) is value


@fuzz(1_000)
@given(reply=any_output)
def test_parse_verdict_never_raises(reply):
    CASES["parse_verdict"] += 1
    assert parse_verdict(reply) in (True, False, None)


def test_parse_verdict_is_none_when_unclear():
    for reply in ["", None, 3, "It depends", "True or False, hard to say: it is not true", "not false",
                  "I would say true, but also false", b"\xff" * 10]:
        assert parse_verdict(reply) is None, reply


# --- the count ----------------------------------------------------------------------------------


def test_at_least_ten_thousand_cases_ran(request):
    """Runs last in this file; meaningful only when the whole file ran."""
    selected = {item.name for item in request.session.items}
    expected = {"test_parse_action_never_raises", "test_parse_action_reads_every_rendered_action_back",
                "test_parse_ranking_reads_well_formed_replies_exactly",
                "test_parse_ranking_never_raises_on_damaged_replies",
                "test_parse_ranking_never_raises_on_anything", "test_parse_verdict_reads_clear_replies",
                "test_parse_verdict_never_raises"}
    if not expected <= selected:
        pytest.skip("only meaningful when every property test of this file runs")
    total = sum(CASES.values())
    print(f"fuzz cases: {dict(CASES)} total {total}")
    assert total >= MIN_CASES, dict(CASES)
    assert set(CASES) == {"parse_action", "parse_ranking", "parse_verdict"}
