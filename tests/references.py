"""Naive float64 numpy references shared by several test files."""

import numpy as np


def forward_backward(log_start, log_trans, log_b):
    """Log-space forward-backward of one sequence: ``(log p, γ (T, K), Σ ξ (K, K))``."""
    n_steps, n_states = log_b.shape
    alpha = np.zeros_like(log_b)
    beta = np.zeros_like(log_b)
    alpha[0] = log_start + log_b[0]
    for t in range(1, n_steps):
        alpha[t] = np.logaddexp.reduce(alpha[t - 1][:, None] + log_trans, axis=0) + log_b[t]
    for t in range(n_steps - 2, -1, -1):
        beta[t] = np.logaddexp.reduce(log_trans + log_b[t + 1] + beta[t + 1], axis=1)
    log_p = np.logaddexp.reduce(alpha[-1])
    gamma = np.exp(alpha + beta - log_p)
    xi = np.zeros((n_states, n_states))
    for t in range(n_steps - 1):
        xi += np.exp(alpha[t][:, None] + log_trans + log_b[t + 1] + beta[t + 1] - log_p)
    return log_p, gamma, xi


def mfa_m_step(x, resp, means, loadings, noise, reg, isotropic=False):
    """The M-step of factor analysers weighted by ``resp`` ``(n, K)``: Ghahramani and
    Hinton's equations with dense D x D covariances and z̃ = [z, 1] (joint update of W
    and μ), ``reg`` added to the noise variances. Returns ``(means, loadings, noise)``."""
    n, d = x.shape
    q = loadings.shape[-1]
    new_means, new_loadings, new_noise = [], [], []
    for k in range(resp.shape[1]):
        w, mu, psi = loadings[k], means[k], noise[k]
        beta = w.T @ np.linalg.inv(w @ w.T + np.diag(psi))  # (q, D)
        ez = (x - mu) @ beta.T  # (n, q)
        ezz = np.eye(q) - beta @ w  # Cov[z | x]
        r = resp[:, k]
        ez1 = np.concatenate([ez, np.ones((n, 1))], 1)
        second = (r[:, None] * ez1).T @ ez1
        second[:q, :q] += r.sum() * ezz
        cross = (r[:, None] * x).T @ ez1  # Σ r x E[z̃]ᵀ
        tilde = cross @ np.linalg.inv(second)
        scatter = np.sum(r[:, None] * x * x, 0) - np.sum(tilde * cross, 1)
        psi_new = scatter / r.sum()
        if isotropic:
            psi_new = np.full(d, psi_new.mean())
        new_loadings.append(tilde[:, :q])
        new_means.append(tilde[:, q])
        new_noise.append(psi_new + reg)
    return np.stack(new_means), np.stack(new_loadings), np.stack(new_noise)
