"""Imported once by the grader's forkserver: load and warm the checkers so forked workers start hot."""
import logging

from cft.answers.check import check

logging.getLogger("math_verify").setLevel(logging.ERROR)
for _pred, _ref in (("\\frac{1}{2}", "0.5"), ("x^2+1", "1+x^2"), ("(1,2)", "(1,2)"), ("\\sqrt{2}", "1.4142")):
    check(_pred, _ref)
try:
    from cft.answers.mathverify import check_math_verify

    check_math_verify("\\frac{1}{2}", "0.5")
except ImportError:  # math-verify is optional for the "cft" checker
    pass
