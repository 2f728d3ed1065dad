"""Error-tolerant matching of query words against transcripts (pure functions, synthetic lexicons)."""

import pytest

from soundscope import textnorm, wordmatch
from soundscope.wordmatch import Lexicon, coordination, terms


def words(text: str) -> list[str]:
    return text.split()


LEX = Lexicon(
    words(
        "please enter the number to be removed from black list you are now logged in log color calls "
        "call passwords password touchtone keypad re record your message the caller is eight conference"
    )
)


def variants(word: str) -> dict[tuple[str, ...], str]:
    (t,) = terms(word, LEX)
    return {v.tokens: v.how for v in t.variants}


def test_exact_word_and_number_forms():
    assert variants("conference") == {("conference",): "exact"}
    assert variants("8") == {("8",): "exact", ("eight",): "exact"}


def test_split_compound_into_two_transcript_words():
    assert variants("blacklist")[("black", "list")] == "split"
    assert variants("rerecord")[("re", "record")] == "split"


def test_stem_variants_share_the_stem():
    assert variants("passwords")[("password",)] == "stem"
    assert variants("password")[("passwords",)] == "stem"
    assert ("log",) in variants("logged")


def test_sound_alike_variants():
    assert variants("caller")[("color",)] == "sounds"  # same Metaphone key KLR
    assert variants("locked")[("logged",)] == "sounds"  # LKT / LJT, spelled alike
    # short words and unrelated spellings are not proposed
    assert variants("now") == {("now",): "exact"}
    assert ("calls",) not in variants("colonel")


def test_only_lexicon_words_are_proposed():
    for word in ("blacklist", "caller", "passwords", "logged"):
        for tokens in variants(word):
            assert all(t in LEX for t in tokens) or tokens == (word,)


@pytest.mark.parametrize(
    ("query", "transcript", "score"),
    [
        ("removed blacklist", "please enter the number to be removed from the black list", 1.0 + wordmatch.SPLIT),
        ("now logged", "you are now logged in", 2.0),
        ("now locked", "you are now logged in", 1.0 + wordmatch.SOUNDS),
        ("caller passwords", "the color is eight", wordmatch.SOUNDS),
        ("touch tone keypad", "your touchtone keypad", 2 * wordmatch.JOINED + 1.0),
        ("conference eight", "conference 8 eight", 2.0),
        ("nothing here", "you are now logged in", 0.0),
    ],
)
def test_coordination_scores(query, transcript, score):
    m = coordination(terms(query, LEX), textnorm.index_text(transcript).split())
    assert m.score == pytest.approx(score)


def test_exact_beats_fuzzy_beats_missing():
    q = terms("caller message", LEX)
    exact = coordination(q, words("the caller left a message")).score
    fuzzy = coordination(q, words("the color left a message")).score
    missing = coordination(q, words("someone left a message")).score
    assert exact > fuzzy > missing > 0


def test_span_is_the_tightest_window():
    q = terms("enter number", LEX)
    near = coordination(q, words("please enter the number"))
    far = coordination(q, words("enter your name and then the number"))
    assert near.span == 3 and far.span == 7
    assert near.found == {"enter": ("enter",), "number": ("number",)}


def test_fts_expression_quotes_every_variant():
    expr = wordmatch.fts_expression(terms('blacklist "x', LEX))
    assert '"black list"' in expr and '"blacklist"' in expr and '"x"' not in expr  # 1-letter words drop
    assert wordmatch.fts_expression([]) == ""
