"""The rule judge: each rule on real rendered prompts, and the ranking order it produces."""

from __future__ import annotations

import pytest

from agent.prompts import (
    render_action,
    render_answer,
    render_check,
    render_decide,
    render_summarize,
    with_examples,
)
from store.records import (
    Answer,
    CheckAnswer,
    ReviseAnswer,
    Sample,
    Search,
    SearchResult,
    SelectLink,
    Terminate,
)
from reward.rules import entities, judge_step, parse_prompt_state, unsupported
from reward.verdicts import format_ranking_reply, parse_ranking

Q = "Which river flows through the city where the painter of Blue Harbour was born?"
S1 = Search(query="painter of Blue Harbour", thoughts="First find the painter.")
L1 = SelectLink(summary="According to [link_id=2], Blue Harbour was painted by Mira Olsen, born in Tarsk.",
                thoughts="Link 2 names the painter and her birthplace.", selected_link_ids=(2,))
S2 = Search(query="river Tarsk", thoughts="Now the river of Tarsk.")
L2 = SelectLink(summary="According to [link_id=1], the Vell river flows through Tarsk.",
                thoughts="Link 1 answers the second hop.", selected_link_ids=(1,))
RESULTS = [
    SearchResult(1, "Harbour paintings", "https://example.org/1", "A list of harbour scenes."),
    SearchResult(2, "Mira Olsen", "https://example.org/2",
                 "Mira Olsen, born in Tarsk, painted Blue Harbour in 1921."),
]
GOOD_SUMMARY = render_action(L1)


def reasons(verdict, i: int) -> str:
    """The explanation's note on candidate i (0-based)."""
    notes = verdict.explanation.split(f"#{i + 1} ", 1)[1]
    return notes.split(". #", 1)[0]


def one_bad(kind, prompt, text, good=None):
    """Judge [good, text]: the good one must pass and `text` must be bad; return why."""
    v = judge_step(kind, prompt, [good, text])
    assert v.ok
    assert 0 not in v.bad, reasons(v, 0)
    assert v.bad == [1] and v.order == [0, 1]
    return reasons(v, 1)


# --- reading the prompt back ---------------------------------------------------------------


def test_state_is_read_from_the_real_task_not_the_few_shot_examples():
    prompt = with_examples("summarize", render_summarize("Who founded Acme?", [], "Acme founder", [
        SearchResult(7, "Acme", "u", 'Acme was founded by "Ada" Quill.')]))
    st = parse_prompt_state(prompt)
    assert st.question == "Who founded Acme?"
    assert st.query == "Acme founder"
    assert st.past == []
    assert set(st.results) == {7} and 'Ada" Quill' in st.results[7]


def test_state_reads_past_actions_remaining_and_answer():
    st = parse_prompt_state(render_decide(Q, [S1, L1, S2], 7))
    assert st.past == [S1, L1, S2] and st.remaining == 7 and st.question == Q
    assert parse_prompt_state(render_check("grounding", Q, [S1, L1], "Tarsk [link_id=2]")).answer == \
        "Tarsk [link_id=2]"
    assert parse_prompt_state("no state here").question == ""


def test_entities_are_capitalised_words_and_numbers_without_function_words():
    assert entities("According to [link_id=2], The Vell river rises in 1921 near Tarsk's gate.") == \
        ["vell", "1921", "tarsk"]
    assert unsupported("Mira Olsen was born in Tarsk", "mira olsen lived in tarsk") == []
    assert unsupported("Mira Olsen was born in Paris", "Mira Olsen", "Tarsk") == ["paris"]


# --- every kind ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind,prompt,good,bad_text", [
    ("decide", render_decide(Q, [], 10), render_action(S1), 'Search(query="painter of Blue Harbour")'),
    ("summarize", render_summarize(Q, [S1], S1.query, RESULTS), GOOD_SUMMARY,
     'SelectLink(summary="According to [link_id=2], Mira Olsen.", thoughts="  ", selected_link_ids=[2])'),
    ("answer", render_answer(Q, [S1, L1, S2, L2]), render_action(Answer("Both hops.", "The Vell [link_id=1]")),
     'Answer(thoughts="", answer="The Vell [link_id=1]")'),
    ("relevance", render_check("relevance", Q, [], "The Vell [link_id=1]"),
     render_action(ReviseAnswer("asks for a river", "The Vell")), 'Revise_Answer(thoughts="", revised_answer="Vell")'),
])
def test_empty_element_is_bad(kind, prompt, good, bad_text):
    assert "empty thoughts" in one_bad(kind, prompt, bad_text, good)


