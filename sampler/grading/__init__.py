"""Answer grading, which treats model output as hostile input: answer extraction, exact numbers,
a bounded LaTeX parser, equivalence checks, symbolic checks run only in killable worker processes
(`pool`), the `Grader` front door and `negrl grade`.

Imports: the standard library, sympy (inside workers) and latex2sympy2_extended; no HTTP, no torch.
"""
