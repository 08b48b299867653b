"""LLM judging: versioned rubrics, the text judge and the listening judge, and strict reply parsing
(an unparseable verdict is unscored, never 0).

Public surface: ``rubric`` (``Rubric``, ``load_all``), ``llm_judge`` (``JudgeClient``, ``Verdict``,
``text_messages``), ``audio_judge`` (``audio_messages``), ``parsing`` (``parse_reply``).
"""