@pytest.mark.parametrize("kind", ["decide", "summarize", "answer", "relevance", "grounding"])
def test_unparseable_output_is_bad(kind):
    v = judge_step(kind, render_decide(Q, [], 3), ["Search(query='unterminated", "", "I think the answer is"])
    assert v.ok and v.bad == [0, 1, 2]
    assert "does not parse" in reasons(v, 0)


def test_unknown_kind_or_no_samples_is_not_ok():
    assert not judge_step("plan", "x", ["a"]).ok
    assert judge_step("decide", "x", []).error == "no samples to rank"


# --- decide ----------------------------------------------------------------------------------


def test_decide_repeated_query_is_bad_ignoring_case_and_punctuation():
    prompt = render_decide(Q, [S1, L1], 9)
    why = one_bad("decide", prompt, render_action(Search("Painter of  Blue Harbour?", "again")), render_action(S2))
    assert "repeats an earlier query" in why


def test_decide_query_entity_from_nowhere_is_bad():
    prompt = render_decide(Q, [S1, L1], 9)
    why = one_bad("decide", prompt, render_action(Search("river Paris", "guess")), render_action(S2))
    assert "paris" in why and "neither the question nor a summary" in why


def test_decide_query_entity_from_a_summary_is_good():
    v = judge_step("decide", render_decide(Q, [S1, L1], 9), [render_action(Search("Mira Olsen birthplace", "t"))])
    assert v.bad == []


def test_decide_terminate_before_any_summary_is_bad():
    retry = render_action(Search("Blue Harbour painting artist", "The first search found nothing."))
    why = one_bad("decide", render_decide(Q, [S1], 9), render_action(Terminate("enough")), retry)
    assert "terminates before any summary" in why


def test_decide_search_with_no_searches_left_is_bad():
    prompt = render_decide(Q, [S1, L1], 0)
    why = one_bad("decide", prompt, render_action(S2), render_action(Terminate("out of searches")))
    assert "none remain" in why


def test_decide_prefers_terminate_once_the_last_hop_brought_a_candidate():
    prompt = render_decide(Q, [S1, L1, S2, L2], 8)
    v = judge_step("decide", prompt, [render_action(Search("Vell river length", "more")),
                                      render_action(Terminate("Both hops are answered."))])
    assert v.bad == [] and v.order == [1, 0]
    assert "candidate answer" in v.explanation


def test_decide_after_the_first_hop_leaves_the_choice_to_perplexity():
    prompt = render_decide(Q, [S1, L1], 9)
    texts = [render_action(Terminate("done")), render_action(S2)]
    assert judge_step("decide", prompt, list(zip(texts, [3.0, 1.5]))).order == [1, 0]
    assert judge_step("decide", prompt, list(zip(texts, [1.5, 3.0]))).order == [0, 1]


# --- summarize -------------------------------------------------------------------------------

SUMMARIZE = render_summarize(Q, [S1], S1.query, RESULTS)


def test_summary_selecting_no_link_is_bad():
    bad = render_action(SelectLink(L1.summary, "none useful", ()))
    assert "selects no link" in one_bad("summarize", SUMMARIZE, bad, GOOD_SUMMARY)


def test_summary_selecting_or_citing_a_missing_link_is_bad():
    assert "selects link 5" in one_bad(
        "summarize", SUMMARIZE, render_action(SelectLink(L1.summary, "t", (2, 5))), GOOD_SUMMARY)
    cites = SelectLink(L1.summary.replace("link_id=2", "link_id=9"), "t", (2,))
    assert "cites link 9" in one_bad("summarize", SUMMARIZE, render_action(cites), GOOD_SUMMARY)


def test_summary_without_citation_is_bad():
    bad = SelectLink("Blue Harbour was painted by Mira Olsen.", "t", (2,))
    assert "cites no" in one_bad("summarize", SUMMARIZE, render_action(bad), GOOD_SUMMARY)


def test_summary_naming_what_the_selected_snippets_do_not_say_is_bad():
    wrong_year = SelectLink("According to [link_id=2], Mira Olsen painted Blue Harbour in 1922.", "t", (2,))
    assert "1922" in one_bad("summarize", SUMMARIZE, render_action(wrong_year), GOOD_SUMMARY)
    # supported by link 2, but only link 1 was selected: not grounded in the selection
    wrong_link = SelectLink("According to [link_id=1], Mira Olsen painted Blue Harbour.", "t", (1,))
    assert "mira" in one_bad("summarize", SUMMARIZE, render_action(wrong_link), GOOD_SUMMARY)


def test_summary_selecting_results_that_never_mention_the_query_is_bad():
    prompt = render_summarize(Q, [S2], "river Tarsk", RESULTS)
    off = SelectLink("According to [link_id=1], a list of harbour scenes.", "t", (1,))
    good = SelectLink("According to [link_id=2], Mira Olsen was born in Tarsk.", "t", (2,))
    assert "never mention" in one_bad("summarize", prompt, render_action(off), render_action(good))



