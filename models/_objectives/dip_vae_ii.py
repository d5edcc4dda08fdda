"""DIP-VAE-II (Kumar et al. 2018): as DIP-VAE-I on the covariance of q(z) (that of mu plus
mean_b diag(exp(logvar))); the knobs and the record's shape are DIP-VAE-I's."""

from __future__ import annotations

from models._objectives.dip_vae_i import dip_spec

SPEC = dip_spec("ii", "rec + KL + DIP-II(cov of q(z))")
