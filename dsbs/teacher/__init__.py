"""Stage 1, the teacher: few-shot chain-of-thought prompting of any OpenAI-compatible endpoint.

`python -m dsbs.teacher generate ...` writes `<output_dir>/<split>.jsonl` canonical records
(`dsbs.data.record`) with the teacher's rationale and label, `<split>.filtered.jsonl` with the
dropped ones and their reasons, and `provenance.json`. Modules: `client` (HTTP, retries, rate
limit), `prompts` (spec + rendering), `cache` (durable responses), `vote`, `filters`,
`provenance`, `inputs`, `generate` (the run), `fake_server` (tests and dry runs).
"""
