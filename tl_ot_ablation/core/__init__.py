"""The math core: tensors in, tensors out; no TransformerLens, no evaluation, no CLI.

Streaming float64 statistics (``stats``), PCA subspaces (``pca``), covariance shrinkage
(``shrinkage``), the harmfulness gate (``gate``), the Gaussian transport map (``ot_map``), the
baselines (``baselines``), the activation monitor's scores and probe (``monitor``), the
multi-process merge (``distributed``). Storage lives one floor up, in ``tl_ot_ablation.io``.
"""
