"""Datasets on tokenizers of every convention, read back through Hugging Face's own encoding."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from headscope.errors import HeadscopeError
from headscope.models.loading import load_model
from headscope.scores.keywords import keyword_dataset
from headscope.tasks import words
from headscope.tasks.builtin import builtin_tasks
from headscope.tasks.dataset import Tokenization, build_dataset
from tests.tokenizer_kinds import TOKENIZER_KINDS, gpt2_bpe, llama2_legacy

BUILDERS = TOKENIZER_KINDS | {"llama2_legacy": llama2_legacy}
KINDS = sorted(BUILDERS)
TASKS = sorted(builtin_tasks())
ADDS_OWN_BOS = {"sentencepiece_style", "llama2_legacy", "llama3_style"}
SPACED_DIGITS = {"sentencepiece_style", "llama2_legacy", "llama3_style", "no_bos"}  # "in 1" -> in, ' ', 1


@pytest.fixture(scope="module")
def hf_tokenizers(tmp_path_factory, vocabulary) -> dict:
    """Each kind saved to a folder and loaded back by AutoTokenizer, as a model folder gives it."""
    loaded = {}
    for kind, build in BUILDERS.items():
        folder = tmp_path_factory.mktemp(kind)
        build(vocabulary).save_pretrained(folder)
        loaded[kind] = AutoTokenizer.from_pretrained(folder)
    return loaded


def _expected_row(hf, text: str) -> list[int]:
    """The prompt as HF encodes it: its own BOS where it adds one, else its BOS or EOS in front."""
    ids = hf(text)["input_ids"]
    if ids and ids[0] == hf.bos_token_id:
        return ids
    bos = hf.bos_token_id if hf.bos_token_id is not None else hf.eos_token_id
    return [bos, *ids]


def _continued(hf, text: str, word: str) -> list[int]:
    """HF's tokens of the prompt followed by `word` (after a space unless the prompt ends in one)."""
    return hf(text + ("" if text.endswith(" ") else " ") + word, add_special_tokens=False)["input_ids"]


def _bare(hf, token: int) -> str:
    return hf.convert_ids_to_tokens(token).lstrip("Ġ▁")


@pytest.mark.parametrize("task_name", TASKS)
@pytest.mark.parametrize("kind", KINDS)
def test_every_task_reads_back_on_every_convention(kind, task_name, hf_tokenizers):
    hf = hf_tokenizers[kind]
    dataset = build_dataset(builtin_tasks()[task_name], Tokenization(hf), 30, seed=1)
    assert dataset.n == 30 and dataset.dropped == 0
    bos = hf.bos_token_id if hf.bos_token_id is not None else hf.eos_token_id
    for i, prompt in enumerate(dataset.prompts):
        length = int(dataset.lengths[i])
        row = dataset.tokens[i, :length].tolist()
        assert row == _expected_row(hf, prompt.text)
        assert row.count(bos) == 1 and row[0] == bos  # exactly one BOS, first
        if kind in ADDS_OWN_BOS:
            assert row == hf(prompt.text)["input_ids"]
        assert int(dataset.end[i]) == length - 1
        for role, word in prompt.fillers().items():
            assert _bare(hf, row[int(dataset.roles[role].index[i])]) == word
        # the answer (contrast) token is the very next token HF gives the completed text
        assert _continued(hf, prompt.text, prompt.answer) == [*row[1:], int(dataset.answers[i])]
        assert _continued(hf, prompt.text, prompt.contrast) == [*row[1:], int(dataset.contrasts[i])]


@pytest.mark.parametrize("kind", sorted(SPACED_DIGITS))
def test_digit_members_follow_their_own_space_token(kind, hf_tokenizers):
    hf = hf_tokenizers[kind]
    dataset = build_dataset(builtin_tasks()["seq-digits"], Tokenization(hf), 20, seed=3)
    space = {"Ġ", "▁"}
    for i, prompt in enumerate(dataset.prompts):
        row = dataset.tokens[i].tolist()
        for role in ("x1", "x2", "x3", "x4"):
            position = int(dataset.roles[role].index[i])
            assert hf.convert_ids_to_tokens(row[position - 1]) in space
            assert hf.convert_ids_to_tokens(row[position]) == prompt.fillers()[role]
        assert prompt.text.endswith(" ")  # the model's next token at `end` is the digit itself
        assert hf.convert_ids_to_tokens(row[int(dataset.end[i])]) in space
    assert dataset.unusable_fillers == tuple(str(d) for d in range(10, 21))  # two digits each


@pytest.mark.parametrize("kind", KINDS)
def test_keyword_positions_are_the_members_tokens(kind, hf_tokenizers):
    hf = hf_tokenizers[kind]
    keywords = ["1", "2", "3", "Mary", "May", "7"]
    dataset = keyword_dataset(keywords, Tokenization(hf), n_ctx=64)
    row = dataset.tokens[0, : int(dataset.lengths[0])].tolist()
    assert row == _expected_row(hf, " " + " ".join(keywords))
    assert [_bare(hf, row[p]) for p in dataset.keywords.position.tolist()] == keywords
    assert dataset.keywords.words == tuple(keywords)


