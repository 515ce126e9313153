"""The copy rules of a round (allmende.node.roles.copies): author, zero update, same tensors."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from allmende.node.jobdata import update_metadata
from allmende.node.roles.copies import Candidate, screen

A, B, C, D = (f"0x{'0' * 39}{i}" for i in "abcd")
GLOBAL = "0" * 64


def own(trainer: str, payload: str, position: tuple[int, int] | None) -> Candidate:
    return Candidate(trainer, update_metadata(7, 2, trainer), payload, position)


def judge(candidates: list[Candidate]) -> dict[str, str]:
    result = screen(
        candidates,
        expected=lambda trainer: update_metadata(7, 2, trainer),
        global_payload=GLOBAL,
    )
    assert result.unordered == []
    return result.excluded


def test_own_distinct_updates_all_stay() -> None:
    assert judge([own(A, "1" * 64, (5, 0)), own(B, "2" * 64, (5, 1))]) == {}


def test_an_update_naming_another_author_is_a_copy() -> None:
    copied = Candidate(B, update_metadata(7, 2, A), "1" * 64, (6, 0))  # A's bytes, B's commit
    excluded = judge([own(A, "1" * 64, (5, 0)), copied])
    assert set(excluded) == {B} and f"trainer {A.lower()}" in excluded[B]


def test_an_update_for_another_job_or_round_or_with_no_author_is_left_out() -> None:
    for metadata in (update_metadata(8, 2, B), update_metadata(7, 1, B), {}):
        excluded = judge([own(A, "1" * 64, (5, 0)), Candidate(B, metadata, "2" * 64, (5, 1))])
        assert set(excluded) == {B}, metadata
    assert "no author" in judge([Candidate(B, {}, "2" * 64, (5, 1))])[B]


def test_author_addresses_compare_without_case() -> None:
    mixed = Candidate(A.upper().replace("0X", "0x"), update_metadata(7, 2, A), "1" * 64, (5, 0))
    assert judge([mixed]) == {}


def test_the_global_model_unchanged_is_a_zero_update() -> None:
    excluded = judge([own(A, GLOBAL, (5, 0)), own(B, "2" * 64, (5, 1))])
    assert set(excluded) == {A} and "zero update" in excluded[A]


def test_of_the_same_tensors_only_the_first_commit_in_chain_order_stays() -> None:
    same = "3" * 64
    excluded = judge([own(A, same, (9, 0)), own(B, same, (8, 4)), own(C, same, (8, 2))])
    assert set(excluded) == {A, B}  # C's commit is first: block 8, log 2
    assert all(f"those of {C}'s update" in why for why in excluded.values())


def test_a_copy_excluded_as_anothers_does_not_push_the_original_out() -> None:
    # B committed A's very bytes before A did (impossible for an honest A, shown anyway): B's
    # blob names A, so B is out as a copy and A, alone with its tensors, stays
    copied = Candidate(B, update_metadata(7, 2, A), "1" * 64, (4, 0))
    assert set(judge([own(A, "1" * 64, (5, 0)), copied])) == {B}


def test_unknown_chain_order_is_asked_for_only_when_it_matters() -> None:
    same = "4" * 64
    result = screen(
        [own(A, same, (5, 0)), own(B, same, None), own(C, "5" * 64, None)],
        expected=lambda trainer: update_metadata(7, 2, trainer),
        global_payload=GLOBAL,
    )
    assert result.unordered == [B]  # C has no twin: its position does not matter
    assert result.excluded == {}  # nothing decided about the twins until B's log is read


@settings(max_examples=60, deadline=None)
@given(
    payloads=st.lists(st.sampled_from(["1" * 64, "2" * 64, GLOBAL]), min_size=4, max_size=4),
    authors=st.lists(st.sampled_from([A, B, C, D]), min_size=4, max_size=4),
    blocks=st.permutations(range(4)),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_arrival_order_gives_the_same_exclusions(
    payloads: list[str], authors: list[str], blocks: list[int], seed: int
) -> None:
    candidates = [
        Candidate(t, update_metadata(7, 2, author), payload, (10 + block, block % 2))
        for t, author, payload, block in zip((A, B, C, D), authors, payloads, blocks, strict=True)
    ]
    first = judge(candidates)
    shuffled = candidates[:]
    random.Random(seed).shuffle(shuffled)
    assert judge(shuffled) == first
    kept = [c for c in candidates if c.trainer not in first]
    assert len({c.payload for c in kept}) == len(kept)  # no two kept updates share tensors
    assert all(c.payload != GLOBAL and c.metadata == update_metadata(7, 2, c.trainer) for c in kept)
