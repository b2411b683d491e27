"""The math core: tensors in, tensors out; no TransformerLens, no storage, no evaluation, no CLI.

Imports nothing of the package outside ``core`` (the architecture test holds it). One job per
module:

- ``stats``: streaming float64 means and covariances (``GaussianStats``), mergeable exactly;
- ``distributed``: the same merge across processes (``all_reduce_stats``);
- ``linalg``: batched symmetric square roots, the one numerical recipe;
- ``pca``: PCA subspaces of statistics (``PCABasis``), batched over layers;
- ``shrinkage``: covariance estimators (ridge, OAS, Ledoit-Wolf);
- ``gate``: the posterior gate, how harmful an activation looks under the two Gaussians;
- ``ot_fit``: the options a transport map is fitted with and the shared fitting steps;
- ``ot_map``: the Gaussian OT map (``GaussianOTMap``) and ``MeanShift``: fit and inverse;
- ``ot_apply``: how a fitted map edits activations (the fused hook path, the gate);
- ``baselines``: ``DirectionAblation``, ``ActAdd``, ``PerNeuronOT``;
- ``diagnostics``: a fitted map's per-layer health report (``OTDiagnostics``);
- ``monitor``: the activation monitor's scores, likelihood and disagreement (``GaussianMonitor``);
- ``probe``: the monitor's supervised reference (``LinearProbe``);
- ``degeneracy``: fits that would change nothing (identical or zero-variance classes);
- ``tensor_dataclass``: what the frozen tensor dataclasses share (batch shape, ``to``, checks);
- ``validate``: the input checks of the fitting code;
- ``devices``: a device name checked before anything loads;
- ``errors``: ``UserInputError``, the one exception for bad input.
"""
