"""Serving a policy over the OpenAI completions API: the async HTTP client the stages use, and
the local servers `negrl run` starts (the vLLM CPU build, or transformers behind the same API).

Imports: httpx, subprocess, transformers; this is an I/O shell, and the pure core never imports it.
"""
