"""NegRL sampler: answers and grading, steps, the OpenAI-compatible client, sampling, per-step
credit, preference pairs and evaluation."""
