"""Graph passes: relax rewrites (one function per op kind of :mod:`xdfx.op_kinds`) and the candidate
builders of harden's forms (:mod:`xdfx.forms`)."""
