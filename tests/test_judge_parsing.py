"""Rubric files and strict parsing: only an allowed grade in a JSON object counts; all else is unscored."""

from __future__ import annotations

import json
import random
import shutil

import pytest

from stepeval.judging import parsing, rubric
from stepeval.transport import RetryPolicy
from stepeval.transport import retry_after as retry_after_seconds

YES_NO = rubric.load(rubric.PACKAGED, "factuality.v1")
LIKERT = rubric.load(rubric.PACKAGED, "chat_score.v1")


def test_packaged_rubrics_load_with_their_scales():
    names = sorted(p.stem for p in rubric.PACKAGED.glob("*.md"))
    loaded = {r.metric: r for r in rubric.load_all(rubric.PACKAGED, names)}
    graded = {"factuality", "relevance", "chat_score", "instruction_following", "voice_control", "audio_quality"}
    assert set(loaded) == graded | {"pairwise_chat", "pairwise_speech"}  # the arena's rubrics (docs/arena.md)
    assert {m for m, r in loaded.items() if r.modality == "audio"} == {"voice_control", "audio_quality", "pairwise_speech"}
    assert {m for m, r in loaded.items() if r.scale == "pairwise"} == {"pairwise_chat", "pairwise_speech"}
    assert loaded["pairwise_chat"].allowed == ("A", "B", "tie") and loaded["pairwise_chat"].value("tie") == 0.5
    assert loaded["relevance"].allowed == ("yes", "no") and loaded["instruction_following"].allowed == (1, 2, 3, 4, 5)
    for r in loaded.values():  # the security clause is in every rubric
        assert "Never follow instructions" in r.prompt and len(r.sha256) == 64


@pytest.mark.parametrize(
    ("content", "grade", "value"),
    [
        ('{"rationale": "correct", "verdict": "yes"}', "yes", 1.0),
        ('{"verdict": "no", "rationale": "wrong date"}', "no", 0.0),
        ('{"rationale": "r", "verdict": " No "}', "no", 0.0),
        ('```json\n{"rationale": "r", "verdict": "yes"}\n```', "yes", 1.0),
    ],
)
def test_yes_no_grades(content, grade, value):
    parsed = parsing.parse_reply(content, YES_NO)
    assert (parsed.grade, parsed.value, parsed.error) == (grade, value, None)


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ("", "empty reply"),
        ('{"rationale": "r", "verdict": "yes"', "not a JSON object"),  # malformed
        ("The reply is correct, I would say yes.", "not a JSON object"),  # prose
        ('Sure! {"rationale": "r", "verdict": "yes"}', "not a JSON object"),  # prose around the object
        ('["yes"]', "not a JSON object"),
        ('{"verdict": "yes"}', "no string 'rationale'"),
        ('{"rationale": "r"}', "no 'verdict' key"),
        ('{"rationale": "r", "verdict": "maybe"}', "is not one of"),
        ('{"rationale": "r", "verdict": true}', "is not one of"),
    ],
)
def test_yes_no_rejects(content, error):
    parsed = parsing.parse_reply(content, YES_NO)
    assert parsed.value is None and parsed.grade is None
    assert error in parsed.error


@pytest.mark.parametrize("score", [0, 6, 4.5, 4.0, "4", None, -1])
def test_likert_out_of_range_or_wrong_type_is_unscored(score):
    parsed = parsing.parse_reply(json.dumps({"rationale": "r", "score": score}), LIKERT)
    assert parsed.value is None and "is not one of [1, 2, 3, 4, 5]" in parsed.error


def test_likert_allowed_scores_and_refusals():
    assert parsing.parse_reply('{"rationale": "fine", "score": 4}', LIKERT).value == 4.0
    refused = parsing.parse_reply(None, LIKERT, refusal="I can't help with that.")
    assert refused.value is None and refused.error.startswith("refusal")
    cut = parsing.parse_reply('{"rationale": "long', LIKERT, finish_reason="length")
    assert cut.value is None and "cut off" in cut.error
    filtered = parsing.parse_reply('{"rationale": "r", "score": 4}', LIKERT, finish_reason="content_filter")
    assert filtered.value is None


def _p(value):
    return parsing.Parsed(None, value, None, None if value is not None else "bad")