# A pocket-world lookup: each result is one short article, titled with its subject (which
# the article names again, in more than one sentence).
CITY = [
    SearchResult(1, "Besvudal", "https://pocket.example/besvudal",
                 "Besvudal is a city in Varnland. Some 40 thousand people live in Besvudal."),
    SearchResult(2, "Varnland", "https://pocket.example/varnland",
                 "Varnland is a country whose capital is Tolmar."),
]
CITY_RIGHT = SelectLink("According to [link_id=1], Besvudal is a city in Varnland.",
                        "Link 1 is the article on Besvudal.", (1,))


@pytest.mark.parametrize("question", [
    "In which country is Besvudal?",  # the question, title and article name it too:
    # none of them says it twice in one sentence, and their counts are not added up
    "In which country was the founder of Tozik Systems born?",  # a bridge entity
])
def test_summary_miscopying_a_name_into_the_wrong_slot_is_bad(question):
    prompt = render_summarize(question, [Search("Besvudal country", "t")], "Besvudal country", CITY)
    miscopy = SelectLink("According to [link_id=1], Besvudal is a city in Besvudal.",
                         "Link 1 is the article on Besvudal.", (1,))
    why = one_bad("summarize", prompt, render_action(miscopy), render_action(CITY_RIGHT))
    assert "besvudal (2 times), more often than its cited link 1" in why


def test_summary_naming_what_only_another_selected_link_says_is_bad():
    prompt = render_summarize("What is the capital of the country Besvudal lies in?",
                              [Search("Besvudal country", "t")], "Besvudal country", CITY)
    union_only = SelectLink("According to [link_id=1], Besvudal is a city in Varnland, "
                            "whose capital is Tolmar.", "t", (1, 2))
    each_cited = SelectLink("According to [link_id=1], Besvudal is a city in Varnland. "
                            "According to [link_id=2], the capital of Varnland is Tolmar.", "t", (1, 2))
    why = one_bad("summarize", prompt, render_action(union_only), render_action(each_cited))
    assert "tolmar, not in its cited link 1" in why


def test_summary_sentence_without_citation_reads_the_nearest_cited_link():
    # The reader's own form: one sentence per fact, the citation only in the first (or
    # trailing the sentence).
    prompt = render_summarize("Where is Besvudal, and how big is it?", [], "Besvudal", CITY)
    follow_up = SelectLink("According to [link_id=1], Besvudal is a city in Varnland. "
                           "Some 40 thousand people live in Besvudal.", "t", (1,))
    trailing = SelectLink("Besvudal is a city in Varnland. [link_id=1]", "t", (1,))
    v = judge_step("summarize", prompt, [render_action(follow_up), render_action(trailing)])
    assert v.ok and v.bad == [], v.explanation
    # ... but a follow-up sentence does not escape the check
    wrong = SelectLink("According to [link_id=1], Besvudal is a city in Varnland. "
                       "Some 50 thousand people live in Besvudal.", "t", (1,))
    assert "50, not in its cited link 1" in one_bad("summarize", prompt, render_action(wrong),
                                                    render_action(follow_up))


# --- answer and the self-checks --------------------------------------------------------------

ANSWER = render_answer(Q, [S1, L1, S2, L2])
GOOD_ANSWER = render_action(Answer("Painter born in Tarsk; the Vell flows through it.",
                                   "The Vell river [link_id=1], through Tarsk [link_id=2]."))


def test_answer_without_citation_is_bad():
    bad = render_action(Answer("t", "The Vell river."))
    assert "cites no" in one_bad("answer", ANSWER, bad, GOOD_ANSWER)


def test_answer_citing_an_unselected_link_is_bad():
    bad = render_action(Answer("t", "The Vell river [link_id=3]."))
    assert "cites link 3" in one_bad("answer", ANSWER, bad, GOOD_ANSWER)


def test_answer_naming_something_no_summary_says_is_bad():
    bad = render_action(Answer("t", "The Rhine [link_id=1]."))
    assert "rhine" in one_bad("answer", ANSWER, bad, GOOD_ANSWER)


def test_grounding_passing_an_unsupported_answer_is_bad():
    prompt = render_check("grounding", Q, [S1, L1, S2, L2], "The Rhine [link_id=1].")
    fix = render_action(ReviseAnswer("No summary names the Rhine.", "The Vell river [link_id=1]."))
    why = one_bad("grounding", prompt, render_action(CheckAnswer(True)), fix)
    assert "passes an answer naming rhine" in why


