"""Pairs from a description: a teacher model writes the questions, the prompts and both answers.

``config`` (GenerateConfig: what to generate), ``teacher`` (the model itself in process, or any
OpenAI-compatible chat endpoint), ``asks`` (what the teacher is asked, and how its replies are read),
``filters`` (which pairs are dropped, and why), ``journal`` (a generation that stops loses nothing),
``pairs`` (the run: description in, pairs files and their provenance out).
"""
