"""Analysis layer: the gradient laboratory.

- :mod:`~tbptt.analysis.linear`: the lecture's linear RNN and its gradients in
  closed form (matrix powers, no autograd);
- :mod:`~tbptt.analysis.jacobian`: ||dh_T/dh_t|| against T - t for any model, exactly,
  and its fitted decay / growth rate;
- :mod:`~tbptt.analysis.spectrum`: eigenvalues and singular values of the recurrent blocks;
- :mod:`~tbptt.analysis.estimator`: each strategy's gradient against the exact one
  (cosine, bias, variance, MSE);
- :mod:`~tbptt.analysis.windows`: the windows they run on, cut from a training
  split (text, a time series, a task) as training lays it out;
- :mod:`~tbptt.analysis.runs`: a checkpoint's model and its run's data, rebuilt;
- :mod:`~tbptt.analysis.lab`: those measurements end to end, written as JSON, PNG
  and Markdown (``tbptt analyze``).

Gradients come from :func:`tbptt.train.sequence_gradient` (the training
engine); this layer only measures them.
"""

from tbptt.analysis.estimator import (
    compare_estimates,
    estimator_quality,
    exact_gradient,
    flat_gradient,
)
from tbptt.analysis.jacobian import (
    NORMS,
    JacobianProfile,
    fit_rate,
    jacobian_norms,
    state_jacobians,
    state_vector,
    vector_state,
)
from tbptt.analysis.lab import (
    bias_lab,
    jacobian_lab,
    linear_lab,
    spectrum_lab,
)
from tbptt.analysis.linear import (
    LinearRNN,
    linear_rnn_forward,
    linear_rnn_from_model,
    linear_rnn_gradients,
    linear_rnn_loss,
    linear_rnn_output_grads,
    matrix_with_spectral_radius,
    spectral_radius,
)
from tbptt.analysis.runs import load_model
from tbptt.analysis.spectrum import recurrent_blocks, reference_radius, spectrum
from tbptt.analysis.windows import (
    Windows,
    data_windows,
    measuring_copy,
    stream_windows,
    warm_state,
)

__all__ = [
    "compare_estimates",
    "estimator_quality",
    "exact_gradient",
    "flat_gradient",
    "NORMS",
    "JacobianProfile",
    "fit_rate",
    "state_vector",
    "jacobian_norms",
    "state_jacobians",
    "vector_state",
    "bias_lab",
    "jacobian_lab",
    "linear_lab",
    "load_model",
    "spectrum_lab",
    "LinearRNN",
    "linear_rnn_forward",
    "linear_rnn_from_model",
    "linear_rnn_gradients",
    "linear_rnn_loss",
    "linear_rnn_output_grads",
    "matrix_with_spectral_radius",
    "spectral_radius",
    "recurrent_blocks",
    "reference_radius",
    "spectrum",
    "Windows",
    "data_windows",
    "stream_windows",
    "measuring_copy",
    "warm_state",
]