def test_grounding_revising_to_an_unsupported_answer_is_bad():
    prompt = render_check("grounding", Q, [S1, L1, S2, L2], "The Vell river [link_id=1].")
    bad = render_action(ReviseAnswer("hmm", "The Danube [link_id=1]."))
    assert "danube" in one_bad("grounding", prompt, bad, render_action(CheckAnswer(True)))


# The kind of answer the question asks for (rules-v3), on the pocket world's own phrasings.
YQ = "In what year was Zerstu Braro born?"
YS = Search(query="Zerstu Braro", thoughts="Next I need the birth year of Zerstu Braro.")
YL = SelectLink(summary="According to [link_id=1], Zerstu Braro was born in Mifedal in 1975.",
                thoughts="Link 1 is the article on Zerstu Braro.", selected_link_ids=(1,))
YEAR_ANSWER = render_answer(YQ, [YS, YL])


def test_answer_to_a_year_question_with_no_number_is_bad_though_grounded():
    good = render_action(Answer("Following the summaries: 1975.", "1975 [link_id=1]"))
    bad = render_action(Answer("Following the summaries: 1975.", "Mifedal [link_id=1]"))
    assert "asks when" in one_bad("answer", YEAR_ANSWER, bad, good)


@pytest.mark.parametrize("question", ["When was Zerstu Braro born?", "  when did the band form?",
                                      "In which year was it founded?"])
def test_when_questions_need_a_number_and_where_who_questions_more_than_a_number(question):
    from reward.rules import wrong_kind
    assert wrong_kind("Mifedal [link_id=1]", question) and not wrong_kind("in 1975 [link_id=1]", question)
    assert wrong_kind("1975 [link_id=1]", "Where was Zerstu Braro born?")
    assert not wrong_kind("Mifedal [link_id=1]", "Where was Zerstu Braro born?")
    assert not wrong_kind("1975", "Which river flows through Tarsk?")  # no claim about other kinds


def test_answer_whose_thoughts_state_a_number_no_summary_has_is_bad():
    good = render_action(Answer("Following the summaries: 1975.", "1975 [link_id=1]"))
    bad = render_action(Answer("Following the summaries: 1945.", "1975 [link_id=1]"))
    assert "thoughts state 1945" in one_bad("answer", YEAR_ANSWER, bad, good)


def test_relevance_passing_or_revising_to_the_wrong_kind_of_answer_is_bad():
    prompt = render_check("relevance", YQ, [YS, YL], "Mifedal [link_id=1]")
    fix = render_action(ReviseAnswer("The question asks for a year.", "1975 [link_id=1]"))
    assert "passes an answer of the wrong kind" in one_bad(
        "relevance", prompt, render_action(CheckAnswer(True)), fix)
    prompt = render_check("relevance", YQ, [YS, YL], "1975 [link_id=1]")
    bad = render_action(ReviseAnswer("hmm", "Mifedal [link_id=1]"))
    assert "revises to an answer of the wrong kind" in one_bad(
        "relevance", prompt, bad, render_action(CheckAnswer(True)))


# --- ranking -----------------------------------------------------------------------------------


def test_ranking_good_first_then_perplexity_then_original_order():
    prompt = render_decide(Q, [S1, L1], 9)
    samples = [Sample(render_action(Search("river Paris", "x"))),  # bad
               Sample(render_action(S2), n_tokens=10, logprob=-10.0),  # good, ppl e^1
               Sample(render_action(Search("Tarsk river", "y")), n_tokens=10, logprob=-5.0),  # good, lower
               Sample(render_action(Search("rivers of Tarsk", "z")))]  # good, no ppl: after known ones
    v = judge_step("decide", prompt, samples)
    assert v.order == [2, 1, 3, 0] and v.best == 2 and v.bad == [0]


def test_all_bad_still_ranks_and_reports_every_one():
    v = judge_step("answer", ANSWER, ["nope", render_action(Answer("t", "Rhine"))])
    assert v.ok and v.bad == [0, 1] and v.order == [0, 1]


def test_context_overrides_what_the_prompt_says():
    v = judge_step("summarize", "custom prompt the rules cannot read", [GOOD_SUMMARY],
                   context={"question": Q, "query": S1.query, "results": RESULTS})
    assert v.bad == []
    with pytest.raises(ValueError):
        judge_step("decide", "x", ["y"], context={"nonsense": 1})


def test_verdict_round_trips_through_the_reply_format():
    v = judge_step("decide", render_decide(Q, [S1, L1], 9),
                   [render_action(S2), render_action(S1), "garbage"])
    back = parse_ranking(format_ranking_reply(v), 3)
    assert (back.ok, back.best, back.order, back.bad, back.explanation) == \
        (True, v.best, v.order, v.bad, v.explanation)
