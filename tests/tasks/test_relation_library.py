"""The atlas's relation library: its size and groups, user TOML files, and spelling by a tokenizer."""

from __future__ import annotations

import pytest
from benchmarks.gpt2_shape import gpt2_tokenizer

from headscope.tasks.dataset import TaskError, Tokenization
from headscope.tasks.relation_library import GROUPS, Relation, choose_relations, library, read_relation_file
from headscope.tasks.relation_tokens import first_tokens, spell_relation

SMALL_SETS = {  # ordered sets with fewer than 31 one-word members: every pair they have
    "number_word": 20, "ordinal": 19, "month": 12, "day": 7, "letter": 25, "capital_letter": 25,
}  # fmt: skip


def test_library_has_24_relations_in_four_groups_with_30_pairs_where_the_set_allows():
    relations = library()
    assert len(relations) >= 24
    assert {r.group for r in relations.values()} == set(GROUPS)
    for name, relation in relations.items():
        family = name.rsplit("_", 1)[0]
        wanted = SMALL_SETS.get(family, 30)
        assert len(relation.pairs) >= wanted, name
        assert len({s for s, _ in relation.pairs}) == len(relation.pairs), name  # one target per source
        assert relation.source, name


def test_successor_and_predecessor_pairs_come_from_the_ordered_sets():
    relations = library()
    assert dict(relations["month_next"].pairs)["December"] == "January"  # cyclic
    assert dict(relations["day_prev"].pairs)["Monday"] == "Sunday"
    assert dict(relations["number_next"].pairs)["9"] == "10"
    assert "z" not in dict(relations["letter_next"].pairs)  # the alphabet does not wrap
    assert dict(relations["gender"].pairs)["king"] == "queen"
    assert dict(relations["country_capital"].pairs)["France"] == "Paris"


def test_a_user_file_extends_the_library(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(
        'group = "chemistry"\n[mappings.metal_colour]\ngold = "yellow"\ncopper = "red"\n'
        '[families]\nsizes = ["small", "medium", "large"]\n'
    )
    chosen = choose_relations(("month_next", str(path)))
    assert [r.name for r in chosen] == ["month_next", "sizes_next", "sizes_prev", "metal_colour"]
    assert chosen[-1].group == "chemistry" and chosen[-1].pairs == (("gold", "yellow"), ("copper", "red"))


def test_a_task_file_lends_its_mappings(tmp_path):
    task = tmp_path / "capitals.toml"
    task.write_text(
        'templates = ["The capital of {C} is"]\nanswer = { slot = "C", relation = "capital" }\n'
        '[slots]\nC = ["France"]\n[mappings.capital]\nFrance = "Paris"\nJapan = "Tokyo"\n'
    )
    (relation,) = read_relation_file(task)
    assert (relation.name, relation.group, len(relation.pairs)) == ("capital", "user", 2)


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (("bogus",), "unknown relation 'bogus'"),
        (("missing.toml",), "relation file missing.toml does not exist"),
    ],
)
def test_unknown_names_are_one_line_errors(names, message):
    with pytest.raises(TaskError, match=message) as error:
        choose_relations(names)
    assert "\n" not in str(error.value)


def test_a_file_without_relations_is_refused(tmp_path):
    path = tmp_path / "empty.toml"
    path.write_text('group = "x"\n')
    with pytest.raises(TaskError, match="no relation in it"):
        read_relation_file(path)
    path.write_text("[mappings.m]\na = 1\n")
    with pytest.raises(TaskError, match='mapping m must be a non-empty table of word = "word"'):
        read_relation_file(path)


@pytest.fixture(scope="module")
def gpt2() -> Tokenization:
    return Tokenization(gpt2_tokenizer())


def test_targets_are_read_by_their_first_token(gpt2):
    tokenizer = gpt2.tokenizer
    first = tokenizer.encode(" Brasilia")[0]  # several tokens: the first, as MAPS reads it
    assert first_tokens(gpt2, "Brasilia") == (first,)
    assert first_tokens(gpt2, "Paris") == tuple(
        sorted({tokenizer.encode(" Paris")[0], tokenizer.encode("Paris")[0]})
    )


def test_sources_that_are_not_one_token_are_dropped_and_counted(gpt2):
    spelled = spell_relation(library()["element_symbol"], gpt2)
    kept = set(spelled.sources)
    dropped = {s for s, _ in library()["element_symbol"].pairs} - kept
    assert spelled.dropped == len(dropped) > 0
    assert all(len(gpt2.tokenizer.encode(" " + s)) > 1 for s in dropped)
    assert all(len(gpt2.tokenizer.encode(" " + s)) == 1 for s in kept)
    assert spelled.chance == 1 / len(spelled.candidates)


def test_targets_sharing_their_first_tokens_are_one_candidate(gpt2):
    pairs = (("state", "New York"), ("capital", "New Delhi"), ("river", "Nile"))
    spelled = spell_relation(Relation("places", "user", pairs), gpt2)
    assert len(spelled.candidates) == 2 and spelled.answer == (0, 0, 1)  # " New" twice: one candidate
    assert spelled.chance == 0.5
