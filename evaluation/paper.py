"""Reference figures from the NoteLLM paper (Zhang et al., WWW 2024) that the quality report quotes."""

from __future__ import annotations

# Table 2, Recall@100 on Xiaohongshu data.
PAPER_TABLE2 = {"SentenceBERT": 70.72, "PromptEOL+CSE": 83.28, "RepLLaMA": 83.63, "NoteLLM": 84.02}
# Which of our systems plays which paper row (overridable per system with "paper_row").
PAPER_COUNTERPART = {"minilm_ft": "SentenceBERT", "notellm_no_csft": "PromptEOL+CSE", "notellm": "NoteLLM"}
