"""The K IPE maps and their EF conversion, batched over K (docs/paper_code.md).

All K maps live in stacked parameters with a leading K axis, so one forward runs one batched
matrix exponential and a few batched matmuls whatever K is (the paper code loops over K modules).
Raw matrices are stored [in, out] and right-multiplied, as in the paper code; `lam_w` is the
[out, in] weight of the paper's `nn.Linear` lambda_.

Faithful details kept: symmetrised exponentials M = expm(S1) expm(S2); the magnitude mask of the
log-normaliser in training mode only; the double sigmoid in the EF "KL"; the batch-summed T term.
Dropped as dead: the discarded "posterior" (uses `nu`) and the never-used `post_carrier`; their
parameters still exist with `keep_dead=True` so that counts and state dicts match the paper code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["IPEBank", "IPEOutput"]


@dataclass
class IPEOutput:
    """Result of the K IPE maps on one batch.

    Attributes:
        z_hat: transformed samples (K, B, d).
        ef: EF objective per map and sample (K, B) (the three norms), or None without EF.
        kl: EF "KL" per map, sample and unit (K, B, d), or None without EF.
    """

    z_hat: Tensor
    ef: Tensor | None
    kl: Tensor | None


def _xavier_(t: Tensor) -> Tensor:
    """Xavier-uniform (gain 1) of each [a, b] slice of t (K, a, b), as nn.init does for [a, b]."""
    bound = math.sqrt(6.0 / (t.shape[-1] + t.shape[-2]))
    with torch.no_grad():
        return t.uniform_(-bound, bound)


class IPEBank(nn.Module):
    """K invertible, partially equivariant maps z -> z @ M_k with their EF conversion.

    Args:
        num: K >= 1.
        dim: latent size d.
        symmetric: M_k = expm((W1+W1^T)/2) expm((W2+W2^T)/2); False: expm(W1) expm(W2).
        ef_conversion: compute the EF objective and EF KL (False: maps only).
        keep_dead: allocate the paper code's never-used `nu` and `post_carrier` matrices (and,
            without EF conversion, the then unused EF matrices).
    """

    def __init__(
        self, num: int, dim: int, *, symmetric: bool, ef_conversion: bool, keep_dead: bool
    ) -> None:
        super().__init__()
        self.num, self.dim = num, dim
        self.symmetric, self.ef_conversion = symmetric, ef_conversion
        k, d, w = num, dim, 5 * dim

        def mat(a: int, b: int) -> nn.Parameter:
            return nn.Parameter(_xavier_(torch.empty(k, a, b)))

        self.w1, self.w2 = mat(d, d), mat(d, d)
        if not (ef_conversion or keep_dead):  # the EF parameters would never be used
            return
        self.gz_p, self.gz_q = mat(d, w), mat(w, d)  # z_parameter_generator
        self.ge_p, self.ge_q = mat(d, w), mat(w, d)  # eps_parameter_generator
        self.t_p, self.t_q = mat(d, w), mat(w, d)  # suff_stat (T)
        self.ln_u, self.ln_v = mat(d, w), mat(w, d)  # log_norm (A)
        self.lam_w = mat(d, d)  # lambda_ weight, nn.Linear layout [out, in]
        bound = 1.0 / math.sqrt(d)  # nn.Linear's default bias init
        self.lam_b = nn.Parameter(torch.empty(k, d).uniform_(-bound, bound))
        if keep_dead:
            self.nu_p, self.nu_q = mat(d, w), mat(w, d)
            self.pc_p, self.pc_q = mat(2 * d, 10 * d), mat(10 * d, 2 * d)

    # -- the maps ------------------------------------------------------------------------------
    def matrices(self) -> Tensor:
        """M (K, d, d): invertible, det > 0 (product of two matrix exponentials)."""
        w = torch.cat([self.w1, self.w2])  # (2K, d, d)
        if self.symmetric:
            w = 0.5 * (w + w.transpose(-1, -2))
        e = torch.linalg.matrix_exp(w)  # one batched call for all 2K exponentials
        return torch.bmm(e[: self.num], e[self.num :])

    def transform(self, z: Tensor) -> Tensor:
        """z (B, d) -> z @ M_k for every k: (K, B, d). No EF work (used by `decode`)."""
        return torch.matmul(z, self.matrices())

    def log_norm_matrix(self) -> Tensor:
        """W_A (K, d, d) = U' V', with the magnitude mask |.| >= mean|.| in training mode only."""
        u, v = self.ln_u, self.ln_v
        if self.training:
            u = u * (u.abs() >= u.abs().mean(dim=(1, 2), keepdim=True))
            v = v * (v.abs() >= v.abs().mean(dim=(1, 2), keepdim=True))
        return torch.bmm(u, v)

    def forward(self, z: Tensor, eps: Tensor) -> IPEOutput:
        """Apply the K maps to z and eps (both (B, d)) and, with EF conversion, the EF terms."""
        k, b = self.num, z.shape[0]
        zhat_ehat = torch.matmul(torch.cat([z, eps]), self.matrices())  # (K, 2B, d)
        z_hat, e_hat = zhat_ehat[:, :b], zhat_ehat[:, b:]
        if not self.ef_conversion:
            return IPEOutput(z_hat, None, None)

        # Effective d x d matrices of the bias-free two-matrix maps, one bmm for all of them.
        p = torch.cat([self.gz_p, self.ge_p, self.t_p])
        q = torch.cat([self.gz_q, self.ge_q, self.t_q])
        gzet = torch.bmm(p, q)  # (3K, d, d)
        g = gzet[: 2 * k].view(2, k, self.dim, self.dim)  # branch axis: 0 = z (G_z), 1 = eps (G_e)
        t = gzet[2 * k :]  # (K, d, d)
        wa = self.log_norm_matrix()  # (K, d, d), shared by both branches

        x = torch.stack([z_hat, e_hat])  # (2, K, B, d)
        theta = x @ g  # (2, K, B, d): theta_z, theta_eps
        s = theta.sum(-1, keepdim=True)  # (2, K, B, 1): per-sample sum of theta
        a = torch.sigmoid(torch.sigmoid(theta @ wa))  # double sigmoid: sigma(A(theta))
        ga = a * (1 - a)
        ga_w = ga @ wa
        q_kl = a - s * ga_w  # kl = q_eps - q_z
        kl = q_kl[1] - q_kl[0]  # (K, B, d)
        n = torch.sigmoid((ga_w @ g) @ wa)  # "nabla" maps N_z(a_z), N_eps(a_eps)
        r = (
            -n
            + torch.sigmoid(ga @ wa) @ g
            + s * torch.sigmoid((n * (1 - a)) @ wa)
            - s * torch.sigmoid((n * a) @ wa)
        )  # z branch: t1z before lambda_; eps branch: -t1e before lambda_
        r = torch.stack([r[0], -r[1]])
        t1 = r @ self.lam_w.transpose(1, 2) + self.lam_b.unsqueeze(1)  # lambda_ (Linear)
        t2z = (z_hat.sum(1, keepdim=True) @ t) @ g[0] + b * (theta[0] @ t) - n[0]
        t2e = 2 * s[0] * theta[1]
        ef = (
            torch.linalg.vector_norm(t1[0] + t2z, dim=-1)
            + torch.linalg.vector_norm(t1[1] + t2e, dim=-1)
            + torch.linalg.vector_norm(kl, dim=-1)
        )  # (K, B)
        return IPEOutput(z_hat, ef, kl)
