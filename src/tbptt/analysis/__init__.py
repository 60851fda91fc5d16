"""Analysis layer: exact vs estimated gradients, Jacobian norms, spectra, linear closed forms."""

__all__: list[str] = []
