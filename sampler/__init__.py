"""NegRL sampler: the method's rollout side.

    (this folder)  the method's pure core: steps, per-step credit and first pits, preference pairs,
                   records, question datasets, the star-graph task and a simulated policy
    grading/       answer extraction and grading of untrusted model output in killable workers
    serving/       the OpenAI-compatible client and the local vLLM / transformers servers
    stages/        the stage commands: prepare, sample, credit, pairs, evaluate
"""