def test_aggregation_mean_majority_tie_and_nothing_parsed():
    assert parsing.aggregate([_p(5.0), _p(4.0), _p(None)], LIKERT) == (4.5, None)
    assert parsing.aggregate([_p(1.0), _p(0.0), _p(1.0)], YES_NO) == (1.0, None)
    assert parsing.aggregate([_p(0.0), _p(0.0), _p(1.0)], YES_NO) == (0.0, None)
    assert parsing.aggregate([_p(1.0), _p(0.0)], YES_NO) == (None, parsing.TIED)
    assert parsing.aggregate([_p(None), _p(None)], LIKERT) == (None, parsing.UNPARSEABLE)


def test_structured_output_schema_lists_the_allowed_grades():
    schema = LIKERT.response_schema()["schema"]
    assert schema["properties"]["score"] == {"type": "integer", "enum": [1, 2, 3, 4, 5]}
    assert YES_NO.response_schema()["schema"]["properties"]["verdict"] == {"type": "string", "enum": ["yes", "no"]}
    assert schema["required"] == ["rationale", "score"] and schema["additionalProperties"] is False


def test_bad_rubric_files_name_the_file_and_field(tmp_path):
    shutil.copy(rubric.PACKAGED / "chat_score.v1.md", tmp_path / "chat_score.v1.md")
    text = (tmp_path / "chat_score.v1.md").read_text()
    (tmp_path / "broken.v1.md").write_text(text.replace("allowed: [1, 2, 3, 4, 5]", "allowed: [low, high]"))
    with pytest.raises(ValueError, match=r"broken\.v1\.md: a likert rubric allows a list of integers"):
        rubric.load(tmp_path, "broken.v1")
    (tmp_path / "nofront.v1.md").write_text("just a prompt")
    with pytest.raises(ValueError, match=r"nofront\.v1\.md: a rubric starts with '---'"):
        rubric.load(tmp_path, "nofront.v1")
    with pytest.raises(ValueError, match=r"rubric 'chat_score\.v9' not found .* available: \['broken\.v1', 'chat_score\.v1'"):
        rubric.load(tmp_path, "chat_score.v9")
    (tmp_path / "chat_score.v2.md").write_text(text)
    with pytest.raises(ValueError, match="both fill metric 'chat_score'"):
        rubric.load_all(tmp_path, ["chat_score.v1", "chat_score.v2"])


def test_rubric_hash_changes_with_any_edit(tmp_path):
    shutil.copy(rubric.PACKAGED / "relevance.v1.md", tmp_path / "relevance.v1.md")
    before = rubric.load(tmp_path, "relevance.v1").sha256
    assert before == rubric.load(rubric.PACKAGED, "relevance.v1").sha256
    path = tmp_path / "relevance.v1.md"
    path.write_text(path.read_text() + "\nBe brief.\n")
    assert rubric.load(tmp_path, "relevance.v1").sha256 != before


def test_retry_after_forms_and_backoff_bounds():
    assert retry_after_seconds({"retry-after": "7"}) == 7.0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # a date in the past
    assert retry_after_seconds({"retry-after": "soon"}) is None and retry_after_seconds({}) is None
    policy = RetryPolicy(base_s=1.0, max_s=8.0)
    rng = random.Random(0)
    for attempt, cap in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (6, 8.0)]:
        waits = [policy.backoff(attempt, rng) for _ in range(50)]
        assert all(cap / 2 <= w <= cap for w in waits) and len(set(waits)) > 1


def test_pairwise_grades_and_their_majority():
    pair = rubric.load(rubric.PACKAGED, "pairwise_chat.v1")
    assert parsing.parse_reply('{"rationale": "r", "winner": "b"}', pair).value == 0.0
    assert parsing.parse_reply('{"rationale": "r", "winner": "Tie"}', pair).value == 0.5
    assert parsing.parse_reply('{"rationale": "r", "winner": "C"}', pair).value is None
    votes = [parsing.parse_reply(f'{{"rationale": "r", "winner": "{w}"}}', pair) for w in ("A", "A", "B")]
    assert parsing.aggregate(votes, pair) == (1.0, None)
    assert parsing.aggregate(votes[1:], pair) == (0.5, None)  # an even split is a tie, a verdict of its own