@pytest.mark.parametrize("kind", KINDS)
def test_keyword_prompts_fit_the_context_in_tokens(kind, hf_tokenizers):
    hf = hf_tokenizers[kind]
    keywords = [str(d) for d in range(1, 10)]
    dataset = keyword_dataset(keywords, Tokenization(hf), n_ctx=6)
    assert int(dataset.lengths.max()) <= 6
    assert list(dataset.keywords.words) == keywords  # every keyword, in order, across prompts
    found = dataset.keywords
    for b, p, word in zip(found.batch.tolist(), found.position.tolist(), found.words, strict=True):
        assert _bare(hf, int(dataset.tokens[b, p])) == word


@pytest.mark.parametrize(
    ("kind", "word", "spelled"),
    [
        ("gpt2_bpe", "6", {"Ġ6", "6"}),
        ("gpt2_bpe", "Mary", {"ĠMary", "Mary"}),
        ("sentencepiece_style", "6", {"6"}),
        ("sentencepiece_style", "Mary", {"▁Mary"}),
        ("llama2_legacy", "6", {"6"}),
        ("llama2_legacy", "Mary", {"▁Mary"}),
        ("llama3_style", "6", {"6"}),
        ("llama3_style", "Mary", {"ĠMary", "Mary"}),
        ("no_bos", "6", {"6"}),
        ("no_bos", "12", set()),
    ],
)
def test_target_tokens_on_every_convention(kind, word, spelled, hf_tokenizers):
    hf = hf_tokenizers[kind]
    assert set(Tokenization(hf).target_tokens(word)) == {hf.convert_tokens_to_ids(t) for t in spelled}


def test_unknown_characters_are_not_single_tokens(hf_tokenizers):
    tokens = Tokenization(hf_tokenizers["sentencepiece_style"])
    assert tokens.word_ok("May") and not tokens.word_ok("Zoë")  # ë is <unk> there


@pytest.fixture(scope="module")
def sparse_gpt2(vocabulary):
    """GPT-2 style with some task words missing and some names only with their leading space."""
    missing = set(words.NAMES[::3]) | {"basketball", "necklace", "hospital", "seven", "July"}
    no_bare = set(words.NAMES[1::3]) | set(words.OBJECTS)
    kept = [w for w in vocabulary if w not in missing]
    hf = gpt2_bpe(kept, bare=[w for w in kept if w not in no_bare])
    return hf, missing, no_bare


def _all_fit(pair, tokens: Tokenization) -> bool:
    return all(
        tokens.word_ok(w) and (i > 0 or tokens.opening_ok(w))
        for prompt in (pair.clean, pair.corrupted)
        for i, w in enumerate(prompt.fillers().values())
    )


@pytest.mark.parametrize("task_name", TASKS)
def test_fillers_are_filtered_before_generation(task_name, sparse_gpt2):
    hf, missing, no_bare = sparse_gpt2
    tokens = Tokenization(hf)
    assert not any(tokens.word_ok(w) for w in missing)
    assert sum(not tokens.opening_ok(w) for w in no_bare - missing) >= 20  # a few stay whole (BPE pieces)
    task = builtin_tasks()[task_name]
    dataset = build_dataset(task, tokens, 60, seed=4)
    assert dataset.n == 60 and dataset.dropped == 0
    assert set(dataset.unusable_fillers) <= missing
    for prompt in dataset.prompts:
        first = prompt.pieces[0]
        if first.role is not None:  # a filler opening the prompt is one token without a space
            assert tokens.opening_ok(first.text)
    generated_blind = task.generate(60, seed=4)  # the old way: generate, then drop what fails
    if task_name in ("recency", "induction", "ioi", "seq-numwords", "seq-months"):
        assert sum(_all_fit(p, tokens) for p in generated_blind) < 60
    again = build_dataset(task, tokens, 60, seed=4)
    assert [p.text for p in again.prompts] == [p.text for p in dataset.prompts]
    assert [p.text for p in build_dataset(task, tokens, 60, seed=5).prompts] != [
        p.text for p in dataset.prompts
    ]


def test_unusable_fillers_are_named_in_pool_order(sparse_gpt2):
    hf, missing, _ = sparse_gpt2
    dataset = build_dataset(builtin_tasks()["ioi"], Tokenization(hf), 10, seed=0)
    pools = words.NAMES + words.PLACES + words.OBJECTS
    assert dataset.unusable_fillers == tuple(w for w in pools if w in missing)


@pytest.mark.parametrize("kind", KINDS)
def test_rows_equal_transformer_lens_to_tokens(kind, tmp_path, vocabulary):
    """The BOS convention is TransformerLens's: a dataset row is `to_tokens(prompt.text)`."""
    hf = BUILDERS[kind](vocabulary)
    config = GPT2Config(vocab_size=len(hf), n_positions=64, n_embd=16, n_layer=1, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(tmp_path)
    hf.save_pretrained(tmp_path)
    model = load_model(str(tmp_path))
    for task_name in ("seq-digits", "induction"):
        dataset = build_dataset(builtin_tasks()[task_name], model.tokens, 4, seed=0)
        for i, prompt in enumerate(dataset.prompts):
            row = dataset.tokens[i, : int(dataset.lengths[i])]
            assert model.to_tokens(prompt.text)[0].cpu().tolist() == row.tolist()


@pytest.mark.parametrize(("task_name", "what"), [("recency", "recency names"), ("seq-months", "names")])
def test_no_word_that_opens_a_prompt_is_one_clear_error(task_name, what, vocabulary):
    tokens = Tokenization(gpt2_bpe(vocabulary, bare=[]))  # no word is one token without its space
    with pytest.raises(HeadscopeError, match=f"only 0 of the {what}.*first word"):
        build_dataset(builtin_tasks()[task_name], tokens, 10, seed=0)
