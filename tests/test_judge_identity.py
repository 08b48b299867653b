"""A judge's identity: what changes verdicts is in it (and shows in its key), credentials and speed are not."""

from __future__ import annotations

from stepeval.judging import identity


def section(**changes) -> dict:
    """A manifest ``judge`` section as stages/judge.describe writes it."""
    base = {
        "name": "openai_compatible",
        "rubrics": {
            "relevance": {"name": "relevance.v1", "sha256": "a" * 64},
            "chat_score": {"name": "chat_score.v1", "sha256": "b" * 64},
        },
        "endpoints": {"text": {"model": "Qwen/Qwen2.5-7B-Instruct", "base_url": "http://127.0.0.1:8080/v1"}},
        "reads": "asr",
        "audio_user": "both",
        "input_format": 2,
        "settings": {
            "temperature": 0.0,
            "seed": 0,
            "samples": 1,
            "aggregation": {},
            "structured_output": False,
            "max_tokens": 400,
        },
    }
    for key, value in changes.items():
        base[key] = value
    return base


def test_the_slug_is_the_judge_model_readably():
    assert identity.slug(identity.of(section())) == "qwen2.5-7b-instruct"
    both = section(endpoints={"audio": {"model": "gpt-4o-audio-preview", "base_url": None}, "text": {"model": "gpt-4o"}})
    assert identity.slug(identity.of(both)) == "gpt-4o_gpt-4o-audio-preview"  # the text judge first
    assert identity.slug(identity.of({"name": "none"})) == "none"
    assert identity.of({"name": "none"}) is None


def test_credentials_and_speed_are_not_identity():
    plain = identity.of(section())
    credentialed = section(
        endpoints={"text": {"model": "Qwen/Qwen2.5-7B-Instruct", "base_url": "http://u:pw@127.0.0.1:8080/v1/?api_key=sk-1"}}
    )
    faster = section(settings={**section()["settings"], "concurrency": 16, "timeout_s": 5})
    assert identity.of(credentialed) == plain
    assert identity.of(faster) == plain
    assert "pw" not in str(identity.of(credentialed)) and "sk-1" not in str(identity.of(credentialed))


def test_what_changes_verdicts_changes_the_key_and_is_named():
    plain = identity.of(section())
    seeded = identity.of(section(settings={**section()["settings"], "seed": 7}))
    edited = identity.of(section(rubrics={**section()["rubrics"], "chat_score": {"name": "chat_score.v1", "sha256": "c" * 64}}))
    listening = identity.of(section(reads="text"))
    keys = {identity.key(i) for i in (plain, seeded, edited, listening)}
    assert len(keys) == 4 and all(k.startswith("qwen2.5-7b-instruct-") for k in keys)
    assert identity.differences(plain, seeded) == ["settings.seed 0 -> 7"]
    assert identity.differences(plain, edited) == [f"rubric chat_score sha256 {'b' * 12} -> {'c' * 12}"]
    assert identity.differences(plain, listening) == ["reads asr -> text"]
