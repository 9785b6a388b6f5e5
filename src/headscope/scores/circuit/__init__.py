"""Edge-level circuits: which component writes into which input of which other, and how much it matters.

- `graph`: the sources, targets and edges (definitions in its docstring);
- `norms`: norms on the head outputs (Gemma 2/3): real and frozen-norm deltas, frozen scales;
- `exact`: each edge patched on its own (path patching), batched, and the plain reference loop;
- `attribution`: EAP and EAP-IG, approximations with one backward pass (per IG step);
- `edges`: the table of a task's edges by one method, with exact values beside the approximation;
- `faithfulness`: a chosen circuit run with every other edge patched, completeness and minimality;
- `mib`: MIB's faithfulness curve of a ranking, CPR and CMD, and its export;
- `stability`: a circuit's mean Jaccard overlap with those of bootstrap resamples of its prompts.
"""
